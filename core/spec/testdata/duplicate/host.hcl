host "dup" {
  capacity {
    cpu       = 4
    memory    = "4GiB"
    disk      = "4GiB"
    instances = 10
  }
}

runtime "wasm" {}

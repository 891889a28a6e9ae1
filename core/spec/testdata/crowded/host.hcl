host "crowded" {
  capacity {
    cpu       = 4
    memory    = "4GiB"
    disk      = "4GiB"
    instances = 2
  }
}

runtime "wasm" {}

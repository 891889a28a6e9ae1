host "h" {
  capacity {
    cpu       = 1
    memory    = "1GiB"
    disk      = "1GiB"
    instances = 1.5
  }
}

runtime "wasm" {}

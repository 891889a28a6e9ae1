host "h" {
  capacity {
    cpu       = 0.0001
    memory    = "1GiB"
    disk      = "1GiB"
    instances = 4
  }
}

runtime "wasm" {}

host "h" {
  capacity {
    cpu       = -2
    memory    = "1GiB"
    disk      = "1GiB"
    instances = 4
  }
}

runtime "wasm" {}

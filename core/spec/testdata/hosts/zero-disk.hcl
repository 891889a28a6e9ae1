host "h" {
  capacity {
    cpu       = 1
    memory    = "1GiB"
    disk      = 0
    instances = 4
  }
}

runtime "wasm" {}

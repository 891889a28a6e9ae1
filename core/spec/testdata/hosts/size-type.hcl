host "h" {
  capacity {
    cpu       = 1
    memory    = "1GiB"
    disk      = true
    instances = 4
  }
}

runtime "wasm" {}

host "h" {
  capacity {
    cpu       = 1
    memory    = "1GiB"
    disk      = 1.5
    instances = 4
  }
}

runtime "wasm" {}

host "h" {
  capacity {
    cpu       = 1
    memory    = "1GiB"
    disk      = "1GiB"
  }
}

runtime "wasm" {}

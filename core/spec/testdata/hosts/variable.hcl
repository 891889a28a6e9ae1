host "h" {
  capacity {
    cpu       = var.cores
    memory    = "1GiB"
    disk      = "1GiB"
    instances = 4
  }
}

runtime "wasm" {}

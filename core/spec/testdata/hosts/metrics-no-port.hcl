host "h" {
  capacity {
    cpu       = 1
    memory    = "1GiB"
    disk      = "1GiB"
    instances = 4
  }
  agent {
    metrics_address = "127.0.0.1"
  }
}

runtime "wasm" {}

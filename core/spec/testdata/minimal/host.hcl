host "mini" {
  capacity {
    cpu       = 1
    memory    = "512MiB"
    disk      = "32MiB"
    instances = 1
  }
}

runtime "wasm" {}

host "h" {
  capacity {
    cpu       = 1
    memory    = "1GiB"
    disk      = "1GiB"
    instances = 4
  }
  isolation {
    tenant_users = "maybe"
  }
}

runtime "wasm" {}

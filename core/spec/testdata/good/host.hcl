host "quickstart" {
  state_dir  = "state"
  plugin_dir = "/opt/kigumi/plugins"
  policies   = ["policies", "extra.hcl"]

  capacity {
    cpu       = 2.5
    memory    = "2GiB"
    disk      = 10737418240
    instances = 16
  }

  isolation {
    tenant_users = false
    uid_base     = 62000
    subid_base   = 2000000000
    subid_count  = 131072
  }

  tenants {
    dir = "tenants"
  }

  agent {
    metrics_address = "127.0.0.1:9464"
  }
}

runtime "wasm" {
  max_memory = "1GiB"
}

runtime "native" {}

statefs "fuse" {}

ledger "xrpl" {
  url = "wss://ledger.example"
}

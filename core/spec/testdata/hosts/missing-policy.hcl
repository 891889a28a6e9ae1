host "h" {
  policies = ["tenants", "no-such-policy.hcl"]
  capacity {
    cpu       = 1
    memory    = "1GiB"
    disk      = "1GiB"
    instances = 4
  }
}

runtime "wasm" {}

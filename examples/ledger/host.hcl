# The host of the ledger example: no spec directory, its tenants come from
# leases sold on the ledger. `make run-ledger` runs it against the fake
# ledger, a TEST DOUBLE of rippled, on 127.0.0.1:6006 (see README.md for a
# real rippled or clio server).

host "ledger-example" {
  state_dir     = "/var/lib/kigumi/ledger-example"
  artifacts_dir = "../quickstart/build" # app.wasm: what lease requests may run
  policies      = ["../../policies"]

  capacity {
    cpu       = 2
    memory    = "2GiB"
    disk      = "10GiB"
    instances = 8
  }

  isolation {
    tenant_users = true
  }
}

runtime "wasm" {
  compiler = "compiler"
}

statefs "fuse" {}

# The market. The wallet secret is made by run.sh, outside the state
# directory, mode 0600, owned by root. The registry is the account hosts
# send their heartbeats to; this one is the example's (nobody holds its
# key: it only receives).
ledger "xrpl" {
  url           = "ws://127.0.0.1:6006"
  secret_file   = "/var/lib/kigumi/ledger-example-host/host.secret"
  registry      = "r2aUew4uCusd2HihQP1UxdrJmtd1Tmn9x"
  slots         = 2
  price_drops   = 1000000 # 1 XRP a period
  lease_ledgers = 150     # about 10 minutes, as the agent counts ledgers
  heartbeat     = "1m"
  poll          = "1s"
}

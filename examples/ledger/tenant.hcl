# A tenant's request: what `kigumi lease acquire --spec tenant.hcl` asks
# the host for. The tenant's name is the lease's: kigumi lease acquire
# renames this block before it seals the request to the host's key. The
# module is named within the host's artifacts directory.

tenant "me" {
  instance "app" {
    runtime = "wasm"
    module  = "app.wasm"
    args    = ["--name", "leased", "--interval", "2s"]
    env     = { GREETING = "Hello" }

    resources {
      memory = "64MiB"
      cpu    = 0.2
    }

    state {
      size = "8MiB"
    }

    permissions = ["state.write", "clock"]
  }
}

tenant "bob" {
  instance "counter" {
    runtime = "wasm"
    module  = "../build/app.wasm"
    args    = ["--name", "bob", "--interval", "10s"]
    env     = { GREETING = "Hi" }

    resources {
      memory = "64MiB"
      cpu    = 0.1
    }

    state {
      size = "8MiB"
    }

    permissions = ["state.write", "clock"]
  }
}

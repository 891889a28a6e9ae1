tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    module  = "../build/app.wasm"
    args    = ["--name", "alice", "--interval", "5s"]
    env     = { GREETING = "Hello" }

    resources {
      memory = "64MiB"
      cpu    = 0.25
      pids   = 32
    }

    state {
      size = "16MiB"
    }

    permissions = ["state.write", "clock"]
  }
}

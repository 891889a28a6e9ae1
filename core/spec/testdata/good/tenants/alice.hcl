tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    module  = "../build/hello.wasm"
    digest  = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    args    = ["--name", "alice"]
    env     = { GREETING = "hello", "_DEBUG" = "1" }

    resources {
      memory = "32MiB"
      cpu    = 0.25
      disk   = 1048576
      pids   = 16
    }

    state {
      size = "16MiB"
    }

    permissions = ["state.write", "clock"]
  }
}

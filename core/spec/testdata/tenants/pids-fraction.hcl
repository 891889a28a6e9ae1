tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    module  = "../good/build/hello.wasm"
    resources {
      pids = 2.5
    }
  }
}

tenant "alice" {
  instance "hello world" {
    runtime = "wasm"
    module  = "../good/build/hello.wasm"
  }
}

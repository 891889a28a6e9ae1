tenant "alice" {
  instance "hello" {
    = "wasm"
    module  = "../good/build/hello.wasm"
  }
}

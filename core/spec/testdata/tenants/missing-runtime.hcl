tenant "alice" {
  instance "hello" {
    module  = "../good/build/hello.wasm"
  }
}

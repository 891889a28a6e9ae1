tenant "a/b" {
  instance "hello" {
    runtime = "wasm"
    module  = "../good/build/hello.wasm"
  }
}

tenant "Alice" {
  instance "hello" {
    runtime = "wasm"
    module  = "../good/build/hello.wasm"
  }
}

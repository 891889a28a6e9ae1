tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    module  = "../good/build/missing.wasm"
  }
}

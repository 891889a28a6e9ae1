tenant "alice" {
  instance "hello" {
    runtime = "wasm"
  }
}

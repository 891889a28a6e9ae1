tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    image   = "busy box"
  }
}

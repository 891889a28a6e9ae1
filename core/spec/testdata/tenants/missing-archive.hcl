tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    archive = "../good/build/missing.tar"
  }
}

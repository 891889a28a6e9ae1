tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    module  = "../good/build/hello.wasm"
    digest = "sha256:abc"
  }
}

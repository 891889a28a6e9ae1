tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    image   = "busybox:1.36"
    archive = "../good/build/hello.wasm"
  }
}

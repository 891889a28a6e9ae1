tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    module  = "../good/build/hello.wasm"
  }

  instance "hello" {
    runtime = "wasm"
    image   = "busybox"
  }
}

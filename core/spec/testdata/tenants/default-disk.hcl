tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    image   = "busybox"
  }
}

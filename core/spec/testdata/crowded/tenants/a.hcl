tenant "alice" {
  instance "one" {
    runtime = "wasm"
    image   = "busybox"
  }

  instance "two" {
    runtime = "wasm"
    image   = "busybox"
  }
}

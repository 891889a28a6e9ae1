tenant "bob" {
  instance "three" {
    runtime = "wasm"
    image   = "busybox"
  }

  instance "four" {
    runtime = "wasm"
    image   = "busybox"
  }
}

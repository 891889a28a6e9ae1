tenant "alice" {
  instance "one" {
    runtime = "wasm"
    image   = "busybox"

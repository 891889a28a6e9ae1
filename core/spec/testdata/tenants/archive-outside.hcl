tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    archive = "/etc/hostname"
  }
}

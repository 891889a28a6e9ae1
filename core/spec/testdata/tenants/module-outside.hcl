tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    module  = "/etc/hostname"
  }
}

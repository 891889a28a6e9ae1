tenant "alice" {
  instance "hello" {
    runtime = "containerd"
    module  = "../good/build/hello.wasm"
  }
}

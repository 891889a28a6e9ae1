tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    module  = "../good/build/hello.wasm"
    state {
      size = "11GiB"
    }
  }
}

tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    module  = "../good/build/hello.wasm"
    env = { GOOD = "1", "1BAD" = "2" }
  }
}

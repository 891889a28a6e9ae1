tenant "abcdefghijabcdefghijabcdefghij" {
  instance "hello" {
    runtime = "wasm"
    module  = "../good/build/hello.wasm"
  }
}

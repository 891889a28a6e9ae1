tenant "alice" {
  instance "hello" {
    runtime     = "wasm"
    module      = "../good/build/hello.wasm"
    permissions = ["clock"]
    permission "clock" {
      fake = "1"
    }
  }
}

tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    module  = "../good/build/hello.wasm"
    resources {
      disk = "32 megs"
    }
  }
}

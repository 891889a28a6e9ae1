tenant "alice" {
  instance "hello" {
    runtime = "wasm"
    module  = "../good/build/hello.wasm"
    resources {
      memory = "8GiB"
      cpu    = 3
    }
  }
}

tenant "alice" {
  instance "hello" {
    runtime     = "wasm"
    module      = "../good/build/hello.wasm"
    permissions = ["clock"]
    permission "net.connect" {
      host = "db.internal"
      port = "5432"
    }
    permission "random" {}
    settings {
      entrypoint = ["/bin/app"]
      port "http" {
        container = 8080
      }
    }
  }
}

# Bob runs two instances with default settings.
tenant "bob" {
  instance "web" {
    runtime = "native"
    image   = "127.0.0.1:5000/busybox:1.36"
  }

  instance "worker" {
    runtime = "wasm"
    module  = "../build/hello.wasm"
  }
}

tenant "carol" {}

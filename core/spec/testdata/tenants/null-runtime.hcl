tenant "alice" {
  instance "hello" {
    runtime = null
    image   = "busybox"
  }
}

host "h" {
  capacity {
    cpu       = 1
    memory    = "2 gigs"
    disk      = "1GiB"
    instances = 4
  }
}

runtime "wasm" {}

host "h" {
  capacity {
    cpu       = 1
    memory    = "1GiB"
    disk      = 9223372036854775808
    instances = 4
  }
}

runtime "wasm" {}

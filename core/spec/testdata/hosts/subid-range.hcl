host "h" {
  capacity {
    cpu       = 1
    memory    = "1GiB"
    disk      = "1GiB"
    instances = 4
  }
  isolation {
    subid_base  = 4294000000
    subid_count = 1000000
  }
}

runtime "wasm" {}

host "h" {
  capacity {
    cpu       = 1
    memory    = "1GiB"
    disk      = "1GiB"
    instances = 4
  }
}

runtime "wasm" {}

runtime "full" {
  max_memory = "1GiB"
  workers    = 4
  cache      = true
  dirs       = ["a", "b"]
  labels     = { zone = "eu" }
}

runtime "unknown" {
  max_memory = "1GiB"
  colour     = "blue"
}

runtime "wrong-type" {
  max_memory = "1GiB"
  workers    = "many"
}

runtime "missing" {
  cache = true
}

runtime "null-element" {
  max_memory = "1GiB"
  dirs       = ["a", null]
}

runtime "nested" {
  url = "https://r.example"
  registry {
    url = "https://r"
    mirror { url = "m1" }
    mirror {}
  }
  pool "web" { first = 8000 }
  pool "db" { first = 9000 }
}

runtime "nested-bad" {
  registry {
    mirror { url = ["x"] }
  }
  registry {}
  pool "web" { first = 1 }
  pool "web" { first = 2 }
  pool { first = 3 }
}

runtime "nested-missing" {
  url = "u"
}

host "h" {
}

runtime "wasm" {}

runtime "wasm" {}

tenant "carol" {
  instance "dropper" {
    runtime = "wasm"
    module  = "../build/drop.wasm"
    restart = "never"

    state {
      size = "1MiB"
      seed = "../seed" # fills the new state once: config.txt
    }

    permissions = ["state.read", "clock", "random"]
  }
}

// Command kigumi hosts untrusted workloads from many tenants on one Linux
// host. See `kigumi help`.
package main

import (
	"os"

	"github.com/kigumi/kigumi/plugins/runtime-wasm/wasmruntime"
)

func main() {
	// The wasm runtime re-executes this binary as its per-instance sandbox.
	if len(os.Args) > 1 && os.Args[1] == wasmruntime.SandboxCommand {
		os.Exit(wasmruntime.SandboxMain(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:]))
}

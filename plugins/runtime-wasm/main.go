// Command runtime-wasm is Kigumi's WASI runtime plugin. Run with
// wasmruntime.SandboxCommand as its first argument, it is an instance's
// sandbox instead.
package main

import (
	"os"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/runtime-wasm/wasmruntime"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == wasmruntime.SandboxCommand {
		os.Exit(wasmruntime.SandboxMain(os.Args[2:]))
	}
	sdk.Serve(sdk.ServeOpts{Runtime: wasmruntime.New()})
}

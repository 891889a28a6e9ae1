// Command runtime-containerd is Kigumi's containerd runtime plugin. Run
// with ctrruntime.LogCommand as its first argument, it is a container's
// logging process instead.
package main

import (
	"os"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/runtime-containerd/ctrruntime"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == ctrruntime.LogCommand {
		os.Exit(ctrruntime.LogMain(os.Args[2:]))
	}
	sdk.Serve(sdk.ServeOpts{Runtime: ctrruntime.New()})
}

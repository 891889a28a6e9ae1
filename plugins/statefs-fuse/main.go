// Command statefs-fuse is Kigumi's state filesystem plugin, named "fuse";
// see package statefs. Run with statefs.HelperCommand as its first
// argument, it serves one instance's FUSE filesystem instead.
package main

import (
	"os"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/statefs"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == statefs.HelperCommand {
		os.Exit(statefs.HelperMain(os.Args[2:]))
	}
	sdk.Serve(sdk.ServeOpts{StateFS: statefs.New()})
}

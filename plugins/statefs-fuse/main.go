// Command statefs-fuse is Kigumi's state filesystem plugin, named "fuse".
// For now it keeps each instance's state in a plain directory; see package
// statefs.
package main

import (
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/statefs"
)

func main() {
	sdk.Serve(sdk.ServeOpts{StateFS: statefs.New()})
}

// Command kigumi hosts untrusted workloads from many tenants on one Linux
// host. See `kigumi help`.
package main

import (
	"math"
	"os"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/plugins/runtime-containerd/ctrruntime"
	"github.com/kigumi/kigumi/plugins/runtime-wasm/wasmruntime"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/statefs"
)

func main() {
	// Files inherited from whoever started kigumi must not reach plugins or
	// sandboxes: mark them close-on-exec before anything runs.
	_ = unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	// The plugin host re-executes this binary to start a tenant's plugin
	// process inside the tenant's cgroup, as the tenant.
	if len(os.Args) > 1 && os.Args[1] == pluginhost.ExecCommand {
		os.Exit(pluginhost.ExecMain(os.Args[2:]))
	}
	// The wasm runtime re-executes this binary as its per-instance sandbox.
	if len(os.Args) > 1 && os.Args[1] == wasmruntime.SandboxCommand {
		os.Exit(wasmruntime.SandboxMain(os.Args[2:]))
	}
	// The containerd shim runs this binary as a container's logging process.
	if len(os.Args) > 1 && os.Args[1] == ctrruntime.LogCommand {
		os.Exit(ctrruntime.LogMain(os.Args[2:]))
	}
	// The containerd runtime re-executes this binary to show a state in a
	// tenant daemon's mount namespace.
	if len(os.Args) > 1 && os.Args[1] == ctrruntime.MountCommand {
		os.Exit(ctrruntime.MountMain(os.Args[2:]))
	}
	// The statefs plugin re-executes this binary to serve a FUSE state.
	if len(os.Args) > 1 && os.Args[1] == statefs.HelperCommand {
		os.Exit(statefs.HelperMain(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:]))
}

// Package wasmruntime is Kigumi's WASI runtime plugin: it runs WebAssembly
// modules with wazero, one sandbox process per instance.
//
// Start re-executes the current executable (os.Executable) with
// SandboxCommand as its first argument. The new process, the sandbox, is
// detached into its own session so that it outlives the plugin, which the CLI
// runs only for one command. Every executable that embeds this runtime must
// therefore dispatch to SandboxMain before doing anything else:
//
//	if len(os.Args) > 1 && os.Args[1] == wasmruntime.SandboxCommand {
//		os.Exit(wasmruntime.SandboxMain(os.Args[2:]))
//	}
//
// The plugin, as root, opens everything the sandbox needs and hands it over as
// open file descriptors: the verified module (in a sealed memfd), the
// instance's log files, a status file, a config pipe and a ready pipe. The
// sandbox compiles the module (through a root-only compilation cache, one
// directory per module digest and wazero version; the plugin only scans
// it) on one core within its compile budget, not the
// instance's limits (compile_timeout, after which the plugin kills the
// sandbox, and compile_memory, its RLIMIT_DATA while it compiles), joins
// the instance's cgroups (and takes GOMAXPROCS from their CPU quota), drops to the tenant's user (it refuses to run a workload as root)
// with no_new_privs set and no capability left (its bounding set holds only
// the four it needed as root), loads a seccomp filter that allows only what
// the Go runtime and wazero call (confine.go), reports readiness, and runs
// the module, within its time budget if it has one (wall time from _start:
// wazero stops the module once it is spent, and ends its sleeps). It
// records how the module ended (exit code, trap, or over its budget) in the status
// file, where Inspect reads it after the sandbox has gone, and so it does for
// SIGHUP, SIGINT and SIGTERM, the signals that would end it silently; Stop
// replaces that record with its own. The sandbox process's own stderr is
// sandbox.log, where its Go runtime writes why it died. A sandbox that
// recorded nothing was killed from outside: Inspect tells an OOM kill (the
// cgroup's oom_kill count grew since Start), a pids limit (pids.events),
// a crash of the sandbox (sandbox.log) and, when none of these, SIGKILL.
//
// The workload gets nothing it was not granted (guest.go; docs/wasm-abi.md):
// its preopens are the state directory at its guest path (with state.read or
// state.write), which is the sandbox's jail, and read-only directories of the
// artifacts, opened by the plugin and resolved by the kernel inside them; its
// env is the spec's; its clocks are deterministic fakes unless clock is
// granted, and its random source is deterministic unless random is granted.
// Through the kigumi host module (hostmod.go) it can drop any of these for
// the rest of its life. Validate and Start scan the module's sections
// (modinfo.go) before anything compiles it.
//
// Destroy, and Configure for what a crashed plugin left, prune the
// compilation cache and the store of pulled images of the modules no live
// instance uses, once unused for a grace period (cache.go).
package wasmruntime

// Package ctrruntime is Kigumi's containerd runtime plugin: it runs OCI
// images pulled from a registry, one container per instance, through the
// containerd Go client, in the shared daemon mode (one root containerd for
// every tenant).
//
// Each container is hardened as Sashimono's three barriers ask: the
// workload runs as a non-root uid (default 10000) inside an unprivileged
// container, whose user namespace maps the workload uid to the tenant's
// own Linux user, which owns the state, and every other id (root first) to
// the tenant's own subordinate id range, so that every tenant's container
// root is a different unprivileged host uid. The container has no
// capabilities, no_new_privs, containerd's default seccomp profile, masked
// and read-only /proc and /sys paths, a read-only root filesystem, a size
// capped tmpfs at /tmp, a network namespace of its own with loopback only,
// and a cgroup inside its instance's cgroup with the instance's memory
// (no swap), CPU and pids limits. The state mount is bound at /state, where
// it is the workload uid's. The OCI spec is written to the instance's run
// dir as config.json.
//
// The containers' output goes to stdout.log and stderr.log in the run dir
// through a logging process the containerd shim starts: this executable
// re-executed with LogCommand as its first argument, which caps each file.
// In the per-tenant mode, it is also re-executed with MountCommand to
// show an instance's state in the tenant daemon's mount namespace, so
// that no thread of the plugin changes namespaces. Every executable that
// embeds this runtime must therefore dispatch to LogMain and MountMain
// before doing anything else:
//
//	if len(os.Args) > 1 && os.Args[1] == ctrruntime.LogCommand {
//		os.Exit(ctrruntime.LogMain(os.Args[2:]))
//	}
//	if len(os.Args) > 1 && os.Args[1] == ctrruntime.MountCommand {
//		os.Exit(ctrruntime.MountMain(os.Args[2:]))
//	}
package ctrruntime

package ctrruntime

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// rootlessID is the host id of the container id id in a tenant's rootless
// daemon, whose user namespace rootlesskit maps 0 to the tenant's own id
// and 1 on to its subordinate range from sub.
func rootlessID(sub, id uint32) uint32 { return sub + id - 1 }

// giveState gives the state at dir to the workload of a tenant's rootless
// daemon. There the tenant's own id, which owns the state, is container
// root, and the workload's id is a subordinate one (rootlessID): so the
// state's root, and what the tenant's own ids own in it (a seed the
// engine filled), become the workload's, as podman's ":U" volume option
// does. The root goes last and is checked first: a state whose root is
// the workload's already was given before, and is left alone, so a
// restart costs one stat; an interrupted walk is redone on the next start.
// The walk goes through an os.Root and never follows a symlink.
func giveState(dir string, u sdk.User, workload uint32) error {
	uid, gid := rootlessID(u.SubUID, workload), rootlessID(u.SubGID, workload)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("open state: %w", err)
	}
	defer root.Close()
	st, err := lstatIDs(root, ".")
	if err != nil {
		return err
	}
	switch {
	case st.Uid == uid && st.Gid == gid:
		return nil
	case st.Uid != u.UID || st.Gid != u.GID:
		return fmt.Errorf("state %s is owned by %d:%d, neither the tenant's %d:%d nor its workload's %d:%d", dir, st.Uid, st.Gid, u.UID, u.GID, uid, gid)
	}
	err = fs.WalkDir(root.FS(), ".", func(path string, _ fs.DirEntry, err error) error {
		if err != nil || path == "." {
			return err
		}
		return giveEntry(root, path, u, uid, gid)
	})
	if err != nil {
		return fmt.Errorf("give state to the workload: %w", err)
	}
	if err := giveEntry(root, ".", u, uid, gid); err != nil {
		return fmt.Errorf("give state to the workload: %w", err)
	}
	return nil
}

// giveEntry changes path's owner and group, each where it is the
// tenant's own, to uid and gid.
func giveEntry(root *os.Root, path string, u sdk.User, uid, gid uint32) error {
	st, err := lstatIDs(root, path)
	if err != nil {
		return err
	}
	to := func(id, own, give uint32) int {
		if id == own {
			return int(give)
		}
		return -1
	}
	nu, ng := to(st.Uid, u.UID, uid), to(st.Gid, u.GID, gid)
	if nu == -1 && ng == -1 {
		return nil
	}
	return root.Lchown(path, nu, ng)
}

// lstatIDs returns the ids of path in root, not following a symlink.
func lstatIDs(root *os.Root, path string) (*syscall.Stat_t, error) {
	fi, err := root.Lstat(path)
	if err != nil {
		return nil, err
	}
	return fi.Sys().(*syscall.Stat_t), nil
}

// shareState hands a per-tenant instance its state: it gives the state to
// the workload's id (giveState) and shows it to the tenant's daemon
// (showState), noting in d what unshareState undoes.
func shareState(req *sdk.StartRequest, set instanceSettings, d *handleData) error {
	td, err := decodeTenant(req.Tenant)
	if err != nil {
		return err
	}
	if err := giveState(set.state.Source, req.User, set.workloadUID); err != nil {
		return err
	}
	if err := showState(td, set.state.Source); err != nil {
		return err
	}
	d.StateShown, d.DaemonPid, d.DaemonStart = set.state.Source, td.Pid, td.StartTime
	return nil
}

// unshareState detaches the state that shareState showed the tenant's
// daemon, if it did.
func unshareState(d handleData) error {
	if d.StateShown == "" {
		return nil
	}
	return hideState(tenantData{Tenant: d.Instance.Tenant, Pid: d.DaemonPid, StartTime: d.DaemonStart}, d.StateShown)
}

// showState makes the state mount at dir visible at the same path in the
// mount namespace of the tenant's daemon (that of its rootlesskit's
// child), where runc binds it into the container. The daemon's namespace
// is a copy of the host's made when the daemon started: a state mounted
// since shows up there only if the host's mounts propagate (a shared /,
// systemd's default), and not on a host whose / is private. A mount at
// dir there that is not the host's (one left by an earlier helper of the
// state) is detached first. The namespace is the tenant's own: nothing
// done in it reaches the host or another tenant.
func showState(td tenantData, dir string) error {
	var host unix.Stat_t
	if err := unix.Stat(dir, &host); err != nil {
		return fmt.Errorf("state %s: %w", dir, err)
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, dir, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("state %s: clone its mount: %w", dir, err)
	}
	defer unix.Close(tree)
	return inDaemonMountNS(td, func() error {
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return err
		}
		if st.Dev == host.Dev && st.Ino == host.Ino {
			return nil
		}
		if err := detachAll(dir); err != nil {
			return err
		}
		return unix.MoveMount(tree, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH)
	})
}

// hideState detaches what is mounted at dir in the mount namespace of the
// tenant's daemon, if that daemon still runs.
func hideState(td tenantData, dir string) error {
	if !alive(td) {
		return nil
	}
	return inDaemonMountNS(td, func() error { return detachAll(dir) })
}

// detachAll detaches every mount stacked at dir.
func detachAll(dir string) error {
	for {
		err := unix.Unmount(dir, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		switch {
		case errors.Is(err, unix.EINVAL):
			return nil // not a mount point
		case err != nil:
			return fmt.Errorf("detach %s: %w", dir, err)
		}
	}
}

// inDaemonMountNS runs f on an OS thread of its own in the mount namespace
// of td's daemon. The thread is never given back: it ends with f's
// goroutine, so no other goroutine runs in that namespace. It is never the
// main thread, which the Go runtime keeps when its goroutine ends locked
// to it, and which /proc/self shows.
func inDaemonMountNS(td tenantData, f func() error) error {
	pid, err := daemonChild(td)
	if err != nil {
		return err
	}
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return fmt.Errorf("tenant %s: the daemon's mount namespace: %w", td.Tenant, err)
	}
	defer ns.Close()
	// The namespace is open: check that it was not a reused pid's.
	if st, err := startTime(td.Pid); err != nil || st != td.StartTime {
		return sdk.Errorf(sdk.CodeUnavailable, "tenant %s: its daemon is not running", td.Tenant)
	}
	// The caller's thread (the main one, perhaps) is kept to itself
	// meanwhile, so that the goroutine below runs on another.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for range 100 {
		errc := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			if unix.Gettid() == unix.Getpid() {
				runtime.UnlockOSThread()
				errc <- errMainThread
				return
			}
			// Threads share their root and working directory, which
			// setns changes: this one gets its own first.
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				errc <- fmt.Errorf("unshare fs: %w", err)
				return
			}
			if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS); err != nil {
				errc <- fmt.Errorf("enter the daemon's mount namespace: %w", err)
				return
			}
			errc <- f()
		}()
		switch err := <-errc; {
		case errors.Is(err, errMainThread):
			continue
		case err != nil:
			return fmt.Errorf("tenant %s: %w", td.Tenant, err)
		default:
			return nil
		}
	}
	return fmt.Errorf("tenant %s: enter the daemon's mount namespace: %w", td.Tenant, errMainThread)
}

// errMainThread is a goroutine's that was to enter a namespace and found
// itself on the main thread.
var errMainThread = errors.New("only the main thread was free")

// daemonChild is the pid of the child of td's rootlesskit process that
// runs in a mount namespace other than the host's: rootlesskit's child,
// in the daemon's namespaces.
func daemonChild(td tenantData) (int, error) {
	host, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return 0, err
	}
	if !alive(td) {
		return 0, sdk.Errorf(sdk.CodeUnavailable, "tenant %s: its daemon is not running", td.Tenant)
	}
	// Each thread lists the children it started.
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", td.Pid))
	if err != nil {
		return 0, err
	}
	var children []string
	for _, f := range tasks {
		b, _ := os.ReadFile(f)
		children = append(children, strings.Fields(string(b))...)
	}
	for _, f := range children {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && ns != host {
			return pid, nil
		}
	}
	return 0, sdk.Errorf(sdk.CodeUnavailable, "tenant %s: its daemon's rootlesskit has no child in a mount namespace of its own", td.Tenant)
}

package ctrruntime

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
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
// the workload's id (giveState) and shows it to the tenant's daemon at
// stateMountPoint (showState), noting in d what unshareState undoes.
func (r *Runtime) shareState(req *sdk.StartRequest, set instanceSettings, d *handleData) error {
	td, err := decodeTenant(req.Tenant)
	if err != nil {
		return err
	}
	if err := giveState(set.state.Source, req.User, set.workloadUID); err != nil {
		return err
	}
	// Noted first: unshareState removes a half-made mount point too.
	d.DaemonPid, d.DaemonStart = td.Pid, td.StartTime
	at := stateMountPoint(*d)
	if err := makeMountPoint(at, req.User); err != nil {
		return fmt.Errorf("state mount point: %w", err)
	}
	return r.showState(td, set.state.Source, at)
}

// stateMountPoint is where a per-tenant container's state is shown in its
// daemon's mount namespace: in the daemon's own directory, which the
// tenant's user (the daemon's root) reaches, unlike the state's host
// path below root-only directories.
func stateMountPoint(d handleData) string {
	return filepath.Join(filepath.Dir(d.Daemon), "state-"+d.ID)
}

// makeMountPoint makes dir an empty directory of u's, mode 0700, replacing
// whatever was there (an earlier start's, or something the tenant put).
func makeMountPoint(dir string, u sdk.User) error {
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	fd, err := openMadeDir(dir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fchown(fd, int(u.UID), int(u.GID))
}

// unshareState detaches the state that shareState showed the tenant's
// daemon, if it did, and removes its mount point.
func (r *Runtime) unshareState(d handleData) error {
	if d.DaemonPid == 0 {
		return nil
	}
	at := stateMountPoint(d)
	if err := r.hideState(tenantData{Tenant: d.Instance.Tenant, Pid: d.DaemonPid, StartTime: d.DaemonStart}, at); err != nil {
		return err
	}
	if err := os.Remove(at); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("state mount point: %w", err)
	}
	return nil
}

// hideState detaches what is mounted at dir in the mount namespace of the
// tenant's daemon, if that daemon still runs.
func (r *Runtime) hideState(td tenantData, dir string) error {
	if !alive(td) {
		return nil
	}
	return r.inDaemonMountNS(td, nil, mountHide, dir)
}

// showState mounts the state at src (a mount of its own, or a directory)
// at the directory at in the mount namespace of the tenant's daemon (that
// of its rootlesskit's child), where runc binds it into the container.
// The daemon cannot reach src, below root-only directories, and its
// namespace, a copy of the host's from when it started, would not even
// see a state mounted since unless the host's mounts propagate (a shared
// /). The mount is cloned here (open_tree) and moved there (MountMain).
// The namespace is the tenant's own: nothing done in it reaches the host
// or another tenant.
func (r *Runtime) showState(td tenantData, src, at string) error {
	tree, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return fmt.Errorf("state %s: clone its mount: %w", src, err)
	}
	f := os.NewFile(uintptr(tree), "tree")
	defer f.Close()
	return r.inDaemonMountNS(td, f, mountShow, at)
}

// The operations of MountMain.
const (
	mountShow = "show"
	mountHide = "hide"
)

// MountCommand is the first argument that makes an executable embedding
// this runtime show or hide a state in a tenant daemon's mount namespace:
// it must then call MountMain.
const MountCommand = "__containerd-state-mount"

// inDaemonMountNS runs this executable's MountMain with op on dir in the
// mount namespace of td's daemon (fd 3), and tree (fd 4) for mountShow.
// A process of its own enters the namespace, so that none of the plugin's
// threads ever changes namespaces.
func (r *Runtime) inDaemonMountNS(td tenantData, tree *os.File, op, dir string) error {
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
	cmd := exec.Command(r.exe, MountCommand, op, dir)
	cmd.ExtraFiles = []*os.File{ns}
	if tree != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, tree)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("tenant %s: %s the state %s in its daemon's mount namespace: %w: %s", td.Tenant, op, dir, err, bytes.TrimSpace(out))
	}
	return nil
}

// MountMain enters the mount namespace on fd 3 and, with "show DIR",
// mounts the detached mount on fd 4 at DIR there, once: a mount at DIR
// that is not the same filesystem (one an earlier helper of the state
// left) is detached first; with "hide DIR", it detaches every mount at
// DIR there.
func MountMain(args []string) int {
	if err := mountMain(args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func mountMain(args []string) error {
	if len(args) != 2 || args[0] != mountShow && args[0] != mountHide {
		return errors.New("usage: " + MountCommand + " show|hide DIR")
	}
	op, dir := args[0], args[1]
	// Threads share their root and working directory, which setns
	// changes: this one gets its own first. The process ends after.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare fs: %w", err)
	}
	var tree unix.Stat_t
	if op == mountShow {
		if err := unix.Fstat(4, &tree); err != nil {
			return fmt.Errorf("the mount to show: %w", err)
		}
	}
	if err := unix.Setns(3, unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("enter the mount namespace: %w", err)
	}
	if op == mountHide {
		return detachAll(dir)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return err
	}
	if st.Dev == tree.Dev && st.Ino == tree.Ino {
		return nil
	}
	if err := detachAll(dir); err != nil {
		return err
	}
	return unix.MoveMount(4, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH)
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

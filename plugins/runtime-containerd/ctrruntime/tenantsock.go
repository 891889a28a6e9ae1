package ctrruntime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// daemonPeer is who may listen on a per-tenant daemon's socket: the
// tenant's host uid, which the rootless containerd runs as (it is root of
// a user namespace the tenant's user made), and a process descending from
// the daemon's rootlesskit process, of pid Pid started at StartTime
// (clock ticks since boot).
type daemonPeer struct {
	UID       uint32 `json:"uid"`
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
}

// valid reports whether p names a per-tenant daemon: an unprivileged
// uid and a process other than init.
func (p *daemonPeer) valid() bool { return p != nil && p.UID != 0 && p.Pid > 1 }

// maxDescent bounds the walk from a socket's listener up to the daemon:
// containerd is a few processes below rootlesskit.
const maxDescent = 32

// dialTenantSocket connects, as root, to the unix socket at path in a
// tenant-owned directory, and checks who listens on it with check. Root
// must not be redirected by the tenant's user, who may replace anything
// in that directory, and the directory itself: no symbolic link is
// followed on the way (RESOLVE_NO_SYMLINKS), the directory must be uid's
// and the socket an uid's socket, and root connects to the very inode it
// checked, through its O_PATH descriptor, not to the path again. A
// socket the tenant's user made still may be anyone's listener (a
// descriptor passed on, a listener bound by a process of the tenant that
// is not the daemon): check judges the listener from SO_PEERCRED before
// a byte is sent.
func dialTenantSocket(ctx context.Context, path string, uid uint32, check func(unix.Ucred) error) (*net.UnixConn, error) {
	f, err := openTenantSocket(path, uid)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The inode's path, through the magic link of its descriptor: short
	// whatever the tenant's home.
	via := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
	if len(via) > maxSocketPath {
		return nil, sdk.Errorf(sdk.CodeInternal, "socket %s: the path %s is longer than %d bytes", path, via, maxSocketPath)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", via)
	if err != nil {
		return nil, sdk.Errorf(sdk.CodeUnavailable, "socket %s: %w", path, err)
	}
	uc := c.(*net.UnixConn)
	cred, err := peerCred(uc)
	if err == nil {
		err = check(cred)
	}
	if err != nil {
		uc.Close()
		return nil, refused(path, "%v", err)
	}
	return uc, nil
}

// openTenantSocket opens the socket at path as an O_PATH file, refusing a
// symbolic link anywhere in path, a directory that is not uid's, and a
// last component that is not a socket of uid's.
func openTenantSocket(path string, uid uint32) (*os.File, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || filepath.Dir(path) == "/" {
		return nil, refused(path, "not a clean absolute path below a directory")
	}
	dir, err := openDirOf(path)
	switch {
	case errors.Is(err, unix.ELOOP):
		return nil, refused(path, "its directory's path holds a symbolic link")
	case errors.Is(err, unix.ENOTDIR):
		return nil, refused(path, "its directory is not a directory")
	case err != nil:
		return nil, sdk.Errorf(sdk.CodeUnavailable, "socket %s: open its directory: %w", path, err)
	}
	defer unix.Close(dir)
	var st unix.Stat_t
	if err := unix.Fstat(dir, &st); err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if st.Uid != uid {
		return nil, refused(path, "its directory is uid %d's, not the tenant's uid %d", st.Uid, uid)
	}
	// With O_PATH|O_NOFOLLOW a symbolic link opens as itself: the type
	// check below refuses it.
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH}
	fd, err := openat2(dir, filepath.Base(path), &how)
	if err != nil {
		return nil, sdk.Errorf(sdk.CodeUnavailable, "socket %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	var what string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK:
		if st.Uid == uid {
			return f, nil
		}
		what = fmt.Sprintf("a socket of uid %d, not of the tenant's uid %d", st.Uid, uid)
	case unix.S_IFLNK:
		what = "a symbolic link"
	case unix.S_IFDIR:
		what = "a directory"
	case unix.S_IFREG:
		what = "a regular file"
	default:
		what = fmt.Sprintf("not a socket (mode %#o)", st.Mode)
	}
	f.Close()
	return nil, refused(path, "it is %s", what)
}

// removeTenantSocket removes the socket at path, in a tenant-owned
// directory, as root: through no symbolic link, so that a directory the
// tenant's user swapped for a link to another (another tenant's) makes
// root unlink nothing there. A path that no longer leads to a socket
// through real directories has nothing of the plugin's to remove.
func removeTenantSocket(path string) error {
	dir, err := openDirOf(path)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove socket %s: open its directory: %w", path, err)
	}
	defer unix.Close(dir)
	var st unix.Stat_t
	if err := unix.Fstatat(dir, filepath.Base(path), &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(err, unix.ENOENT) || (err == nil && st.Mode&unix.S_IFMT != unix.S_IFSOCK) {
		return nil
	}
	if err := unix.Unlinkat(dir, filepath.Base(path), 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove socket %s: %w", path, err)
	}
	return nil
}

// openDirOf opens the directory of the absolute path as an O_PATH
// descriptor, following no symbolic link on the way from /.
func openDirOf(path string) (int, error) {
	root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /: %w", err)
	}
	defer unix.Close(root)
	how := unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_BENEATH}
	return openat2(root, strings.TrimPrefix(filepath.Dir(path), "/"), &how)
}

// openat2 is unix.Openat2, retried on EINTR and on EAGAIN, which it
// answers when a rename elsewhere raced the lookup.
func openat2(dirfd int, path string, how *unix.OpenHow) (int, error) {
	for i := 0; ; i++ {
		fd, err := unix.Openat2(dirfd, path, how)
		if (errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN)) && i < 16 {
			continue
		}
		return fd, err
	}
}

// refused is the error of a tenant's socket that root will not talk to.
func refused(path, format string, args ...any) error {
	return sdk.Errorf(sdk.CodeUnavailable, "socket %s refused: %s", path, fmt.Sprintf(format, args...))
}

// peerCred returns the credentials of c's peer, the listening process as
// it was when it called listen, translated to the plugin's namespaces.
func peerCred(c *net.UnixConn) (unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return unix.Ucred{}, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return unix.Ucred{}, err
	}
	if cerr != nil {
		return unix.Ucred{}, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return *cred, nil
}

// checkDaemon checks that a listener is p's daemon: p's uid, and a
// descendant of its rootlesskit process. Descent is what the tenant
// cannot fake from outside the daemon: its user may start processes of
// its uid at will, even in the daemon's user namespace, but not make one
// the child of a process it does not run; and a process the daemon's
// own processes fork is the daemon's, which the tenant controls anyway.
// The session or the cgroup would not do: any process may start a
// session, and the tenant's instances share its cgroup.
func (p daemonPeer) checkDaemon(cred unix.Ucred) error {
	if cred.Uid != p.UID {
		return fmt.Errorf("its listener runs as uid %d, not the tenant's uid %d", cred.Uid, p.UID)
	}
	if !descends(int(cred.Pid), p.Pid, p.StartTime) {
		return fmt.Errorf("its listener, process %d, is not of the tenant's daemon (process %d)", cred.Pid, p.Pid)
	}
	return nil
}

// descends reports whether process pid is the running process ancestor
// that started at start, or one of its descendants.
func descends(pid, ancestor int, start uint64) bool {
	if !running(ancestor, start) {
		return false
	}
	for i := 0; i < maxDescent && pid > 1; i++ {
		if pid == ancestor {
			return true
		}
		st, err := readStat(pid)
		if err != nil || len(st) < 2 {
			return false
		}
		if pid, err = strconv.Atoi(st[1]); err != nil {
			return false
		}
	}
	return false
}

// checkSlirp checks that a listener is s's slirp4netns, which runs as
// uid (root of the daemon's user namespace) and listens in its first
// process, the one the plugin started and recorded.
func checkSlirp(s slirpData, uid uint32) func(unix.Ucred) error {
	return func(cred unix.Ucred) error {
		if cred.Uid != uid {
			return fmt.Errorf("its listener runs as uid %d, not the tenant's uid %d", cred.Uid, uid)
		}
		if int(cred.Pid) != s.Pid || !slirpAlive(s) {
			return fmt.Errorf("its listener, process %d, is not the instance's slirp4netns (process %d)", cred.Pid, s.Pid)
		}
		return nil
	}
}

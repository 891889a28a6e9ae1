package api

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SocketPath returns the path of the agent's socket in a host's state
// directory.
func SocketPath(stateDir string) string { return stateDir + "/" + SocketName }

// EnsureGroup returns the gid of the admin group name, creating it as a
// system group when it is missing.
func EnsureGroup(ctx context.Context, name string) (uint32, error) {
	if g, err := user.LookupGroup(name); err == nil {
		return parseID(g.Gid)
	}
	out, err := exec.CommandContext(ctx, "groupadd", "--system", name).CombinedOutput()
	// Another process may have made it meanwhile: look again either way.
	g, lerr := user.LookupGroup(name)
	if lerr != nil {
		if err != nil {
			return 0, fmt.Errorf("create group %s: %w: %s", name, err, strings.TrimSpace(string(out)))
		}
		return 0, fmt.Errorf("create group %s: %w", name, lerr)
	}
	return parseID(g.Gid)
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("bad id %q: %w", s, err)
	}
	return uint32(n), nil
}

// Listen listens on a unix socket at path, owned by root and group gid with
// mode 0660. A stale socket left by a dead agent is replaced; a socket an
// agent still answers on is an ErrBusy error.
func Listen(path string, gid uint32) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("listen on %s: the path exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen on %s: another agent answers there: %w", path, ErrBusy)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// A connection made before the chown and chmod below still meets the
	// peer credential check.
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chown(path, 0, int(gid)); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return ln, nil
}

// Peer is the credentials of the process at the other end of a connection,
// as the kernel recorded them when it connected.
type Peer struct {
	PID    int32
	UID    uint32
	GID    uint32
	Groups []uint32
}

// allowed reports whether p may use the API: root, or a member of gid.
func (p Peer) allowed(gid uint32) bool {
	return p.UID == 0 || p.GID == gid || slices.Contains(p.Groups, gid)
}

// peerOf reads the credentials of c's peer with SO_PEERCRED and
// SO_PEERGROUPS.
func peerOf(c net.Conn) (Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, fmt.Errorf("not a unix connection: %T", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var p Peer
	var serr error
	if err := raw.Control(func(fd uintptr) {
		var cred *unix.Ucred
		if cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); serr != nil {
			return
		}
		p = Peer{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
		p.Groups, serr = peerGroups(int(fd))
	}); err != nil {
		return Peer{}, err
	}
	if serr != nil {
		return Peer{}, fmt.Errorf("read peer credentials: %w", serr)
	}
	return p, nil
}

// maxGroups bounds the supplementary groups read (the kernel's NGROUPS_MAX).
const maxGroups = 65536

// peerGroups returns the supplementary groups of the peer of fd.
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 64)
	for {
		size := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == unix.ERANGE && int(size/4) > len(buf) && size/4 <= maxGroups:
			buf = make([]uint32, size/4)
		case errno != 0:
			return nil, errno
		default:
			return buf[:size/4], nil
		}
	}
}

// noAgent reports whether a dial error means nobody listens.
func noAgent(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)
}

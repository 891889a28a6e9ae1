package ctrruntime

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// listenCommand, as the test binary's first argument, makes it a unix
// socket listener at its second (listenMain).
const listenCommand = "kigumi-test-listen"

// listenMain listens on the unix socket args[0], says "ready" on stdout,
// and reports each connection it gets as "conn N" (the bytes it read)
// once stdin ends, then "done".
func listenMain(args []string) int {
	l, err := net.Listen("unix", args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ul := l.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	fmt.Println("ready")
	var mu sync.Mutex
	var wg sync.WaitGroup
	var reports []string
	accept := func() bool {
		c, err := ul.Accept()
		if err != nil {
			return false
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			n, _ := io.Copy(io.Discard, c)
			mu.Lock()
			defer mu.Unlock()
			reports = append(reports, fmt.Sprintf("conn %d", n))
		}()
		return true
	}
	go func() {
		for accept() {
		}
	}()
	_, _ = io.Copy(io.Discard, os.Stdin)
	// Whatever connected before stdin ended waits in the backlog.
	_ = ul.SetDeadline(time.Now().Add(200 * time.Millisecond))
	for accept() {
	}
	wg.Wait()
	for _, r := range reports {
		fmt.Println(r)
	}
	fmt.Println("done")
	return 0
}

// listener is a listenMain process.
type listener struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	path  string
}

// listenAs starts a listener on path, run as uid and gid.
func listenAs(t *testing.T, path string, uid, gid uint32) *listener {
	t.Helper()
	cmd := exec.Command(exe, listenCommand, path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &listener{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout), path: path}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	if !l.out.Scan() || l.out.Text() != "ready" {
		t.Fatalf("listener on %s as uid %d did not start: %q", path, uid, l.out.Text())
	}
	return l
}

// connections ends the listener and returns the bytes it read of each
// connection.
func (l *listener) connections(t *testing.T) []string {
	t.Helper()
	l.stdin.Close()
	var conns []string
	for l.out.Scan() {
		if l.out.Text() == "done" {
			return conns
		}
		conns = append(conns, l.out.Text())
	}
	t.Fatalf("listener on %s ended early", l.path)
	return nil
}

// mkdirOwned makes dir, of uid, mode 0700.
func mkdirOwned(t *testing.T, dir string, uid uint32) {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, int(uid), int(uid)); err != nil {
		t.Fatal(err)
	}
}

// TestDialTenantSocket refuses every socket of a tenant's directory but
// one its daemon listens on: a symbolic link, in the directory or on the
// way, a directory or a file, a socket of another uid, and a tenant's
// socket whose listener is root, another uid or a process of the tenant
// that is not its daemon. A refused socket is told nothing; root's own
// listener, where a link points, is not even connected to.
func TestDialTenantSocket(t *testing.T) {
	const tenantUID, otherUID = 47001, 47002
	ctx := context.Background()
	type setup struct {
		// path is the socket dialed; peer is who may listen on it.
		path string
		peer daemonPeer
		// watch is a listener that must see conns connections, and no
		// byte on them but the legitimate daemon's "ping".
		watch *listener
		conns int
	}
	for _, tc := range []struct {
		name string
		// make puts things in top: the tenant's directory is top/daemon.
		make func(t *testing.T, top string) setup
		want string
	}{
		{"daemon", func(t *testing.T, top string) setup {
			// This test stands for rootlesskit: the listener descends
			// from it.
			l := listenAs(t, top+"/daemon/ctd.sock", tenantUID, tenantUID)
			return setup{path: l.path, peer: peerOf(t, os.Getpid(), tenantUID), watch: l, conns: 1}
		}, ""},
		{"daemon-itself", func(t *testing.T, top string) setup {
			l := listenAs(t, top+"/daemon/ctd.sock", tenantUID, tenantUID)
			return setup{path: l.path, peer: peerOf(t, l.cmd.Process.Pid, tenantUID), watch: l, conns: 1}
		}, ""},
		{"symlink", func(t *testing.T, top string) setup {
			other := listenAs(t, top+"/root.sock", 0, 0)
			link := top + "/daemon/ctd.sock"
			symlinkAs(t, other.path, link, tenantUID)
			return setup{path: link, peer: peerOf(t, other.cmd.Process.Pid, tenantUID), watch: other}
		}, "it is a symbolic link"},
		{"symlinked-directory", func(t *testing.T, top string) setup {
			l := listenAs(t, top+"/daemon/ctd.sock", tenantUID, tenantUID)
			symlinkAs(t, top+"/daemon", top+"/daemon/link", tenantUID)
			return setup{path: top + "/daemon/link/ctd.sock", peer: peerOf(t, l.cmd.Process.Pid, tenantUID), watch: l}
		}, "its directory's path holds a symbolic link"},
		{"directory", func(t *testing.T, top string) setup {
			mkdirOwned(t, top+"/daemon/ctd.sock", tenantUID)
			return setup{path: top + "/daemon/ctd.sock", peer: peerOf(t, os.Getpid(), tenantUID)}
		}, "it is a directory"},
		{"regular-file", func(t *testing.T, top string) setup {
			if err := os.WriteFile(top+"/daemon/ctd.sock", nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return setup{path: top + "/daemon/ctd.sock", peer: peerOf(t, os.Getpid(), tenantUID)}
		}, "it is a regular file"},
		{"root-socket", func(t *testing.T, top string) setup {
			l := listenAs(t, top+"/daemon/ctd.sock", 0, 0)
			return setup{path: l.path, peer: peerOf(t, l.cmd.Process.Pid, tenantUID), watch: l}
		}, "it is a socket of uid 0, not of the tenant's uid 47001"},
		{"root-listener", func(t *testing.T, top string) setup {
			// Bound by root, then the tenant's: as a listening socket's
			// descriptor passed to root would be.
			l := listenAs(t, top+"/daemon/ctd.sock", 0, 0)
			if err := os.Chown(l.path, tenantUID, tenantUID); err != nil {
				t.Fatal(err)
			}
			return setup{path: l.path, peer: peerOf(t, l.cmd.Process.Pid, tenantUID), watch: l, conns: 1}
		}, "its listener runs as uid 0, not the tenant's uid 47001"},
		{"other-uid-listener", func(t *testing.T, top string) setup {
			mkdirOwned(t, top+"/other", otherUID)
			l := listenAs(t, top+"/other/ctd.sock", otherUID, otherUID)
			path := top + "/daemon/ctd.sock"
			if err := os.Rename(l.path, path); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(path, tenantUID, tenantUID); err != nil {
				t.Fatal(err)
			}
			return setup{path: path, peer: peerOf(t, l.cmd.Process.Pid, tenantUID), watch: l, conns: 1}
		}, "its listener runs as uid 47002, not the tenant's uid 47001"},
		{"tenant-not-daemon", func(t *testing.T, top string) setup {
			// The daemon is another process of the tenant's, the
			// listener not its descendant.
			daemon := listenAs(t, top+"/daemon/daemon.sock", tenantUID, tenantUID)
			l := listenAs(t, top+"/daemon/ctd.sock", tenantUID, tenantUID)
			return setup{path: l.path, peer: peerOf(t, daemon.cmd.Process.Pid, tenantUID), watch: l, conns: 1}
		}, "is not of the tenant's daemon"},
		{"daemon-ended", func(t *testing.T, top string) setup {
			// The recorded daemon's pid is now another process's.
			l := listenAs(t, top+"/daemon/ctd.sock", tenantUID, tenantUID)
			p := peerOf(t, l.cmd.Process.Pid, tenantUID)
			p.StartTime++
			return setup{path: l.path, peer: p, watch: l, conns: 1}
		}, "is not of the tenant's daemon"},
		{"directory-of-other-uid", func(t *testing.T, top string) setup {
			if err := os.Chown(top+"/daemon", otherUID, otherUID); err != nil {
				t.Fatal(err)
			}
			l := listenAs(t, top+"/daemon/ctd.sock", otherUID, otherUID)
			return setup{path: l.path, peer: peerOf(t, l.cmd.Process.Pid, tenantUID), watch: l}
		}, "its directory is uid 47002's, not the tenant's uid 47001"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			top, err := os.MkdirTemp(base, "sock-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(top) })
			if err := os.Chmod(top, 0o711); err != nil {
				t.Fatal(err)
			}
			mkdirOwned(t, top+"/daemon", tenantUID)
			s := tc.make(t, top)
			c, err := dialTenantSocket(ctx, s.path, tenantUID, s.peer.checkDaemon)
			sent := "conn 0"
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.Write([]byte("ping")); err != nil {
					t.Fatal(err)
				}
				c.Close()
				sent = "conn 4"
			} else {
				if err == nil {
					c.Close()
					t.Fatal("dialed")
				}
				if sdk.CodeOf(err) != sdk.CodeUnavailable || !strings.Contains(err.Error(), "socket "+s.path+" refused") || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %v, want unavailable, naming %s and %q", err, s.path, tc.want)
				}
			}
			if s.watch == nil {
				return
			}
			conns := s.watch.connections(t)
			if len(conns) != s.conns {
				t.Errorf("the listener saw connections %q, want %d", conns, s.conns)
			}
			for _, c := range conns {
				if c != sent {
					t.Errorf("the listener saw %s, want %s", c, sent)
				}
			}
		})
	}
}

// peerOf is the daemonPeer of process pid run as uid.
func peerOf(t *testing.T, pid int, uid uint32) daemonPeer {
	t.Helper()
	st, err := startTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	return daemonPeer{UID: uid, Pid: pid, StartTime: st}
}

// symlinkAs makes link point at target, the link of uid, as the tenant's
// user would.
func symlinkAs(t *testing.T, target, link string, uid uint32) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(link, int(uid), int(uid)); err != nil {
		t.Fatal(err)
	}
}

// asUser runs the shell script as tn's user, as a tenant that broke out
// to its own uid would.
func asUser(t *testing.T, tn testTenant, script string) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-euc", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: tn.user.UID, Gid: tn.user.GID}}
	cmd.Dir = "/"
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as %s: %s: %v: %s", tn.name, script, err, out)
	}
}

// swap is how a test replaces a tenant's socket at path, after the
// tenant's user moved it to path.real. It returns the listener that must
// hear nothing, if any, and how many (empty) connections it may see.
type swap struct {
	name string
	put  func(t *testing.T, tn testTenant, path string) (*listener, int)
	want string
}

// swaps are the replacements of a tenant's socket each test refuses:
// other is a socket root listens on elsewhere (the shared containerd's).
func swaps(other string) []swap {
	return []swap{
		{"symlink-to-shared", func(t *testing.T, tn testTenant, path string) (*listener, int) {
			asUser(t, tn, fmt.Sprintf("ln -s %q %q", other, path))
			return nil, 0
		}, "it is a symbolic link"},
		{"symlink-to-root-listener", func(t *testing.T, tn testTenant, path string) (*listener, int) {
			l := listenAs(t, filepath.Join(base, "root-"+tn.name+".sock"), 0, 0)
			t.Cleanup(func() { os.Remove(l.path) })
			asUser(t, tn, fmt.Sprintf("ln -s %q %q", l.path, path))
			return l, 0
		}, "it is a symbolic link"},
		{"root-listener", func(t *testing.T, tn testTenant, path string) (*listener, int) {
			return listenAs(t, path, 0, 0), 0
		}, "it is a socket of uid 0"},
		{"tenant-listener", func(t *testing.T, tn testTenant, path string) (*listener, int) {
			return listenAs(t, path, tn.user.UID, tn.user.GID), 1
		}, "its listener, process"},
		{"directory", func(t *testing.T, tn testTenant, path string) (*listener, int) {
			asUser(t, tn, fmt.Sprintf("mkdir %q", path))
			return nil, 0
		}, "it is a directory"},
		{"regular-file", func(t *testing.T, tn testTenant, path string) (*listener, int) {
			asUser(t, tn, fmt.Sprintf(": >%q", path))
			return nil, 0
		}, "it is a regular file"},
	}
}

// checkRefused checks err refuses the socket at path saying want, and
// that l, if any, saw conns connections and not a byte.
func checkRefused(t *testing.T, err error, path, want string, l *listener, conns int) {
	t.Helper()
	if err == nil || sdk.CodeOf(err) != sdk.CodeUnavailable || !strings.Contains(err.Error(), "socket "+path+" refused") || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want unavailable, refusing %s: %q", err, path, want)
	}
	if l == nil {
		return
	}
	got := l.connections(t)
	if len(got) != conns {
		t.Errorf("the other listener saw connections %q, want %d", got, conns)
	}
	for _, c := range got {
		if c != "conn 0" {
			t.Errorf("the other listener was sent something: %s", c)
		}
	}
}

// TestDaemonSocketSwapped replaces, as the tenant's user, the socket of
// its running daemon: each replacement is refused, naming the socket and
// what is wrong, and tells another listener nothing; the daemon, its
// socket put back, serves again.
func TestDaemonSocketSwapped(t *testing.T) {
	ctx := context.Background()
	tn := newTenant(t)
	r := perTenant(t, tn)
	tn = prepare(t, r, tn)
	td, err := decodeTenant(tn.handle)
	if err != nil {
		t.Fatal(err)
	}
	if td.UID != tn.user.UID {
		t.Fatalf("the tenant handle's uid %d, want %d", td.UID, tn.user.UID)
	}
	sock := td.Address
	for _, tc := range swaps(env.Address) {
		t.Run(tc.name, func(t *testing.T) {
			asUser(t, tn, fmt.Sprintf("mv %q %q.real", sock, sock))
			l, conns := tc.put(t, tn, sock)
			// A new client dials: the one cached was checked when made.
			r.dropClient(sock)
			_, _, err := r.connect(ctx, sock, td.peer())
			checkRefused(t, err, sock, tc.want, l, conns)
			if r.serving(ctx, td) {
				t.Error("serving through the replacement")
			}
			asUser(t, tn, fmt.Sprintf("rm -rf %q && mv %q.real %q", sock, sock, sock))
			cctx, c, err := r.connect(ctx, sock, td.peer())
			if err != nil {
				t.Fatalf("the daemon's own socket put back: %v", err)
			}
			if ok, err := c.IsServing(cctx); !ok || err != nil {
				t.Errorf("the daemon does not serve: %v", err)
			}
		})
	}

	// A client's redial is checked as its first dial was.
	cctx, c, err := r.connect(ctx, sock, td.peer())
	if err != nil {
		t.Fatal(err)
	}
	asUser(t, tn, fmt.Sprintf("mv %q %q.real", sock, sock))
	l := listenAs(t, sock, tn.user.UID, tn.user.GID)
	err = c.Reconnect()
	if err == nil || !strings.Contains(err.Error(), "socket "+sock+" refused: its listener, process") {
		t.Errorf("redial to a listener of the tenant's: %v", err)
	}
	if got := l.connections(t); len(got) != 1 || got[0] != "conn 0" {
		t.Errorf("the tenant's listener saw %q, want one connection and not a byte", got)
	}
	asUser(t, tn, fmt.Sprintf("rm %q && mv %q.real %q", sock, sock, sock))
	if err := c.Reconnect(); err != nil {
		t.Fatalf("redial to the daemon: %v", err)
	}
	if ok, err := c.IsServing(cctx); !ok || err != nil {
		t.Errorf("the daemon does not serve after the redial: %v", err)
	}
}

// TestDecodeHandlePeer refuses an instance handle of a per-tenant daemon
// that does not say who must listen on its socket, and a shared one that
// does.
func TestDecodeHandlePeer(t *testing.T) {
	daemon := daemonSocket("/home/alice/" + daemonDirName)
	good := handleData{ID: "alice.web", Namespace: "kigumi", RunDir: "/run/x", Daemon: daemon, LogDir: rootlessLogDir(daemon, "alice.web"),
		Peer: &daemonPeer{UID: 1001, Pid: 4242, StartTime: 7}}
	for _, tc := range []struct {
		name string
		edit func(*handleData)
		ok   bool
	}{
		{"per-tenant", func(*handleData) {}, true},
		{"shared", func(d *handleData) { d.Daemon, d.LogDir, d.Peer = "", "", nil }, true},
		{"legacy-no-peer", func(d *handleData) { d.Peer = nil }, true},
		{"run-dir-no-peer", func(d *handleData) { d.Peer, d.TenantRunDir = nil, "/run/t" }, false},
		{"relative-run-dir", func(d *handleData) { d.TenantRunDir = "run/t" }, false},
		{"root-peer", func(d *handleData) { d.Peer.UID = 0 }, false},
		{"init-peer", func(d *handleData) { d.Peer.Pid = 1 }, false},
		{"shared-with-peer", func(d *handleData) { d.Daemon, d.LogDir = "", "" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := good
			p := *good.Peer
			d.Peer = &p
			tc.edit(&d)
			h, err := d.encode()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeHandle(h); (err == nil) != tc.ok {
				t.Errorf("decode %+v: %v", d, err)
			}
		})
	}
}

// TestSlirpSocketSwapped replaces, as the tenant's user, the API socket
// of a per-tenant container's slirp4netns: Recover, which lists and adds
// its published ports there, refuses each replacement and tells another
// listener nothing; with the socket put back it recovers the container.
func TestSlirpSocketSwapped(t *testing.T) {
	ctx := context.Background()
	pt := newTenant(t)
	r := newRuntime(t, slirpConfig(nil, pt))
	pt = prepare(t, r, pt)
	h, _ := start(t, r, pt, instance{name: "web", settings: netSettings(outboundNone, 8080), args: probeArgs()})
	s := slirpOf(t, h)
	for _, tc := range swaps(env.Address) {
		t.Run(tc.name, func(t *testing.T) {
			asUser(t, pt, fmt.Sprintf("mv %q %q.real", s.Socket, s.Socket))
			l, conns := tc.put(t, pt, s.Socket)
			_, err := r.Recover(ctx, h)
			checkRefused(t, err, s.Socket, tc.want, l, conns)
			asUser(t, pt, fmt.Sprintf("rm -rf %q && mv %q.real %q", s.Socket, s.Socket, s.Socket))
			if _, err := r.Recover(ctx, h); err != nil {
				t.Fatalf("Recover with the socket put back: %v", err)
			}
			var list struct {
				Entries []hostfwd `json:"entries"`
			}
			if err := slirpCall(ctx, s, pt.user.UID, map[string]any{"execute": "list_hostfwd"}, &list); err != nil || len(list.Entries) != 1 {
				t.Errorf("list_hostfwd: %+v, %v", list, err)
			}
		})
	}
}

// TestRemoveTenantSocket checks that root removes a slirp4netns socket
// only where the path leads through real directories: a directory the
// tenant swapped for a symbolic link to another (another tenant's daemon
// directory) loses nothing.
func TestRemoveTenantSocket(t *testing.T) {
	tests := []struct {
		name string
		// setup makes the tree below base and returns the path to
		// remove and the file that must be gone (gone) or kept (kept).
		setup func(t *testing.T, base string) (path, gone, kept string)
	}{
		{"a socket in a real directory", func(t *testing.T, base string) (string, string, string) {
			p := filepath.Join(base, "d", "s.sock")
			mkdirs(t, filepath.Dir(p))
			bindSocket(t, p)
			return p, p, ""
		}},
		{"a directory swapped for a link to another's", func(t *testing.T, base string) (string, string, string) {
			other := filepath.Join(base, "other", "s.sock")
			mkdirs(t, filepath.Dir(other))
			bindSocket(t, other)
			if err := os.Symlink(filepath.Dir(other), filepath.Join(base, "d")); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(base, "d", "s.sock"), "", other
		}},
		{"a regular file in its place", func(t *testing.T, base string) (string, string, string) {
			p := filepath.Join(base, "d", "s.sock")
			mkdirs(t, filepath.Dir(p))
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return p, "", p
		}},
		{"nothing there", func(t *testing.T, base string) (string, string, string) {
			return filepath.Join(base, "d", "s.sock"), "", ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, gone, kept := tt.setup(t, t.TempDir())
			if err := removeTenantSocket(path); err != nil {
				t.Fatalf("removeTenantSocket: %v", err)
			}
			if gone != "" {
				if _, err := os.Lstat(gone); !os.IsNotExist(err) {
					t.Errorf("%s is still there (%v)", gone, err)
				}
			}
			if kept != "" {
				if _, err := os.Lstat(kept); err != nil {
					t.Errorf("%s was removed: %v", kept, err)
				}
			}
		})
	}
}

// mkdirs makes dir and its parents.
func mkdirs(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

// bindSocket binds a unix socket at path and leaves it there.
func bindSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
}

// TestOpenMadeDir checks what root writes a new daemon's files through: the
// directory it made, and not one the tenant's user swapped in for it (a
// symlink to /etc, say, or a directory of its own).
func TestOpenMadeDir(t *testing.T) {
	tests := []struct {
		name string
		// setup makes the directory at p; target is a directory that
		// must get no file.
		setup  func(t *testing.T, p, target string)
		wantOK bool
	}{
		{"root's new directory", func(t *testing.T, p, _ string) { mkdirMode(t, p, 0o700) }, true},
		{"a symlink to another directory", func(t *testing.T, p, target string) {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"a directory of the tenant's", func(t *testing.T, p, _ string) {
			mkdirMode(t, p, 0o700)
			if err := os.Chown(p, 61234, 61234); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"a directory open to others", func(t *testing.T, p, _ string) { mkdirMode(t, p, 0o755) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			p, target := filepath.Join(base, "daemon"), filepath.Join(base, "etc")
			mkdirMode(t, target, 0o755)
			tt.setup(t, p, target)
			fd, err := openMadeDir(p)
			if (err == nil) != tt.wantOK {
				t.Fatalf("openMadeDir: %v, want ok %v", err, tt.wantOK)
			}
			if err != nil {
				return
			}
			defer syscall.Close(fd)
			f, err := createIn(fd, "containerd.toml", 0o644)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
			if _, err := createIn(fd, "containerd.toml", 0o644); err == nil {
				t.Error("createIn made a file that was there already")
			}
			if _, err := os.Stat(filepath.Join(p, "containerd.toml")); err != nil {
				t.Error(err)
			}
			if entries, _ := os.ReadDir(target); len(entries) != 0 {
				t.Errorf("the other directory got %d entries", len(entries))
			}
		})
	}
}

// mkdirMode makes the directory p with exactly mode.
func mkdirMode(t *testing.T, p string, mode os.FileMode) {
	t.Helper()
	if err := os.Mkdir(p, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

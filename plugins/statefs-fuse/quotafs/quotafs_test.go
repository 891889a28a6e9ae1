package quotafs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/fusemount"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/merkle"
)

// The tenant's uids (its user and a mapped container uid), a neighbour's,
// and the tenant's group.
const (
	tenant    = 61001
	container = 161001
	neighbour = 61002
	group     = 61001
)

// mounted is a mounted filesystem of a test.
type mounted struct {
	fs      *FS
	mnt     string
	backing string
}

// mount mounts a filesystem over a new backing directory owned by the
// tenant; its directories are reachable by every uid.
func mount(t testing.TB, maxBytes, maxEntries int64, uids ...uint32) mounted {
	t.Helper()
	return mountWith(t, Config{UIDs: uids, MaxBytes: maxBytes, MaxEntries: maxEntries}, nil)
}

// mountWith mounts a filesystem of cfg over a new backing directory owned
// by cfg.UIDs[0], after fill (when not nil) has put files in it.
func mountWith(t testing.TB, cfg Config, fill func(backing string)) mounted {
	t.Helper()
	uids := cfg.UIDs
	base, err := os.MkdirTemp("", "sf-quotafs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	m := mounted{mnt: filepath.Join(base, "mnt"), backing: filepath.Join(base, "data")}
	for _, d := range []string{m.mnt, m.backing} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(m.backing, int(uids[0]), group); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m.backing, 0o755); err != nil {
		t.Fatal(err)
	}
	if fill != nil {
		fill(m.backing)
	}
	cfg.Backing = m.backing
	m.fs, err = Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := m.fs.Mount(m.mnt)
	if err != nil {
		t.Fatal(err)
	}
	probePoll(t, m.mnt)
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		srv.Wait()
		m.fs.Close()
	})
	return m
}

// probePoll makes the kernel learn, before this test process opens a file
// on the mount it serves itself, that the server answers no poll: Go's
// netpoller registers every file it opens with epoll, which sends the
// mount a POLL from inside the runtime, where a stop-the-world then waits
// for it while the server's goroutines wait for the world (CI: a test
// hung 20 minutes in epoll_ctl). Mount skips go-fuse's probe (it mounts
// /dev/fd/N); the helpers that serve real mounts never touch their own.
// The probe file is go-fuse's, answered by its server.
func probePoll(t testing.TB, mnt string) {
	t.Helper()
	fd, err := unix.Open(filepath.Join(mnt, ".go-fuse-epoll-hack"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("poll probe: %v", err)
	}
	defer unix.Close(fd)
	_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
}

func TestAccessOnlyForTheTenant(t *testing.T) {
	m := mount(t, 1<<20, 100, tenant, container)
	if got := as1(t, tenant, group, m.mnt, "write:f:5"); got != "ok" {
		t.Fatalf("tenant write: %s", got)
	}
	// Even with every mode bit open, another uid is refused.
	if got := as1(t, tenant, group, m.mnt, "chmod:.:0777"); got != "ok" {
		t.Fatal(got)
	}
	if got := as1(t, container, container, m.mnt, "ls:."); got != "1" {
		t.Errorf("container uid ls: %s", got)
	}
	if got := as1(t, tenant, group, m.mnt, "chmod:f:0666"); got != "ok" {
		t.Fatal(got)
	}
	for _, op := range []string{"read:f", "write:f:1", "write:g:1", "ls:.", "stat:f", "mkdir:d:0777", "unlink:f"} {
		if got := as1(t, neighbour, neighbour, m.mnt, op); got != "EACCES" {
			t.Errorf("neighbour %s: %s, want EACCES", op, got)
		}
	}
	// The container uid and root get in.
	if got := as1(t, container, container, m.mnt, "read:f"); got != "xxxxx" {
		t.Errorf("container uid read: %q", got)
	}
	if b, err := os.ReadFile(filepath.Join(m.mnt, "f")); err != nil || string(b) != "xxxxx" {
		t.Errorf("root read: %q, %v", b, err)
	}
}

func TestOwnership(t *testing.T) {
	m := mount(t, 1<<20, 100, tenant, container)
	got := as(t, tenant, group, m.mnt, "write:f:1", "stat:f", "mkdir:d:0750", "stat:d", "symlink:f:l", "stat:l",
		"chmod:d:02770", "mkdir:d/sub:0700", "stat:d/sub")
	want := []string{"ok", "100644 61001:61001 1", "ok", "40750 61001:61001", "ok", "120777 61001:61001 1",
		"ok", "ok", "42700 61001:61001"}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("op %d: %q, want %q", i, got[i], want[i])
		}
	}
	// The container uid makes files of its own, in the group of the
	// set-group-ID directory.
	if err := unix.Chmod(filepath.Join(m.mnt, "d"), 0o2777); err != nil {
		t.Fatal(err)
	}
	got = as(t, container, container, m.mnt, "stat:d", "write:d/c:1", "stat:d/c", "chown:f:161001:161001", "chmod:f:0777")
	if want := []string{"42777 61001:61001 4096", "ok", "100644 161001:61001 1", "EPERM", "EPERM"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("container ops %q, want %q", got, want)
	}
}

func TestSetIDCleared(t *testing.T) {
	m := mount(t, 1<<20, 100, tenant, container)
	f := filepath.Join(m.mnt, "f")
	reset := func(mode uint32) {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(f, tenant, group); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(f, mode); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		mode uint32
		uid  uint32
		op   string
		want string
	}{
		{"write by non-owner", 0o6777, container, "write:f:1", "100777 61001:61001 2"},
		{"write by non-owner, SGID without group exec", 0o6766, container, "write:f:1", "102766 61001:61001 2"},
		{"truncate by non-owner", 0o6777, container, "truncate:f:0", "100777 61001:61001 0"},
		{"chown by owner", 0o6750, tenant, "chown:f:-1:61001", "100750 61001:61001 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reset(tt.mode)
			if got := as1(t, tt.uid, tt.uid, m.mnt, tt.op); got != "ok" {
				t.Fatalf("%s: %s", tt.op, got)
			}
			if got := as1(t, tenant, group, m.mnt, "stat:f"); got != tt.want {
				t.Errorf("after %s: %s, want %s", tt.op, got, tt.want)
			}
		})
	}
	// Root chowning a set-uid file clears it too.
	reset(0o4755)
	if err := os.Chown(f, container, group); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(f); fi.Mode()&os.ModeSetuid != 0 {
		t.Errorf("mode %v after root's chown, want SUID cleared", fi.Mode())
	}
}

func TestRenameRules(t *testing.T) {
	m := mount(t, 1<<20, 100, tenant, container)
	// tmp: sticky, world-writable; its entries owned by the tenant.
	root := func(ops ...string) {
		t.Helper()
		for i, got := range as(t, 0, 0, m.mnt, ops...) {
			if got != "ok" {
				t.Fatalf("setup %s: %s", ops[i], got)
			}
		}
	}
	root("mkdir:tmp:01777", "mkdir:ro:0755", "mkdir:rw:0777", "mkdir:full:0777", "write:full/x:1", "mkdir:empty:0777")
	root("chown:ro:61001:61001", "chown:rw:61001:61001", "chown:full:61001:61001")
	if got := as(t, tenant, group, m.mnt, "write:tmp/mine:1", "write:ro/f:1", "mkdir:rw/d:0755", "chmod:ro:0555"); strings.Join(got, " ") != "ok ok ok ok" {
		t.Fatal(got)
	}
	tests := []struct {
		name string
		uid  uint32
		op   string
		want string
	}{
		{"out of a sticky dir by non-owner", container, "rename:tmp/mine:rw/stolen", "EPERM"},
		{"from a read-only parent", tenant, "rename:ro/f:rw/f", "EACCES"},
		{"into a read-only parent", tenant, "rename:rw/d:ro/d", "EACCES"},
		{"a dir without write on it to a new parent", container, "rename:rw/d:tmp/d", "EACCES"},
		{"over a non-empty dir", tenant, "rename:rw/d:full", "ENOTEMPTY"},
		{"a dir over a file", tenant, "rename:rw/d:full/x", "ENOTDIR"},
		{"into itself", tenant, "rename:rw:rw/d/in", "EINVAL"},
		{"over an empty dir", 0, "rename:rw/d:empty", "ok"},
		{"out of a sticky dir by owner", tenant, "rename:tmp/mine:rw/mine", "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := as1(t, tt.uid, tt.uid, m.mnt, tt.op); got != tt.want {
				t.Errorf("%s: %s, want %s", tt.op, got, tt.want)
			}
		})
	}
	if u := m.fs.Usage(); u.Entries != 8 {
		t.Errorf("entries after renames %d, want 8", u.Entries)
	}
}

func TestLongPaths(t *testing.T) {
	m := mount(t, 1<<20, 100, tenant)
	name := strings.Repeat("n", unix.NAME_MAX)
	var dirs []string
	p := ""
	for len(p)+2*(unix.NAME_MAX+1) < unix.PathMax {
		p = filepath.Join(p, name)
		dirs = append(dirs, "mkdir:"+p+":0700")
	}
	file := filepath.Join(p, strings.Repeat("f", unix.PathMax-1-len(p)-1))
	ops := append(dirs, "write:"+file+":3", "read:"+file, "write:"+name+"x:1")
	got := as(t, tenant, group, m.mnt, ops...)
	for i, op := range ops[:len(dirs)+1] {
		if got[i] != "ok" {
			t.Fatalf("%.40s...: %s", op, got[i])
		}
	}
	if got[len(dirs)+1] != "xxx" {
		t.Errorf("read of a %d-byte path: %q", len(file), got[len(dirs)+1])
	}
	if got[len(dirs)+2] != "ENAMETOOLONG" {
		t.Errorf("a name of NAME_MAX+1 bytes: %s", got[len(dirs)+2])
	}
	if backing := len(m.backing) + 1 + len(file); backing <= unix.PathMax {
		t.Fatalf("the backing path is only %d bytes", backing)
	}
}

func TestLinksTruncateFallocateTimes(t *testing.T) {
	m := mount(t, 1<<20, 100, tenant)
	got := as(t, tenant, group, m.mnt,
		"write:a:3", "link:a:b", "write:b:2", "read:a", "stat:a", "unlink:a", "read:b",
		"symlink:loop:loop", "read:loop", "symlink:b:s", "read:s",
		"truncate:b:10", "stat:b", "truncate:b:1", "read:b",
		"fallocate:b:4096", "stat:b")
	want := []string{"ok", "ok", "ok", "xxxxx", "100644 61001:61001 5", "ok", "xxxxx",
		"ok", "ELOOP", "ok", "xxxxx",
		"ok", "100644 61001:61001 10", "ok", "x",
		"ok", "100644 61001:61001 4096"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("op %d: %q, want %q", i, got[i], want[i])
		}
	}
	f := filepath.Join(m.mnt, "b")
	before, err := os.Stat(f)
	if err != nil {
		t.Fatal(err)
	}
	old := before.ModTime().Add(-3600e9)
	if err := os.Chtimes(f, old, old); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(f, &st); err != nil || st.Mtim.Sec != old.Unix() {
		t.Fatalf("mtime after utimes %d, want %d (%v)", st.Mtim.Sec, old.Unix(), err)
	}
	ctime := st.Ctim
	if got := as1(t, tenant, group, m.mnt, "write:b:1"); got != "ok" {
		t.Fatal(got)
	}
	if err := unix.Stat(f, &st); err != nil || st.Mtim.Sec <= old.Unix() || st.Ctim.Nano() < ctime.Nano() {
		t.Errorf("after a write mtime %v ctime %v, want both moved on from %v, %v (%v)", st.Mtim, st.Ctim, old.Unix(), ctime, err)
	}
}

func TestByteQuota(t *testing.T) {
	const quota = 16 << 20
	m := mount(t, quota, 100, tenant)
	other := mount(t, quota, 100, neighbour)
	// A 3 GiB write stops at the quota.
	if got := as1(t, tenant, group, m.mnt, "fill:big:3221225472"); got != fmt.Sprintf("%d ENOSPC", quota) {
		t.Errorf("3 GiB write: %s, want %d ENOSPC", got, quota)
	}
	if u := m.fs.Usage(); u.Bytes != quota {
		t.Errorf("usage %+v", u)
	}
	for _, op := range []string{"write:small:1", "truncate:big:16777217", "symlink:target:l"} {
		if got := as1(t, tenant, group, m.mnt, op); got != "ENOSPC" {
			t.Errorf("%s when full: %s", op, got)
		}
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(m.mnt, &sfs); err != nil || sfs.Bavail != 0 || sfs.Blocks != quota/4096 {
		t.Errorf("statfs when full: %d of %d blocks free (%v)", sfs.Bavail, sfs.Blocks, err)
	}
	// The neighbour writes on.
	if got := as1(t, neighbour, neighbour, other.mnt, "fill:f:8388608"); got != "8388608 ok" {
		t.Errorf("neighbour write: %s", got)
	}
	// Deleting gives room back.
	if got := as(t, tenant, group, m.mnt, "truncate:big:8388608", "fill:again:8388608", "unlink:big", "fill:more:8388608"); strings.Join(got, "|") != "ok|8388608 ok|ok|8388608 ok" {
		t.Errorf("after freeing: %q", got)
	}
	// An unlinked file still open is counted until closed.
	fd, err := unix.Open(filepath.Join(m.mnt, "more"), unix.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Unlink(filepath.Join(m.mnt, "more")); err != nil {
		t.Fatal(err)
	}
	if u := m.fs.Usage(); u.Bytes != 16<<20 {
		t.Errorf("usage with an unlinked open file %d", u.Bytes)
	}
	if _, err := unix.Pwrite(fd, make([]byte, 1<<20), 8<<20); err != unix.ENOSPC {
		t.Errorf("write to an unlinked open file past the quota: %v", err)
	}
	unix.Close(fd)
	// The kernel sends the release after close returns.
	for i := 0; m.fs.Usage().Bytes != 8<<20 && i < 1000; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if u := m.fs.Usage(); u.Bytes != 8<<20 {
		t.Errorf("usage after close %d, want 8 MiB", u.Bytes)
	}
}

func TestByteQuotaParallel(t *testing.T) {
	const quota = 8 << 20
	m := mount(t, quota, 100, tenant)
	var total int64
	for _, got := range parallel(t, 8, tenant, group, m.mnt, func(i int) string { return fmt.Sprintf("fill:f%d:4194304", i) }) {
		var n int64
		var res string
		fmt.Sscanf(got, "%d %s", &n, &res)
		total += n
	}
	if total != quota {
		t.Errorf("8 writers wrote %d bytes in all, want the quota %d", total, quota)
	}
	var sum int64
	filepath.Walk(m.backing, func(_ string, fi os.FileInfo, _ error) error {
		if fi.Mode().IsRegular() {
			sum += fi.Size()
		}
		return nil
	})
	if u := m.fs.Usage(); sum != quota || u.Bytes != quota {
		t.Errorf("backing holds %d bytes, usage %d; want %d", sum, u.Bytes, quota)
	}
}

func TestEntryQuota(t *testing.T) {
	const limit = 256
	m := mount(t, 1<<20, limit, tenant)
	other := mount(t, 1<<20, limit, neighbour)
	if got := as(t, tenant, group, m.mnt, "mkdir:d:0700"); got[0] != "ok" {
		t.Fatal(got)
	}
	if got := as1(t, tenant, group, m.mnt, "files:d/f:200000"); got != fmt.Sprintf("%d ENOSPC", limit-1) {
		t.Errorf("200,000 files: %s, want %d ENOSPC", got, limit-1)
	}
	for _, op := range []string{"mkdir:e:0700", "symlink:x:l", "link:d/f0:h", "rename:d/f0:d/f1"} {
		want := "ENOSPC"
		if strings.HasPrefix(op, "rename") {
			want = "ok" // a rename over an entry frees one
		}
		if got := as1(t, tenant, group, m.mnt, op); got != want {
			t.Errorf("%s when full: %s, want %s", op, got, want)
		}
	}
	if got := as1(t, neighbour, neighbour, other.mnt, "files:f:10"); got != "10 ok" {
		t.Errorf("neighbour: %s", got)
	}
	// Parallel creators stop at the limit together.
	var rm []string
	for i := range 40 {
		rm = append(rm, fmt.Sprintf("unlink:d/f%d", i+2))
	}
	as(t, tenant, group, m.mnt, rm...)
	made := 0
	for _, got := range parallel(t, 4, tenant, group, m.mnt, func(i int) string { return fmt.Sprintf("files:d/p%d-:20", i) }) {
		var n int
		fmt.Sscanf(got, "%d", &n)
		made += n
	}
	// 40 names were freed, and one by the rename.
	if u := m.fs.Usage(); made != 41 || u.Entries != limit {
		t.Errorf("parallel creators made %d files, usage %+v; want 41 and the limit", made, u)
	}
}

func TestMerkleRoot(t *testing.T) {
	m := mount(t, 1<<20, 1000, tenant)
	twin := mount(t, 1<<20, 1000, neighbour)
	ops := []string{"mkdir:d:0755", "write:d/f:70000", "write:odd\x01\xff name:3", "symlink:loop:loop", "symlink:../d:d/up", "link:d/f:hard", "mkdir:d/e:0700"}
	for i, got := range as(t, tenant, group, m.mnt, ops...) {
		if got != "ok" {
			t.Fatalf("%s: %s", ops[i], got)
		}
	}
	for i, got := range as(t, neighbour, neighbour, twin.mnt, ops...) {
		if got != "ok" {
			t.Fatalf("twin %s: %s", ops[i], got)
		}
	}
	check := func(step string) merkle.Digest {
		t.Helper()
		got, err := m.fs.Root()
		if err != nil {
			t.Fatal(err)
		}
		scan, err := merkle.Scan(m.backing)
		if err != nil {
			t.Fatal(err)
		}
		if got != scan {
			t.Errorf("%s: incremental root %x, fresh scan %x", step, got, scan)
		}
		return got
	}
	first := check("made")
	if tw, err := twin.fs.Root(); err != nil || tw != first {
		t.Errorf("twin root %x, want %x (%v)", tw, first, err)
	}
	steps := []struct{ name, op string }{
		{"append to a block", "write:d/f:1"},
		{"truncate", "truncate:hard:10"},
		{"chmod", "chmod:d/e:0750"},
		{"chmod a file", "chmod:d/f:0600"},
		{"rename a dir", "rename:d/e:e2"},
		{"remove", "unlink:odd\x01\xff name"},
		{"write a hard link", "write:hard:5"},
	}
	prev := first
	for _, s := range steps {
		if got := as1(t, tenant, group, m.mnt, s.op); got != "ok" {
			t.Fatalf("%s: %s", s.op, got)
		}
		r := check(s.name)
		if r == prev {
			t.Errorf("%s left the root unchanged", s.name)
		}
		prev = r
	}
}

// TestInodeNumbersFromTheBacking: inode numbers come straight from the
// backing filesystem, and go-fuse keeps its own node IDs, so a backing root
// whose inode is 1 (FUSE's root node ID) and an entry with the very same
// inode number and type do not collide: each stays itself.
func TestInodeNumbersFromTheBacking(t *testing.T) {
	base := t.TempDir()
	mnt, backing := filepath.Join(base, "mnt"), filepath.Join(base, "data")
	for _, d := range []string{mnt, backing} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// A fresh tmpfs's root has inode 1: one as the backing root, one
	// mounted on an entry inside it.
	inner := filepath.Join(backing, "inner")
	for _, d := range []string{backing, inner} {
		if d == inner {
			if err := os.Mkdir(inner, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Mount("tmpfs", d, "tmpfs", 0, "size=64k,mode=0755"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Unmount(d, unix.MNT_DETACH) })
	}
	if err := os.WriteFile(filepath.Join(inner, "hidden"), []byte("inner"), 0o644); err != nil {
		t.Fatal(err)
	}
	fsys, err := Open(Config{Backing: backing, UIDs: []uint32{tenant}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fsys.Mount(mnt)
	if err != nil {
		t.Fatal(err)
	}
	probePoll(t, mnt)
	defer func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		srv.Wait()
		fsys.Close()
	}()
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("outer"), 0o644); err != nil {
		t.Fatal(err)
	}
	var root, entry unix.Stat_t
	if err := unix.Lstat(mnt, &root); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(mnt, "inner"), &entry); err != nil {
		t.Fatal(err)
	}
	if root.Ino != 1 || entry.Ino != 1 || entry.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Fatalf("root inode %d, entry inode %d mode %o: the test needs both 1 and a directory", root.Ino, entry.Ino, entry.Mode)
	}
	// The entry is not the root: opening it reaches the backing entry,
	// another filesystem, which the mount does not cross.
	if names, err := os.ReadDir(filepath.Join(mnt, "inner")); !errors.Is(err, syscall.EXDEV) {
		t.Errorf("listing the entry with the root's inode number: %v, %v; want EXDEV", names, err)
	}
	// And the root is still the root.
	names, err := os.ReadDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 2 || names[0].Name() != "f" || names[1].Name() != "inner" {
		t.Errorf("root lists %v, want f and inner", names)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(b) != "outer" {
		t.Errorf("root file: %q, %v", b, err)
	}
}

// TestNoFUSEDescriptorLeaks: a program started while a filesystem is
// mounted and served does not inherit its /dev/fuse descriptor (which
// would keep the connection open after the server died), and the mount is
// found in mountinfo by the id and device Mount reports.
func TestNoFUSEDescriptorLeaks(t *testing.T) {
	m := mount(t, 1<<20, 100, tenant)
	if err := os.WriteFile(filepath.Join(m.mnt, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The server holds /dev/fuse itself.
	own := 0
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if l, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); l == "/dev/fuse" {
			own++
		}
	}
	if own == 0 {
		t.Fatal("this process holds no /dev/fuse descriptor: the check below would prove nothing")
	}
	out, err := exec.Command("/bin/sh", "-c", `for f in /proc/self/fd/*; do readlink "$f"; done; true`).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if bytes.Contains(out, []byte("/dev/fuse")) {
		t.Errorf("a child process inherited /dev/fuse:\n%s", out)
	}
	ms, err := fusemount.At(m.mnt)
	if err != nil || len(ms) != 1 || ms[0].FSType != "fuse.kigumi" || ms[0].Source != "kigumi-state" {
		t.Fatalf("mounts at %s: %+v, %v", m.mnt, ms, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(m.mnt, &st); err != nil || st.Dev != ms[0].Dev() {
		t.Errorf("mount point device %d (%v), mountinfo's %d", st.Dev, err, ms[0].Dev())
	}
}

// TestWriteOnlyCoherent checks that what a write-only open (which goes to
// the server without the kernel's page cache, FOPEN_DIRECT_IO) writes is
// what every reader sees next: an open reader that cached the old bytes,
// its shared mapping, a new open, and an O_APPEND writer.
func TestWriteOnlyCoherent(t *testing.T) {
	m := mount(t, 1<<20, 100, tenant)
	path := filepath.Join(m.mnt, "f")
	if err := os.WriteFile(path, bytes.Repeat([]byte("a"), 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	rfd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rfd)
	mapped, err := unix.Mmap(rfd, 0, 8192, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mapped)
	buf := make([]byte, 8192)
	if _, err := unix.Pread(rfd, buf, 0); err != nil || buf[100] != 'a' || mapped[5000] != 'a' {
		t.Fatalf("first read: %q %q %v", buf[100], mapped[5000], err)
	}
	wfd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pwrite(wfd, bytes.Repeat([]byte("b"), 6000), 1000); err != nil {
		t.Fatal(err)
	}
	unix.Close(wfd)
	afd, err := unix.Open(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(afd, []byte("cc")); err != nil {
		t.Fatal(err)
	}
	unix.Close(afd)
	want := append(append(append(bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("b"), 6000)...), bytes.Repeat([]byte("a"), 1192)...), "cc"...)
	tests := []struct {
		name string
		read func() ([]byte, error)
	}{
		{"the open reader", func() ([]byte, error) {
			b := make([]byte, 9000)
			n, err := unix.Pread(rfd, b, 0)
			return b[:n], err
		}},
		{"its mapping", func() ([]byte, error) { return append([]byte(nil), mapped...), nil }},
		{"a new open", func() ([]byte, error) { return os.ReadFile(path) }},
		{"the backing file", func() ([]byte, error) { return os.ReadFile(filepath.Join(m.backing, "f")) }},
	}
	for _, tt := range tests {
		got, err := tt.read()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		w := want
		if tt.name == "its mapping" {
			w = want[:8192]
		}
		if !bytes.Equal(got, w) {
			t.Errorf("%s: %d bytes, first difference at %d; want %d bytes", tt.name, len(got), firstDiff(got, w), len(w))
		}
	}
}

// firstDiff returns the index of the first byte where a and b differ.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestFsyncDirectory checks the steps of write, fsync, rename and fsync
// the directory, which databases take: fsync and fdatasync of a
// directory, the top one and one below, and of a file succeed.
func TestFsyncDirectory(t *testing.T) {
	m := mount(t, 1<<20, 100, tenant)
	sub := filepath.Join(m.mnt, "d")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, final := filepath.Join(sub, "f.tmp"), filepath.Join(sub, "f")
	if err := os.WriteFile(tmp, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{m.mnt, sub, final} {
		for _, sync := range []struct {
			name string
			f    func(int) error
		}{{"fsync", unix.Fsync}, {"fdatasync", unix.Fdatasync}} {
			fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := sync.f(fd); err != nil {
				t.Errorf("%s %s: %v", sync.name, dir, err)
			}
			unix.Close(fd)
		}
	}
}

// TestBlocksOfDirectoriesAndSymlinks checks that a tree of nothing but
// directories, or of symlinks too long to fit in their inode, stops at
// the byte quota by what it takes on disk, not at the entry quota (which
// would let it take as much again as the quota), and that removing one
// gives its block back.
func TestBlocksOfDirectoriesAndSymlinks(t *testing.T) {
	const quota = 256 << 10
	long := strings.Repeat("t", 100)
	tests := []struct {
		name   string
		make   func(p string) error
		remove func(p string) error
	}{
		{"directories", func(p string) error { return os.Mkdir(p, 0o755) }, os.Remove},
		{"long symlinks", func(p string) error { return os.Symlink(long, p) }, os.Remove},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mount(t, quota, 10000, tenant)
			made := 0
			var err error
			for ; made < 10000; made++ {
				if err = tt.make(filepath.Join(m.mnt, fmt.Sprintf("e%d", made))); err != nil {
					break
				}
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("after %d entries: %v, want ENOSPC", made, err)
			}
			if made > quota/4096 {
				t.Errorf("%d entries of a block each fit in %d bytes", made, quota)
			}
			var onDisk int64
			entries, err := os.ReadDir(m.backing)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(m.backing, e.Name()), &st); err != nil {
					t.Fatal(err)
				}
				onDisk += st.Blocks * 512
			}
			if onDisk > quota {
				t.Errorf("the entries take %d bytes on disk, over the quota of %d", onDisk, quota)
			}
			if u := m.fs.Usage(); u.Bytes > quota || u.Entries != int64(made) {
				t.Errorf("usage %+v after %d entries", u, made)
			}
			if err := tt.remove(filepath.Join(m.mnt, "e0")); err != nil {
				t.Fatal(err)
			}
			if err := tt.make(filepath.Join(m.mnt, "again")); err != nil {
				t.Errorf("after removing one: %v", err)
			}
		})
	}
}

// TestFallocateModes checks the fallocate modes the mount takes, against
// the content they leave, the size, the quota and the Merkle root (which
// must match a fresh scan), and those it refuses.
func TestFallocateModes(t *testing.T) {
	const quota = 1 << 20
	const file = 256 << 10
	tests := []struct {
		name      string
		mode      uint32
		off, size int64
		wantErr   error
		wantSize  int64
		// zeroed is the range that reads as zeros afterwards.
		zeroed [2]int64
	}{
		{"punch a hole", unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, 64 << 10, 100 << 10, nil, file, [2]int64{64 << 10, 164 << 10}},
		{"punch past the end", unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, 200 << 10, 1 << 40, nil, file, [2]int64{200 << 10, file}},
		{"zero a range, keeping the size", unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE, 10, 5000, nil, file, [2]int64{10, 5010}},
		{"zero a range past the end, keeping the size", unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE, 200 << 10, 64 << 20, nil, file, [2]int64{200 << 10, file}},
		{"zero a range wholly past the end, keeping the size", unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE, file + 4096, 64 << 20, nil, file, [2]int64{}},
		{"zero a range, growing", unix.FALLOC_FL_ZERO_RANGE, 250 << 10, 20 << 10, nil, 270 << 10, [2]int64{250 << 10, 270 << 10}},
		{"zero a range past the quota", unix.FALLOC_FL_ZERO_RANGE, 0, 2 << 20, syscall.ENOSPC, file, [2]int64{}},
		{"allocate past the end, keeping the size", unix.FALLOC_FL_KEEP_SIZE, 0, 512 << 10, syscall.EOPNOTSUPP, file, [2]int64{}},
		{"collapse a range", unix.FALLOC_FL_COLLAPSE_RANGE, 0, 4096, syscall.EOPNOTSUPP, file, [2]int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mount(t, quota, 100, tenant)
			path := filepath.Join(m.mnt, "f")
			data := bytes.Repeat([]byte("0123456789abcdef"), file/16)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := m.fs.Root(); err != nil { // the tree caches the blocks
				t.Fatal(err)
			}
			fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			err = unix.Fallocate(fd, tt.mode, tt.off, tt.size)
			unix.Close(fd)
			if !errors.Is(err, tt.wantErr) && (err != nil || tt.wantErr != nil) {
				t.Fatalf("fallocate: %v, want %v", err, tt.wantErr)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(got)) != tt.wantSize {
				t.Errorf("size %d, want %d", len(got), tt.wantSize)
			}
			want := append([]byte(nil), data...)
			if int64(len(want)) < tt.wantSize {
				want = append(want, make([]byte, tt.wantSize-int64(len(want)))...)
			}
			clear(want[tt.zeroed[0]:tt.zeroed[1]])
			if !bytes.Equal(got, want) {
				t.Errorf("content differs from the expected at byte %d", firstDiff(got, want))
			}
			if u := m.fs.Usage(); u.Bytes != tt.wantSize {
				t.Errorf("usage %d bytes, want %d", u.Bytes, tt.wantSize)
			}
			// Nothing allocated past the end that the quota would not see.
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(m.backing, "f"), &st); err != nil || st.Blocks*512 > (tt.wantSize+4095)/4096*4096 {
				t.Errorf("the backing file takes %d bytes on disk for %d bytes (%v)", st.Blocks*512, tt.wantSize, err)
			}
			root, err := m.fs.Root()
			if err != nil {
				t.Fatal(err)
			}
			if scan, err := merkle.Scan(m.backing); err != nil || root != scan {
				t.Errorf("root %x, a fresh scan %x (%v)", root, scan, err)
			}
		})
	}
}

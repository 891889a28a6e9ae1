package fstree_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/fstree"
)

// maxRemoverRSS bounds the remover process's peak memory, whatever the tree.
const maxRemoverRSS = 64 << 20

// newOutside makes dir/outside, what a tenant's links point at and removal
// must never touch, and returns its path.
func newOutside(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "outside")
	for _, d := range []string{out, filepath.Join(out, "dir", "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"sentinel": "keep me", "dir/file": "keep me too", "dir/sub/x": "x"} {
		if err := os.WriteFile(filepath.Join(out, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// snapshot describes everything below dir: type, mode, owner, inode flags,
// content or link target (not link counts, which removing a hard link
// lowers).
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		desc := fmt.Sprintf("%v %d:%d flags=%x", fi.Mode(), st.Uid, st.Gid, inodeFlags(p, fi))
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			desc += " " + hex.EncodeToString(sum[:8])
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		}
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// inodeFlags returns the inode flags of a file or directory, else 0.
func inodeFlags(p string, fi fs.FileInfo) uint32 {
	if !fi.IsDir() && !fi.Mode().IsRegular() {
		return 0
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	f, _ := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	return f
}

// The inode flags a test sets, from linux/fs.h.
const (
	immutableFL = 0x10
	appendFL    = 0x20
)

// setFlags sets the inode flags of p, which the test must clear again.
func setFlags(t *testing.T, p string, flags uint32) {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	old, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Fatalf("inode flags of %s: %v", p, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(old|flags)); err != nil {
		t.Fatalf("set inode flags of %s: %v", p, err)
	}
}

// clearAllFlags clears the immutable and append-only flags below dir, so
// that the test's temporary directory can go.
func clearAllFlags(dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || (!d.IsDir() && !d.Type().IsRegular()) {
			return nil
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil
		}
		defer unix.Close(fd)
		if f, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS); err == nil {
			unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(f&^(immutableFL|appendFL)))
		}
		return nil
	})
}

// assertGone fails unless nothing is at p.
func assertGone(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: %v, want it gone", p, err)
	}
}

// assertSame fails unless the two snapshots are equal.
func assertSame(t *testing.T, before, after map[string]string) {
	t.Helper()
	for _, p := range slices.Sorted(maps.Keys(before)) {
		if after[p] != before[p] {
			t.Errorf("outside the tree, %s changed: %q, was %q", p, after[p], before[p])
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("outside the tree, %s appeared: %q", p, after[p])
		}
	}
}

// newTenantTree makes dir/tree owned by a fresh tenant uid and returns its
// path and the uid.
func newTenantTree(t *testing.T, dir string) (string, uint32) {
	t.Helper()
	uid := tenantUID(t)
	tree := filepath.Join(dir, "tree")
	if err := os.Mkdir(tree, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(tree, int(uid), int(uid)); err != nil {
		t.Fatal(err)
	}
	return tree, uid
}

// chainDepth counts the directories named "d" chained below dir.
func chainDepth(t *testing.T, dir string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return n
		}
		fd = next
		n++
	}
}

func TestRemoveAllDeepTenantTree(t *testing.T) {
	const depth = 100_000
	dir := t.TempDir()
	outside := newOutside(t, dir)
	before := snapshot(t, outside)
	tree, uid := newTenantTree(t, dir)
	start := time.Now()
	runHelper(t, "deep", uid, tree, envN+"="+strconv.Itoa(depth), envPath+"="+outside)
	t.Logf("tenant uid %d built %d levels in %v", uid, depth, time.Since(start))
	if got := chainDepth(t, tree); got != depth {
		t.Fatalf("tree is %d levels deep, want %d", got, depth)
	}

	start = time.Now()
	rss := runHelper(t, "remove", 0, "", envPath+"="+tree)
	t.Logf("removed with RLIMIT_NOFILE %d in %v, peak RSS %d KiB", removeFDLimit, time.Since(start), rss>>10)
	assertGone(t, tree)
	assertSame(t, before, snapshot(t, outside))
	if rss > maxRemoverRSS {
		t.Errorf("remover peak RSS %d KiB, want at most %d KiB", rss>>10, maxRemoverRSS>>10)
	}
}

func TestRemoveAllMillionEntries(t *testing.T) {
	const entries = 1_000_000
	// On this host's ext4 one mknod in a huge directory costs 100-500 µs,
	// minutes for a million; a private tmpfs keeps the test short. Removal
	// does the same work on either.
	dir := t.TempDir()
	must(t, unix.Mount("kigumi-fstree-test", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1g,nr_inodes=1100000,mode=0700"))
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	outside := newOutside(t, dir)
	before := snapshot(t, outside)
	tree, uid := newTenantTree(t, dir)
	// The wide directory is one level down, where entries are removed
	// through the second buffer; the top holds a share too.
	wide := filepath.Join(tree, "wide")
	if err := os.Mkdir(wide, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(wide, int(uid), int(uid)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	runHelper(t, "wide", uid, wide, envN+"="+strconv.Itoa(entries))
	runHelper(t, "wide", uid, tree, envN+"=1000")
	t.Logf("tenant uid %d made %d entries in %v", uid, entries+1000, time.Since(start))

	start = time.Now()
	rss := runHelper(t, "remove", 0, "", envPath+"="+tree)
	t.Logf("removed with RLIMIT_NOFILE %d in %v, peak RSS %d KiB", removeFDLimit, time.Since(start), rss>>10)
	assertGone(t, tree)
	assertSame(t, before, snapshot(t, outside))
	if rss > maxRemoverRSS {
		t.Errorf("remover peak RSS %d KiB, want at most %d KiB", rss>>10, maxRemoverRSS>>10)
	}
}

// mkdirChain makes a chain of directories with the given names below dir,
// relative to fds, and returns an fd of the last one.
func mkdirChain(t *testing.T, dir string, names ...string) int {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := unix.Mkdirat(fd, n, 0o755); err != nil {
			t.Fatalf("mkdir %q: %v", n, err)
		}
		next, err := unix.Openat(fd, n, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		fd = next
	}
	return fd
}

// write writes files (path: content) below dir, making their directories.
func write(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		p = filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestRemoveAllHostileShapes(t *testing.T) {
	long := strings.Repeat("n", 255)
	tests := []struct {
		name string
		// build makes the tree at tree; outside is what must survive.
		build func(t *testing.T, tree, outside string)
		// wantErr is set when removal must fail; it still must not touch
		// anything outside.
		wantErr bool
	}{
		{
			name: "nothing there",
			build: func(*testing.T, string, string) {
			},
		},
		{
			name: "a file",
			build: func(t *testing.T, tree, _ string) {
				must(t, os.WriteFile(tree, []byte("x"), 0o000))
			},
		},
		{
			name: "the root is a symlink to a directory outside",
			build: func(t *testing.T, tree, outside string) {
				must(t, os.Symlink(outside, tree))
			},
		},
		{
			name: "symlinks out of the tree",
			build: func(t *testing.T, tree, outside string) {
				write(t, tree, map[string]string{"a/b/f": "x"})
				must(t, os.Symlink(filepath.Join(outside, "sentinel"), filepath.Join(tree, "abs")))
				must(t, os.Symlink(filepath.Join(outside, "dir"), filepath.Join(tree, "dir")))
				must(t, os.Symlink(filepath.Join(outside, "dir"), filepath.Join(tree, "a", "dir")))
				must(t, os.Symlink("../../../outside", filepath.Join(tree, "a", "b", "rel")))
				must(t, os.Symlink("../../outside/dir/file", filepath.Join(tree, "a", "file")))
				must(t, os.Symlink("loop", filepath.Join(tree, "loop")))
				must(t, os.Symlink("/nonexistent", filepath.Join(tree, "dangling")))
			},
		},
		{
			name: "hard links to files outside",
			build: func(t *testing.T, tree, outside string) {
				write(t, tree, map[string]string{"sub/deeper/f": "x"})
				must(t, os.Link(filepath.Join(outside, "sentinel"), filepath.Join(tree, "h")))
				must(t, os.Link(filepath.Join(outside, "dir", "file"), filepath.Join(tree, "sub", "deeper", "h")))
				must(t, os.Chmod(filepath.Join(tree, "sub", "deeper"), 0))
			},
		},
		{
			name: "modes",
			build: func(t *testing.T, tree, _ string) {
				for _, mode := range []os.FileMode{0, 0o100, 0o200, 0o300, 0o400, 0o500, 0o600} {
					d := filepath.Join(tree, "d"+strconv.FormatUint(uint64(mode), 8))
					write(t, d, map[string]string{"f": "x", "sub/f": "y", "sub/sub/f": "z"})
					must(t, os.Chmod(filepath.Join(d, "f"), mode))
					must(t, os.Chmod(filepath.Join(d, "sub", "sub"), mode))
					must(t, os.Chmod(filepath.Join(d, "sub"), mode))
					must(t, os.Chmod(d, mode))
				}
				write(t, tree, map[string]string{"sticky/f": "x", "setid/suid": "x", "setid/sgid": "x"})
				must(t, os.Chmod(filepath.Join(tree, "sticky"), os.ModeSticky|0o777))
				must(t, os.Chmod(filepath.Join(tree, "setid", "suid"), os.ModeSetuid|0o755))
				must(t, os.Chmod(filepath.Join(tree, "setid", "sgid"), os.ModeSetgid|0o755))
				must(t, os.Chmod(filepath.Join(tree, "setid"), os.ModeSetgid|os.ModeSticky))
				must(t, os.Chmod(tree, 0))
			},
		},
		{
			name: "odd names",
			build: func(t *testing.T, tree, _ string) {
				must(t, os.Mkdir(tree, 0o755))
				names := []string{"\n", "\t", " ", "-rf", "*", "\\", "...", "\xff\xfe\x80", "\x1b[2J", long,
					strings.Repeat("\n", 255), ".kigumi-rm-0000000000000000-1"}
				for _, n := range names {
					must(t, os.WriteFile(filepath.Join(tree, n), []byte("x"), 0o644))
					must(t, os.Mkdir(filepath.Join(tree, "dir"+n[:min(len(n), 250)]), 0o755))
					must(t, os.WriteFile(filepath.Join(tree, "dir"+n[:min(len(n), 250)], n), []byte("x"), 0o644))
				}
				// Twenty levels of 255-byte names: past PATH_MAX.
				chain := make([]string, 20)
				for i := range chain {
					chain[i] = long
				}
				fd := mkdirChain(t, tree, append([]string{"chain"}, chain...)...)
				must(t, unix.Mknodat(fd, long, unix.S_IFREG|0o644, 0))
				unix.Close(fd)
			},
		},
		{
			name: "special files",
			build: func(t *testing.T, tree, _ string) {
				must(t, os.MkdirAll(filepath.Join(tree, "locked"), 0o755))
				must(t, unix.Mkfifo(filepath.Join(tree, "fifo"), 0o600))
				must(t, unix.Mkfifo(filepath.Join(tree, "locked", "fifo"), 0))
				l, err := net.Listen("unix", filepath.Join(tree, "sock"))
				must(t, err)
				l.(*net.UnixListener).SetUnlinkOnClose(false)
				l.Close()
				must(t, unix.Mknod(filepath.Join(tree, "socknode"), unix.S_IFSOCK|0o600, 0))
				must(t, unix.Mknod(filepath.Join(tree, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
				must(t, unix.Mknod(filepath.Join(tree, "locked", "loop0"), unix.S_IFBLK|0o600, int(unix.Mkdev(7, 0))))
				must(t, os.Chmod(filepath.Join(tree, "locked"), 0))
			},
		},
		{
			name: "immutable and append-only",
			build: func(t *testing.T, tree, _ string) {
				write(t, tree, map[string]string{
					"i": "x", "a/f": "x", "a/sub/f": "x", "id/f": "x", "x/y/z/f": "x", "x/y/z/g": "x",
				})
				setFlags(t, filepath.Join(tree, "i"), immutableFL)
				setFlags(t, filepath.Join(tree, "a", "sub"), appendFL)
				setFlags(t, filepath.Join(tree, "a"), appendFL)
				setFlags(t, filepath.Join(tree, "id"), immutableFL)
				setFlags(t, filepath.Join(tree, "x", "y", "z", "f"), immutableFL|appendFL)
				setFlags(t, filepath.Join(tree, "x", "y", "z"), immutableFL)
				setFlags(t, filepath.Join(tree, "x", "y"), appendFL)
				setFlags(t, tree, immutableFL)
			},
		},
		{
			name: "an immutable file linked from outside",
			build: func(t *testing.T, tree, outside string) {
				write(t, tree, map[string]string{"sub/f": "x"})
				must(t, os.Link(filepath.Join(outside, "sentinel"), filepath.Join(tree, "sub", "locked")))
				setFlags(t, filepath.Join(outside, "sentinel"), immutableFL)
			},
			wantErr: true,
		},
		{
			name: "a mount inside",
			build: func(t *testing.T, tree, outside string) {
				write(t, tree, map[string]string{"m/mnt/.keep": "", "m/f": "x"})
				mnt := filepath.Join(tree, "m", "mnt")
				must(t, unix.Mount(filepath.Join(outside, "dir"), mnt, "", unix.MS_BIND, ""))
				t.Cleanup(func() {
					if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
						t.Errorf("unmount %s: %v", mnt, err)
					}
				})
			},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Cleanup(func() { clearAllFlags(dir) })
			outside := newOutside(t, dir)
			tree := filepath.Join(dir, "tree")
			tt.build(t, tree, outside)
			before := snapshot(t, outside)

			err := fstree.RemoveAll(context.Background(), tree)
			if tt.wantErr {
				if err == nil {
					t.Error("RemoveAll succeeded, want an error")
				}
				t.Logf("RemoveAll: %v", err)
			} else {
				if err != nil {
					t.Fatalf("RemoveAll: %v", err)
				}
				assertGone(t, tree)
			}
			assertSame(t, before, snapshot(t, outside))
		})
	}
}

// TestRemoveAllSwappedComponents swaps directories of the tree for symlinks
// to outside while RemoveAll runs: nothing outside may change.
func TestRemoveAllSwappedComponents(t *testing.T) {
	dir := t.TempDir()
	outside := newOutside(t, dir)
	before := snapshot(t, outside)
	tree := filepath.Join(dir, "tree")
	const dirs = 30
	for i := range dirs {
		files := map[string]string{}
		for j := range 20 {
			files[fmt.Sprintf("d%d/sub/f%d", i, j)] = "x"
			files[fmt.Sprintf("d%d/sub/deeper/f%d", i, j)] = "x"
		}
		write(t, tree, files)
	}

	done := make(chan struct{})
	attacker := make(chan int)
	started := make(chan struct{})
	go func() {
		swaps := 0
		defer func() { attacker <- swaps }()
		if swap(tree, "d0/sub", filepath.Join(outside, "dir")) {
			swaps++
		}
		close(started)
		for round := 0; round < 20; round++ {
			for i := range dirs {
				select {
				case <-done:
					return
				default:
				}
				// Like a tenant, the attacker swaps only what is its own:
				// it never follows a symlink it planted.
				for _, p := range []string{fmt.Sprintf("d%d/sub/deeper", i), fmt.Sprintf("d%d/sub", i), fmt.Sprintf("d%d", i)} {
					if swap(tree, p, filepath.Join(outside, "dir")) {
						swaps++
					}
				}
			}
		}
	}()
	<-started
	err := fstree.RemoveAll(context.Background(), tree)
	close(done)
	swaps := <-attacker
	t.Logf("%d swaps; RemoveAll during them: %v", swaps, err)
	if swaps == 0 {
		t.Fatal("the attacker swapped nothing")
	}
	if err := fstree.RemoveAll(context.Background(), tree); err != nil {
		t.Fatalf("RemoveAll after the swaps: %v", err)
	}
	assertGone(t, tree)
	assertSame(t, before, snapshot(t, outside))
}

// swap renames the directory rel below tree aside and puts a symlink to
// target in its place, following no symlink on the way.
func swap(tree, rel, target string) bool {
	fd, err := unix.Open(tree, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	parts := strings.Split(rel, "/")
	for _, p := range parts[:len(parts)-1] {
		next, err := unix.Openat(fd, p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return false
		}
		fd = next
	}
	defer unix.Close(fd)
	name := parts[len(parts)-1]
	return unix.Renameat(fd, name, fd, name+".moved") == nil && unix.Symlinkat(target, fd, name) == nil
}

func TestRemoveAllAsOwner(t *testing.T) {
	dir := t.TempDir()
	// The unprivileged remover must reach and write dir.
	must(t, os.Chmod(filepath.Dir(dir), 0o711))
	tree, uid := newTenantTree(t, dir)
	must(t, os.Chown(dir, int(uid), int(uid)))
	runHelper(t, "modes", uid, tree)
	runHelper(t, "remove", uid, "", envPath+"="+tree)
	assertGone(t, tree)
}

func TestRemoveAllCancelled(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	write(t, tree, map[string]string{"a/b/c": "x", "d": "x"})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := fstree.RemoveAll(ctx, tree)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("RemoveAll with a cancelled context: %v, want context.Canceled", err)
	}
	if _, err := os.Lstat(tree); err != nil {
		t.Errorf("a cancelled RemoveAll removed the tree: %v", err)
	}
	if err := fstree.RemoveAll(context.Background(), tree); err != nil {
		t.Fatal(err)
	}
	assertGone(t, tree)
}

func TestRemoveAllRefuses(t *testing.T) {
	for _, p := range []string{"", "/", ".", "..", "a/..", "/tmp/.."} {
		if err := fstree.RemoveAll(context.Background(), p); err == nil {
			t.Errorf("RemoveAll(%q) succeeded, want an error", p)
		}
	}
}

// BenchmarkRemoveWide removes a directory of 10,000 empty files, with
// os.RemoveAll as the baseline.
func BenchmarkRemoveWide(b *testing.B) {
	const entries = 10_000
	for _, bm := range []struct {
		name   string
		remove func(string) error
	}{
		{"fstree", func(p string) error { return fstree.RemoveAll(context.Background(), p) }},
		{"os.RemoveAll", os.RemoveAll},
	} {
		b.Run(bm.name, func(b *testing.B) {
			dir := b.TempDir()
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				p := filepath.Join(dir, strconv.Itoa(i))
				if err := os.Mkdir(p, 0o755); err != nil {
					b.Fatal(err)
				}
				fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				err = makeWide(fd, entries)
				unix.Close(fd)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := bm.remove(p); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*entries), "ns/entry")
		})
	}
}

// BenchmarkRemoveDeep removes a chain of 5,000 directories, with
// os.RemoveAll (which holds one fd per level) as the baseline.
func BenchmarkRemoveDeep(b *testing.B) {
	const depth = 5_000
	for _, bm := range []struct {
		name   string
		remove func(string) error
	}{
		{"fstree", func(p string) error { return fstree.RemoveAll(context.Background(), p) }},
		{"os.RemoveAll", os.RemoveAll},
	} {
		b.Run(bm.name, func(b *testing.B) {
			dir := b.TempDir()
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				p := filepath.Join(dir, strconv.Itoa(i))
				if err := os.Mkdir(p, 0o755); err != nil {
					b.Fatal(err)
				}
				fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
				if err != nil {
					b.Fatal(err)
				}
				for range depth {
					if err := unix.Mkdirat(fd, "d", 0o755); err != nil {
						b.Fatal(err)
					}
					next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
					if err != nil {
						b.Fatal(err)
					}
					unix.Close(fd)
					fd = next
				}
				unix.Close(fd)
				b.StartTimer()
				if err := bm.remove(p); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*depth), "ns/level")
		})
	}
}

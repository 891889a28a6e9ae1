package quotafs

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/plugins/statefs-fuse/dirwalk/dirwalktest"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/merkle"
)

// TestOpenDeep: the start-up scan counts a tree of 70,000 levels (deeper
// than the helper's RLIMIT_NOFILE) under a limit of 1024, with hard links
// counted once in bytes, and the root is then computed too.
func TestOpenDeep(t *testing.T) {
	dirwalktest.UnderNofile(t, 1024, func(t *testing.T) {
		const depth = 70000
		var entries, bytes int64
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		dir := dirwalktest.Chain(t, depth, func(level, fd int) {
			if level > 0 {
				entries, bytes = entries+1, bytes+dirBytes // the chain's "d"
			}
			if level%1000 == 0 {
				f, err := unix.Openat(fd, "f", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				must(err)
				_, err = unix.Write(f, []byte("0123456789"))
				unix.Close(f)
				must(err)
				must(unix.Linkat(fd, "f", fd, "h", 0))
				must(unix.Symlinkat("target", fd, "s"))
				entries, bytes = entries+3, bytes+10+6
			}
			if level%7 == 0 {
				must(unix.Mkdirat(fd, "z", 0o755))
				entries, bytes = entries+1, bytes+dirBytes
			}
		})
		start := time.Now()
		fsys, err := Open(Config{Backing: dir})
		if err != nil {
			t.Fatalf("%.300v", err)
		}
		defer fsys.Close()
		t.Logf("counted %d levels in %v", depth, time.Since(start))
		if u := fsys.Usage(); u.Entries != entries || u.Bytes != bytes {
			t.Errorf("usage %d entries, %d bytes; want %d, %d", u.Entries, u.Bytes, entries, bytes)
		}
		got, err := fsys.Root()
		if err != nil {
			t.Fatalf("%.300v", err)
		}
		if want, err := merkle.Scan(dir); err != nil || got != want {
			t.Errorf("root %x, scan %x (%v)", got, want, err)
		}
	})
}

package dirwalk_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/plugins/statefs-fuse/dirwalk"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/dirwalk/dirwalktest"
)

// mix adds to a deep chain: files every 1000 levels, an empty directory
// after the chain's "d" every 7 levels (the walk must come back for it),
// and a wide directory every 5000 levels. It returns the count of entries
// it added.
func mix(t testing.TB) (func(level, fd int), *int) {
	n := new(int)
	return func(level, fd int) {
		mk := func(dfd int, name string, dir bool) {
			var err error
			if dir {
				err = unix.Mkdirat(dfd, name, 0o755)
			} else {
				var f int
				f, err = unix.Openat(dfd, name, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
				if err == nil {
					unix.Close(f)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			*n++
		}
		if level > 0 {
			*n++ // the chain's own "d"
		}
		if level%1000 == 0 {
			for i := range 100 {
				mk(fd, fmt.Sprintf("f%03d", i), false)
			}
		}
		if level%7 == 0 {
			mk(fd, "z", true)
		}
		if level%5000 == 0 {
			mk(fd, "w", true)
			w, err := unix.Openat(fd, "w", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(w)
			for i := range 200 {
				mk(w, fmt.Sprintf("s%03d", i), true)
			}
		}
	}, n
}

// openFDs counts the descriptors the process holds.
func openFDs(t *testing.T) int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// TestWalkDeep walks a chain of 70,000 directories with side entries under
// an RLIMIT_NOFILE of 1024, and checks the walk's order, its entry count
// and the descriptors it holds.
func TestWalkDeep(t *testing.T) {
	dirwalktest.UnderNofile(t, 1024, func(t *testing.T) {
		const depth = 70000
		extra, want := mix(t)
		start := time.Now()
		dir := dirwalktest.Chain(t, depth, extra)
		t.Logf("built %d levels, %d entries in %v", depth, *want, time.Since(start))
		top, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(top)
		base := openFDs(t)
		var (
			stack          [][]dirwalk.Entry
			inos           []uint64
			entries, dirs  int
			maxDepth, most int
		)
		start = time.Now()
		err = dirwalk.Walk(top, func(d *dirwalk.Dir, fd int) error {
			if d.Depth != len(stack) {
				return fmt.Errorf("entered at depth %d, %d directories open", d.Depth, len(stack))
			}
			if d.Depth > 0 && stack[d.Depth-1][d.Index].Ino != d.Ino {
				return fmt.Errorf("index %d is not the directory's", d.Index)
			}
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil || st.Ino != d.Ino {
				return fmt.Errorf("descriptor is not the directory's: %v", err)
			}
			for i := range d.Entries {
				if i > 0 && d.Entries[i-1].Name >= d.Entries[i].Name {
					return errors.New("entries not in order")
				}
				d.Entries[i].Descend = true
			}
			entries += len(d.Entries)
			dirs++
			maxDepth = max(maxDepth, d.Depth)
			if d.Depth%1000 == 999 {
				most = max(most, openFDs(t)-base)
			}
			stack = append(stack, d.Entries)
			inos = append(inos, d.Ino)
			return nil
		}, func(d *dirwalk.Dir) error {
			if d.Depth != len(stack)-1 || inos[d.Depth] != d.Ino {
				return fmt.Errorf("left depth %d out of order", d.Depth)
			}
			stack, inos = stack[:d.Depth], inos[:d.Depth]
			return nil
		})
		if err != nil {
			t.Fatalf("%.300v", err)
		}
		t.Logf("walked in %v, at most %d descriptors", time.Since(start), most)
		if entries != *want || maxDepth != depth+2 || len(stack) != 0 {
			t.Errorf("%d entries, depth %d, %d left open; want %d entries, depth %d", entries, maxDepth, len(stack), *want, depth+2)
		}
		if limit := dirwalk.KeepDepth + depth/dirwalk.KeepDepth + 3; most > limit || most == 0 {
			t.Errorf("held %d descriptors, want 1 to %d", most, limit)
		}
	})
}

// TestWalkChangedTree changes the tree while the walk is below a directory
// it closed: the directory opened again must be the one it left, and no
// symlink may lead there.
func TestWalkChangedTree(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(dir string) error
		want   error
	}{
		{"directory replaced", func(dir string) error {
			p := filepath.Join(dir, strings.Repeat("d/", 199)+"d")
			if err := os.Rename(p, p+"-old"); err != nil {
				return err
			}
			return os.Mkdir(p, 0o755)
		}, dirwalk.ErrChanged},
		{"ancestor replaced by a symlink to it", func(dir string) error {
			p := filepath.Join(dir, strings.Repeat("d/", 149)+"d")
			if err := os.Rename(p, p+"-old"); err != nil {
				return err
			}
			return os.Symlink("d-old", p)
		}, unix.ELOOP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := dirwalktest.Chain(t, 300, func(level, fd int) {
				if level == 200 {
					if err := unix.Mkdirat(fd, "z", 0o755); err != nil {
						t.Fatal(err)
					}
				}
			})
			top, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(top)
			err = dirwalk.Walk(top, func(d *dirwalk.Dir, _ int) error {
				for i := range d.Entries {
					d.Entries[i].Descend = true
				}
				if d.Depth == 250 {
					return tc.change(dir)
				}
				return nil
			}, nil)
			if !errors.Is(err, tc.want) {
				t.Fatalf("walk: %v, want %v", err, tc.want)
			}
			if msg := err.Error(); len(msg) > 200 || !strings.Contains(msg, "more") {
				t.Errorf("error %q: want one short path", msg)
			}
		})
	}
}

// TestWalkLive walks a tree while another goroutine removes its files and
// directories, and replaces some directories by files: WalkLive leaves
// out what went, and never fails for it; every name it reports was there.
func TestWalkLive(t *testing.T) {
	for round := range 5 {
		dir := t.TempDir()
		for i := range 200 {
			sub := filepath.Join(dir, fmt.Sprintf("d%03d", i))
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			for j := range 20 {
				if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%02d", j)), nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 199; i >= 0; i-- {
				sub := filepath.Join(dir, fmt.Sprintf("d%03d", i))
				os.RemoveAll(sub)
				if i%3 == 0 {
					os.WriteFile(sub, nil, 0o644) // a file where a directory was
				}
			}
		}()
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		entries := 0
		err = dirwalk.WalkLive(fd, func(d *dirwalk.Dir, _ int) error {
			for i := range d.Entries {
				entries++
				d.Entries[i].Descend = true
			}
			return nil
		}, nil)
		unix.Close(fd)
		<-done
		if err != nil {
			t.Fatalf("round %d: WalkLive: %v", round, err)
		}
		if entries > 200*21 {
			t.Errorf("round %d: %d entries, more than the tree ever held", round, entries)
		}
	}
}

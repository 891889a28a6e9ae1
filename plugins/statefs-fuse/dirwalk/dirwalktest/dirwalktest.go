// Package dirwalktest builds trees deeper than RLIMIT_NOFILE for tests, and
// runs tests under a lowered RLIMIT_NOFILE.
package dirwalktest

import (
	"cmp"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Chain makes a chain of depth directories named "d" below a new
// directory and returns the new directory's path. At each level (0 being
// the new directory) it calls extra, unless nil, with the level's
// descriptor, to add entries. The tree is removed at the end of the test
// (os.RemoveAll would hold a descriptor per level).
func Chain(t testing.TB, depth int, extra func(level, fd int)) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { remove(t, dir) })
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for level := 0; ; level++ {
		if extra != nil {
			extra(level, fd)
		}
		if level == depth {
			break
		}
		if err := unix.Mkdirat(fd, "d", 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatal(err)
		}
		fd = next
	}
	unix.Close(fd)
	return dir
}

// remove empties dir with two descriptors: it goes down into the first
// directory it finds, unlinking what else it meets, and back up through
// ".." to remove the emptied directory.
func remove(t testing.TB, dir string) {
	cur, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Error(err)
		return
	}
	defer func() { unix.Close(cur) }()
	var path []string
	for {
		kids, err := names(cur)
		if err != nil {
			t.Error(err)
			return
		}
		down := ""
		for _, k := range kids {
			// unlink fails with EISDIR on a directory.
			if unix.Unlinkat(cur, k, 0) != nil {
				down = k
				break
			}
		}
		if down == "" && len(path) == 0 {
			return
		}
		next, err := unix.Openat(cur, cmp.Or(down, ".."), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Error(err)
			return
		}
		unix.Close(cur)
		cur = next
		if down != "" {
			path = append(path, down)
			continue
		}
		if err := unix.Unlinkat(cur, path[len(path)-1], unix.AT_REMOVEDIR); err != nil {
			t.Error(err)
			return
		}
		path = path[:len(path)-1]
	}
}

// names lists the directory fd but "." and "..".
func names(fd int) ([]string, error) {
	var out []string
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		_, _, out = unix.ParseDirent(buf[:n], -1, out)
	}
}

// childEnv names the test a re-executed test binary runs under the lowered
// limit, and the limit.
const childEnv = "DIRWALKTEST_NOFILE"

// UnderNofile runs fn in a new process of the test binary whose
// RLIMIT_NOFILE is limit, so that the lowered limit does not reach the
// other tests. The test must be a top-level one, and call UnderNofile
// first.
func UnderNofile(t *testing.T, limit uint64, fn func(t *testing.T)) {
	t.Helper()
	if v := os.Getenv(childEnv); v != "" {
		name, lim, _ := strings.Cut(v, "=")
		if name != t.Name() {
			t.Fatalf("child for %s runs %s", name, t.Name())
		}
		n, err := strconv.ParseUint(lim, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		var rl unix.Rlimit
		if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			t.Fatal(err)
		}
		rl.Cur = n
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
			t.Fatal(err)
		}
		fn(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s=%d", childEnv, t.Name(), limit))
	out, err := cmd.CombinedOutput()
	t.Logf("under RLIMIT_NOFILE %d:\n%s", limit, out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()+" ") {
		t.Fatalf("child did not pass %s", t.Name())
	}
}

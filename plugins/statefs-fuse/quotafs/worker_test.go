package quotafs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a tenant's process: run with envWorker set, it
// does the operations of its arguments as the uid it was started as, in
// the directory envWorker names, printing one result per operation.
const envWorker = "KIGUMI_QUOTAFS_WORKER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(envWorker); dir != "" {
		err := os.Chdir(dir)
		for _, op := range os.Args[1:] {
			if err != nil {
				fmt.Println(result(err))
				continue
			}
			fmt.Println(runOp(strings.Split(op, ":")))
		}
		os.Exit(0)
	}
	// The server makes entries with exactly the modes asked for.
	unix.Umask(0)
	os.Exit(m.Run())
}

// result is "ok", an errno name, or a count and errno for bulk operations.
func result(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &errno):
		return unix.ErrnoName(errno)
	default:
		return err.Error()
	}
}

func atoi(s string) int64 {
	n, err := strconv.ParseInt(s, 0, 64)
	if err != nil {
		panic(err)
	}
	return n
}

// runOp does one operation.
func runOp(a []string) string {
	switch a[0] {
	case "write": // write:path:bytes, creating the file (mode 0644)
		f, err := os.OpenFile(a[1], os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return result(err)
		}
		_, err = f.Write([]byte(strings.Repeat("x", int(atoi(a[2])))))
		return result(errors.Join(err, f.Close()))
	case "fill": // fill:path:bytes: write in 1 MiB chunks until done or an error
		f, err := os.OpenFile(a[1], os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return result(err)
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		var n int64
		for n < atoi(a[2]) {
			m, err := f.Write(buf)
			n += int64(m)
			if err != nil {
				return fmt.Sprintf("%d %s", n, result(err))
			}
		}
		return fmt.Sprintf("%d ok", n)
	case "flood": // flood:path:ms:chunk: write chunks flat out for ms, over the first 16 MiB again and again
		f, err := os.OpenFile(a[1], os.O_WRONLY|os.O_CREATE, 0o644)
		if err != nil {
			return result(err)
		}
		defer f.Close()
		buf := make([]byte, atoi(a[3]))
		var n int64
		for end := time.Now().Add(time.Duration(atoi(a[2])) * time.Millisecond); time.Now().Before(end); {
			m, err := f.WriteAt(buf, n%(16<<20))
			n += int64(m)
			if err != nil {
				return fmt.Sprintf("%d %s", n, result(err))
			}
		}
		return fmt.Sprint(n)
	case "slurp": // slurp:path:ms: read the file from its start flat out for ms (or to its end)
		f, err := os.Open(a[1])
		if err != nil {
			return result(err)
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		var n int64
		for end := time.Now().Add(time.Duration(atoi(a[2])) * time.Millisecond); time.Now().Before(end); {
			m, err := f.Read(buf)
			n += int64(m)
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Sprintf("%d %s", n, result(err))
			}
		}
		return fmt.Sprint(n)
	case "files": // files:prefix:n: make up to n empty files, prefix0...
		for i := range atoi(a[2]) {
			fd, err := unix.Open(fmt.Sprintf("%s%d", a[1], i), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				return fmt.Sprintf("%d %s", i, result(err))
			}
			unix.Close(fd)
		}
		return a[2] + " ok"
	case "read":
		b, err := os.ReadFile(a[1])
		if err != nil {
			return result(err)
		}
		return string(b)
	case "mkdir":
		return result(unix.Mkdir(a[1], uint32(atoi(a[2]))))
	case "rmdir":
		return result(unix.Rmdir(a[1]))
	case "unlink":
		return result(unix.Unlink(a[1]))
	case "rename":
		return result(unix.Rename(a[1], a[2]))
	case "link":
		return result(unix.Link(a[1], a[2]))
	case "symlink":
		return result(unix.Symlink(a[1], a[2]))
	case "chmod":
		return result(unix.Chmod(a[1], uint32(atoi(a[2]))))
	case "chown":
		return result(unix.Lchown(a[1], int(atoi(a[2])), int(atoi(a[3]))))
	case "truncate":
		return result(unix.Truncate(a[1], atoi(a[2])))
	case "fallocate":
		fd, err := unix.Open(a[1], unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return result(err)
		}
		defer unix.Close(fd)
		return result(unix.Fallocate(fd, 0, 0, atoi(a[2])))
	case "stat":
		var st unix.Stat_t
		if err := unix.Lstat(a[1], &st); err != nil {
			return result(err)
		}
		return fmt.Sprintf("%o %d:%d %d", st.Mode, st.Uid, st.Gid, st.Size)
	case "ls":
		es, err := os.ReadDir(a[1])
		if err != nil {
			return result(err)
		}
		return fmt.Sprint(len(es))
	}
	return "unknown op " + a[0]
}

// as runs ops as uid:gid in dir and returns one result per op.
func as(t *testing.T, uid, gid uint32, dir string, ops ...string) []string {
	t.Helper()
	lines, err := run(uid, gid, dir, ops...)
	if err != nil {
		t.Fatal(err)
	}
	return lines
}

func run(uid, gid uint32, dir string, ops ...string) ([]string, error) {
	cmd := exec.Command("/proc/self/exe", ops...)
	cmd.Env = []string{envWorker + "=" + dir}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("worker as %d %v: %w\n%s", uid, ops, err, out)
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != len(ops) {
		return nil, fmt.Errorf("worker %v printed %q", ops, out)
	}
	return lines, nil
}

// as1 runs one op as uid:gid in dir.
func as1(t *testing.T, uid, gid uint32, dir, op string) string {
	t.Helper()
	return as(t, uid, gid, dir, op)[0]
}

// parallel runs op in n workers at once as uid:gid in dir.
func parallel(t *testing.T, n int, uid, gid uint32, dir string, op func(i int) string) []string {
	t.Helper()
	out := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			lines, err := run(uid, gid, dir, op(i))
			if err != nil {
				t.Error(err)
				return
			}
			out[i] = lines[0]
		})
	}
	wg.Wait()
	return out
}

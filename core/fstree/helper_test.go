package fstree_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/fstree"
	"github.com/kigumi/kigumi/core/tenant"
)

// The test binary doubles as the processes the tests need: a tenant that
// builds a tree (as an unprivileged uid), and a remover under tight limits.
const (
	envHelper = "KIGUMI_FSTREE_HELPER"
	envN      = "KIGUMI_FSTREE_N"
	envPath   = "KIGUMI_FSTREE_PATH"
	// removeFDLimit is RLIMIT_NOFILE of the remover process.
	removeFDLimit = 16
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envHelper); mode != "" {
		if err := helper(mode); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helper runs one helper mode; the tree is fd 3 unless the mode says so.
func helper(mode string) error {
	n, _ := strconv.Atoi(os.Getenv(envN))
	switch mode {
	case "deep":
		return makeDeep(3, n, os.Getenv(envPath))
	case "wide":
		return makeWide(3, n)
	case "modes":
		return makeModes(3)
	case "remove":
		lim := unix.Rlimit{Cur: removeFDLimit, Max: removeFDLimit}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			return err
		}
		return fstree.RemoveAll(context.Background(), os.Getenv(envPath))
	}
	return fmt.Errorf("unknown helper mode %q", mode)
}

// makeDeep builds a chain of n directories named "d" below fd, working only
// relative to fds (the path grows past PATH_MAX). Every level is left mode
// 000, and every 10,000th also holds a file, a FIFO and symlinks to outside.
func makeDeep(fd, n int, outside string) error {
	for i := range n {
		if i%10000 == 0 {
			if err := hostileLeaves(fd, outside); err != nil {
				return fmt.Errorf("level %d: %w", i, err)
			}
		}
		if err := unix.Mkdirat(fd, "d", 0o700); err != nil {
			return fmt.Errorf("level %d: mkdir: %w", i, err)
		}
		next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("level %d: open: %w", i, err)
		}
		if i > 0 {
			if err := unix.Fchmod(fd, 0); err != nil {
				return fmt.Errorf("level %d: chmod: %w", i, err)
			}
			unix.Close(fd)
		}
		fd = next
	}
	return nil
}

// hostileLeaves puts a file, a FIFO and symlinks out of the tree into fd.
func hostileLeaves(fd int, outside string) error {
	f, err := unix.Openat(fd, "f", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	unix.Write(f, []byte("tenant data"))
	unix.Close(f)
	if err := unix.Mkfifoat(fd, "fifo", 0); err != nil {
		return err
	}
	if err := unix.Symlinkat(outside, fd, "out"); err != nil {
		return err
	}
	return unix.Symlinkat("../outside", fd, "up")
}

// makeWide makes n empty files in fd, one mknod each.
func makeWide(fd, n int) error {
	buf := make([]byte, 0, 16)
	for i := range n {
		buf = strconv.AppendInt(append(buf[:0], 'f'), int64(i), 10)
		if err := unix.Mknodat(fd, string(buf), unix.S_IFREG|0o600, 0); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
	}
	return nil
}

// makeModes builds, in fd, directories and files with every owner
// permission missing, the directories locked only after they are filled.
func makeModes(fd int) error {
	for _, mode := range []uint32{0, 0o100, 0o200, 0o300, 0o400, 0o500, 0o600, 0o1000, 0o4000} {
		name := "m" + strconv.FormatUint(uint64(mode), 8)
		if err := unix.Mkdirat(fd, name, 0o700); err != nil {
			return err
		}
		d, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Mkdirat(d, "sub", 0o700); err != nil {
			return err
		}
		if err := unix.Mknodat(d, "sub/f", unix.S_IFREG, 0); err != nil {
			return err
		}
		if err := unix.Mknodat(d, "f", unix.S_IFREG|mode&0o7777, 0); err != nil {
			return err
		}
		if err := unix.Fchmodat(d, "sub", mode, 0); err != nil {
			return err
		}
		if err := unix.Fchmod(d, mode); err != nil {
			return err
		}
		unix.Close(d)
	}
	return nil
}

// tenantUID returns a uid that no account uses, for a tenant process.
func tenantUID(t *testing.T) uint32 {
	t.Helper()
	uid, err := tenant.FreeUID(400000, nil)
	if err != nil {
		t.Fatal(err)
	}
	return uid
}

// runHelper runs the helper mode as uid (0: root), with dir as fd 3 when it
// is not empty, and returns the process's peak resident size in bytes.
func runHelper(t *testing.T, mode string, uid uint32, dir string, env ...string) int64 {
	t.Helper()
	// Exec through /proc/self/exe checks only the binary's own mode: an
	// unprivileged uid can run it from a directory it could not enter.
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append([]string{envHelper + "=" + mode, "PATH=/usr/bin:/bin"}, env...)
	cmd.Dir = "/"
	if dir != "" {
		f, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.ExtraFiles = []*os.File{f}
	}
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper %s as uid %d: %v\n%s", mode, uid, err, out)
	}
	return cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10
}

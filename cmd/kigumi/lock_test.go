package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/state"
)

// holdLock opens the workspace's state database, as a running apply does,
// until the returned function is called.
func holdLock(t *testing.T, w *workspace) func() {
	t.Helper()
	if err := os.MkdirAll(w.state, 0o711); err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(filepath.Join(w.state, "kigumi.db"))
	if err != nil {
		t.Fatal(err)
	}
	released := false
	release := func() {
		if !released {
			released = true
			st.Close()
		}
	}
	t.Cleanup(release)
	return release
}

// startKigumi starts the binary with output collected in buffers.
func startKigumi(t *testing.T, args ...string) (*exec.Cmd, *syncBuffer, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(kigumiBin, args...)
	var stdout, stderr syncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, &stdout, &stderr
}

// exitCode waits for cmd, killing it and failing the test if it is still
// running after a minute: then it ignored what it was asked to do.
func exitCode(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("%s did not exit", cmd)
	}
	return -1
}

func TestStateBusy(t *testing.T) {
	w := newWorkspace(t, 0)
	holdLock(t, w)
	for _, args := range [][]string{
		{"apply", "-c", w.host, "--auto-approve", "--lock-timeout", "300ms"},
		{"plan", "-c", w.host, "--lock-timeout", "300ms"},
		{"destroy", "-c", w.host, "--auto-approve", "--lock-timeout=0s"},
	} {
		t.Run(args[0], func(t *testing.T) {
			code, out, errOut := kigumi(t, args...)
			if code != exitBusy || !strings.Contains(errOut, "in use by another kigumi process") || !strings.Contains(errOut, "still busy after waiting") {
				t.Errorf("exit %d, want %d (busy):\n%s%s", code, exitBusy, out, errOut)
			}
		})
	}
}

func TestStateLockWait(t *testing.T) {
	w := newWorkspace(t, 0)
	release := holdLock(t, w)
	cmd, stdout, stderr := startKigumi(t, "apply", "-c", w.host, "--auto-approve")
	eventually(t, "apply to wait for the lock", func() bool { return strings.Contains(stderr.String(), "Waiting up to 30s") })
	release()
	if code := exitCode(t, cmd); code != exitOK {
		t.Fatalf("apply after the lock was released: exit %d\n%s%s", code, stdout, stderr)
	}
}

func TestSignalStopsLockWait(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			w := newWorkspace(t, 0)
			holdLock(t, w)
			cmd, stdout, stderr := startKigumi(t, "apply", "-c", w.host, "--auto-approve", "--lock-timeout", "1h")
			eventually(t, "apply to wait for the lock", func() bool { return strings.Contains(stderr.String(), "Waiting up to 1h0m0s") })
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := exitCode(t, cmd); code != exitFailed || !strings.Contains(stderr.String(), "stopped while waiting for the state database") {
				t.Errorf("exit %d, want %d:\n%s%s", code, exitFailed, stdout, stderr)
			}
		})
	}
}

// openPTY returns a new pseudo-terminal's controller and its terminal.
func openPTY(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pts.Close() })
	return ptmx, pts
}

func TestSignalStopsConfirmation(t *testing.T) {
	w := newWorkspace(t, 1)
	_, pts := openPTY(t)
	cmd := exec.Command(kigumiBin, "apply", "-c", w.host)
	var stdout, stderr syncBuffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	eventually(t, "apply to ask for confirmation", func() bool { return strings.Contains(stdout.String(), "Enter a value:") })
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := exitCode(t, cmd); code != exitFailed || !strings.Contains(stdout.String(), "Cancelled: nothing was changed.") {
		t.Errorf("exit %d, want %d:\n%s%s", code, exitFailed, stdout.String(), stderr.String())
	}
	if _, err := os.Stat(filepath.Join(w.state, "tenants", w.names[0])); err == nil {
		t.Errorf("tenant home was created by a cancelled apply")
	}
}

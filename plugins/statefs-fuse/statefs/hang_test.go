package statefs

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/fusemount"
)

// fuseFd returns the helper's /dev/fuse descriptor and its open flags.
func fuseFd(t *testing.T, pid int) (fd int, flags uint64) {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if l, _ := os.Readlink(filepath.Join(dir, e.Name())); l != "/dev/fuse" {
			continue
		}
		fd, _ = strconv.Atoi(e.Name())
		info, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/fdinfo/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, _ = strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			}
		}
		return fd, flags
	}
	t.Fatalf("helper %d holds no /dev/fuse", pid)
	return 0, 0
}

// within runs f and fails the test if it has not returned after limit:
// a regression then fails rather than hangs. onTimeout runs first (to
// unblock what hangs).
func within(t *testing.T, limit time.Duration, what string, onTimeout func(), f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(limit):
		onTimeout()
		t.Fatalf("%s still runs after %v", what, limit)
	}
}

// TestFUSEHungConnectionRecovers makes the mount the fault suite once
// hung on: its helper gone, requests waiting, and no ENOTCONN, because
// another process (stopped here, as a frozen one would be) still holds the
// connection's /dev/fuse. Recover must clear it without touching the mount
// (every stat there would hang), fail the waiting reader with ENOTCONN,
// and serve the state again from a new helper; the neighbour's state
// keeps serving throughout. The helper's descriptor is close-on-exec, so
// only a deliberate copy (pidfd_getfd) can hold it.
func TestFUSEHungConnectionRecovers(t *testing.T) {
	ctx := context.Background()
	h, d := provisionFUSE(t, newFUSE(), "hung")
	_, other := provisionFUSE(t, newFUSE(), "neighbour")
	if err := os.WriteFile(filepath.Join(d.Dir, "data"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	old, alive := d.helper()
	if !alive {
		t.Fatal("no helper")
	}
	ms, err := d.mounts()
	if err != nil || len(ms) != 1 {
		t.Fatalf("mounts %+v, %v", ms, err)
	}
	conn := ms[0].Conn()
	t.Cleanup(func() { _ = fusemount.Abort(conn) }) // never leave it hung

	fd, flags := fuseFd(t, old.Pid)
	if flags&unix.O_CLOEXEC == 0 {
		t.Errorf("the helper's /dev/fuse (fd %d, flags %o) is not close-on-exec: any program it started would inherit the connection", fd, flags)
	}
	// A process holding a copy of the connection, stopped.
	pidfd, err := unix.PidfdOpen(old.Pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	dup, err := unix.PidfdGetfd(pidfd, fd, 0)
	unix.Close(pidfd)
	if err != nil {
		t.Fatal(err)
	}
	// Closed through its os.File only: a raw close too would leave the
	// File's finalizer to close the number again, by then another file's.
	dupFile := os.NewFile(uintptr(dup), "fuse")
	holder := exec.Command("sleep", "600")
	holder.ExtraFiles = []*os.File{dupFile}
	err = holder.Start()
	dupFile.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = holder.Process.Kill()
		_ = holder.Wait()
	})
	if err := holder.Process.Signal(unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}

	// The helper stops with a reader waiting on it, then is killed.
	if err := unix.Kill(old.Pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var readerOut bytes.Buffer
	reader := exec.Command("cat", filepath.Join(d.Dir, "data"))
	reader.Stdout, reader.Stderr = &readerOut, &readerOut
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	readerDone := make(chan error, 1)
	go func() { readerDone <- reader.Wait() }()
	t.Cleanup(func() { _ = reader.Process.Kill() }) // readerDone's goroutine reaps it
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := fusemount.Waiting(conn); n == 0; n, _ = fusemount.Waiting(conn) {
		if time.Now().After(deadline) {
			t.Fatal("the reader's request never reached the connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := unix.Kill(old.Pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitGone(old) {
		t.Fatalf("helper %d does not end after SIGKILL", old.Pid)
	}
	// The hang: no server, and still no ENOTCONN.
	select {
	case err := <-readerDone:
		t.Fatalf("the reader ended (%v: %s) though its connection lives on; the test does not make the hang", err, readerOut.String())
	case <-time.After(300 * time.Millisecond):
	}
	if n, err := fusemount.Waiting(conn); err != nil || n == 0 {
		t.Fatalf("requests waiting on the dead connection: %d, %v", n, err)
	}

	within(t, 30*time.Second, "Recover of a hung state", func() { _ = fusemount.Abort(conn) }, func() {
		rctx, cancel := context.WithTimeout(ctx, 25*time.Second)
		defer cancel()
		if _, err := newFUSE().Recover(rctx, h); err != nil {
			t.Errorf("Recover: %v", err)
		}
	})
	select {
	case err := <-readerDone:
		// A request in flight when the connection is aborted fails with
		// ECONNABORTED; later ones with ENOTCONN.
		if out := readerOut.String(); err == nil || !strings.Contains(out, "connection abort") && !strings.Contains(out, "not connected") {
			t.Errorf("the waiting reader ended with %v: %q, want ECONNABORTED or ENOTCONN", err, out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reader still waits on the cleared connection")
	}
	now, alive := d.helper()
	if !alive || now == old {
		t.Fatalf("helper after Recover: %+v (alive %v), the killed one %+v", now, alive, old)
	}
	if ms, err := d.mounts(); err != nil || len(ms) != 1 || !d.serving(ctx) {
		t.Errorf("mounts after Recover: %+v, %v; want one, served by the new helper", ms, err)
	}
	within(t, 10*time.Second, "reading the recovered state", func() { _ = fusemount.Clear(ctx, d.Dir) }, func() {
		if b, err := os.ReadFile(filepath.Join(d.Dir, "data")); err != nil || string(b) != "kept" {
			t.Errorf("data after Recover: %q, %v", b, err)
		}
	})
	if err := os.WriteFile(filepath.Join(other.Dir, "x"), []byte("y"), 0o644); err != nil {
		t.Errorf("the neighbour's state: %v", err)
	}
}

// TestFUSEHelperKilledAnyTime: a helper killed at any moment of its start
// (mounting, answering its first requests) ends, and Recover then serves
// the state: a helper that touched its own mount could be killed while
// waiting on itself, and would then never end nor let its connection go.
func TestFUSEHelperKilledAnyTime(t *testing.T) {
	ctx := context.Background()
	f := newFUSE()
	h, d := provisionFUSE(t, f, "killed")
	for i := range 20 {
		if err := d.stop(ctx); err != nil {
			t.Fatal(err)
		}
		launched := make(chan error, 1)
		go func() { launched <- f.launch(ctx, d) }()
		// Kill it as soon as it is named, after 0 to 2 ms more.
		var rec helperRecord
		deadline := time.Now().Add(10 * time.Second)
		for {
			if r, alive := d.helper(); alive {
				rec = r
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no helper started")
			}
			time.Sleep(100 * time.Microsecond)
		}
		time.Sleep(time.Duration(i%5) * 500 * time.Microsecond)
		_ = unix.Kill(rec.Pid, unix.SIGKILL)
		<-launched
		if !waitGone(rec) {
			ms, _ := d.mounts()
			for _, m := range ms {
				_ = fusemount.Abort(m.Conn())
			}
			t.Fatalf("round %d: helper %d does not end after SIGKILL", i, rec.Pid)
		}
		within(t, 30*time.Second, "Recover", func() { _ = fusemount.Clear(ctx, d.Dir) }, func() {
			if _, err := f.Recover(ctx, h); err != nil {
				t.Errorf("round %d: Recover: %v", i, err)
			}
		})
		within(t, 10*time.Second, "writing the state", func() { _ = fusemount.Clear(ctx, d.Dir) }, func() {
			if err := os.WriteFile(filepath.Join(d.Dir, "n"), []byte(strconv.Itoa(i)), 0o644); err != nil {
				t.Errorf("round %d: write: %v", i, err)
			}
		})
	}
}

package statefs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/merkle"
)

// newFUSE returns the StateFS in fuse mode.
func newFUSE() *FS { return &FS{mode: modeFUSE} }

// provisionFUSE provisions and mounts a FUSE state named name below a new
// directory, and deprovisions it when the test ends.
func provisionFUSE(t *testing.T, s *FS, name string) (sdk.Handle, handleData) {
	t.Helper()
	ctx := context.Background()
	base := t.TempDir()
	req := provisionReq(filepath.Join(base, name))
	req.Instance.Tenant = "sf" + name
	h, err := s.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := newFUSE().Deprovision(ctx, h); err != nil {
			t.Error(err)
		}
	})
	d, err := decode(h)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Mount(ctx, h)
	if err != nil || m.Type != sdk.MountFUSE || m.Source != req.Dir {
		t.Fatalf("Mount = %+v, %v", m, err)
	}
	return h, d
}

func TestFUSEHelperSurvivesAndRecovers(t *testing.T) {
	ctx := context.Background()
	h, d := provisionFUSE(t, newFUSE(), "one")
	_, other := provisionFUSE(t, newFUSE(), "two")

	// fsync'd data, written through the mount.
	f, err := os.OpenFile(filepath.Join(d.Dir, "data"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte("k"), 100_000)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, err := os.Stat(filepath.Join(d.backing(), "data")); err != nil || fi.Size() != 100_000 {
		t.Fatalf("backing file %v, %v", fi, err)
	}

	// A new plugin process (a new FS) adopts the running helper.
	first, alive := d.helper()
	if !alive {
		t.Fatal("no helper")
	}
	if _, err := newFUSE().Recover(ctx, h); err != nil {
		t.Fatal(err)
	}
	if again, _ := d.helper(); again != first {
		t.Errorf("Recover replaced the live helper %+v with %+v", first, again)
	}
	before, err := newFUSE().Hash(ctx, h)
	if err != nil {
		t.Fatal(err)
	}

	// SIGKILL the helper mid-write: the mount goes stale.
	w, err := os.OpenFile(filepath.Join(d.Dir, "partial"), os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("unsynced")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(first.Pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(first)
	w.Close()
	if _, err := os.Stat(filepath.Join(d.Dir, "data")); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat through a dead helper's mount: %v, want ENOTCONN", err)
	}
	// The neighbour's mount keeps serving.
	if err := os.WriteFile(filepath.Join(other.Dir, "x"), []byte("y"), 0o644); err != nil {
		t.Errorf("neighbour write with one helper dead: %v", err)
	}

	// Recover clears the stale mount and serves again.
	if _, err := newFUSE().Recover(ctx, h); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(d.Dir, "data")); err != nil || len(b) != 100_000 {
		t.Errorf("fsync'd data after the restart: %d bytes, %v", len(b), err)
	}
	got, err := newFUSE().Hash(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	scan, err := merkle.Scan(d.backing())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, scan[:]) {
		t.Errorf("root after restart %x, fresh scan %x", got, scan)
	}
	if _, err := os.Stat(filepath.Join(d.backing(), "partial")); err == nil && bytes.Equal(got, before) {
		t.Errorf("root unchanged though a file was added")
	}

	// Usage comes from the helper; Unmount ends it and leaves no mount.
	u, err := newFUSE().Usage(ctx, h)
	if err != nil || u.Bytes < 100_000 || u.BytesLimit != 1<<20 {
		t.Errorf("Usage = %+v, %v", u, err)
	}
	if err := newFUSE().Unmount(ctx, h); err != nil {
		t.Fatal(err)
	}
	if ok, stale := mountState(d.Dir); ok || stale {
		t.Errorf("after Unmount: mounted %v, stale %v", ok, stale)
	}
	if _, alive := d.helper(); alive {
		t.Error("helper alive after Unmount")
	}
}

func TestFUSEQuotaThroughThePlugin(t *testing.T) {
	_, d := provisionFUSE(t, newFUSE(), "quota")
	err := os.WriteFile(filepath.Join(d.Dir, "big"), make([]byte, 2<<20), 0o644)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("writing 2 MiB into a 1 MiB state: %v, want ENOSPC", err)
	}
	if err := os.Remove(filepath.Join(d.Dir, "big")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d.Dir, "small"), make([]byte, 1000), 0o644); err != nil {
		t.Errorf("write after freeing: %v", err)
	}
}

package statefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/sdktest"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/merkle"
)

// newFUSE returns the StateFS in fuse mode.
func newFUSE() *FS { return New() }

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

// TestFUSEHelperEnds: a helper ends once its mount is gone, and on
// SIGTERM within a bounded time however its mount was left, even lazily
// unmounted from outside (umount -l) while in use; it leaves no mount, it
// does not unmount what is mounted at its mount point now, and the state
// can be deprovisioned after.
func TestFUSEHelperEnds(t *testing.T) {
	tests := []struct {
		name string
		// hold keeps the filesystem busy (an open file inside it), as a
		// container's bind mount or a wasm preopen would.
		hold bool
		// detach unmounts it lazily from outside first, and overmount
		// then mounts a tmpfs at the mount point.
		detach, overmount bool
		// sigterm is sent to the helper; without it, it must end alone.
		sigterm bool
	}{
		{name: "detached idle ends alone", detach: true},
		{name: "detached busy", hold: true, detach: true, sigterm: true},
		{name: "detached busy overmounted", hold: true, detach: true, overmount: true, sigterm: true},
		{name: "mounted busy", hold: true, sigterm: true},
		{name: "mounted idle", sigterm: true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			h, d := provisionFUSE(t, newFUSE(), fmt.Sprintf("end%d", i))
			if err := os.WriteFile(filepath.Join(d.Dir, "data"), []byte("kept"), 0o644); err != nil {
				t.Fatal(err)
			}
			rec, alive := d.helper()
			if !alive {
				t.Fatal("no helper")
			}
			if tt.hold {
				f, err := os.Open(filepath.Join(d.Dir, "data"))
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
			}
			if tt.detach {
				if err := unix.Unmount(d.Dir, unix.MNT_DETACH); err != nil {
					t.Fatal(err)
				}
				if ok, stale := mountState(d.Dir); ok || stale {
					t.Fatalf("after umount -l: mounted %v, stale %v", ok, stale)
				}
			}
			if tt.overmount {
				if err := unix.Mount("tmpfs", d.Dir, "tmpfs", 0, "size=64k"); err != nil {
					t.Fatal(err)
				}
			}
			if tt.sigterm {
				if err := unix.Kill(rec.Pid, unix.SIGTERM); err != nil {
					t.Fatal(err)
				}
			}
			if !endsWithin(rec, 10*time.Second) {
				t.Fatalf("helper %d still runs 10s later", rec.Pid)
			}
			if tt.overmount {
				if ok, stale := mountState(d.Dir); !ok || stale {
					t.Errorf("the helper unmounted the tmpfs mounted over its mount point: mounted %v, stale %v", ok, stale)
				}
				if err := unix.Unmount(d.Dir, 0); err != nil {
					t.Fatal(err)
				}
			}
			if ok, stale := mountState(d.Dir); ok || stale {
				t.Errorf("mount left behind: mounted %v, stale %v", ok, stale)
			}
			if _, alive := d.helper(); alive {
				t.Error("helper record names a live process")
			}
			if err := newFUSE().Deprovision(ctx, h); err != nil {
				t.Fatalf("Deprovision after the helper ended: %v", err)
			}
			if _, err := os.Lstat(d.Dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("state dir after Deprovision: %v, want it gone", err)
			}
			if _, err := os.Lstat(d.backing()); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("backing dir after Deprovision: %v, want it gone", err)
			}
		})
	}
}

// endsWithin polls until process r has ended, for at most limit.
func endsWithin(r helperRecord, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if startTicks(r.Pid) != r.StartTicks {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return startTicks(r.Pid) != r.StartTicks
}

// tryAs tries to enter dir as uid (list it and write into it) and returns
// "ok" or the errno's name.
func tryAs(t *testing.T, uid uint32, dir string) string {
	t.Helper()
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = []string{envTry + "=" + dir}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("try as %d: %v\n%s", uid, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestFUSEOnlyTheTenantsUIDs: the filesystem itself lets in the tenant's
// uid, its subordinate uids (a container's uid 10000 maps to
// sub_uid+10000) and root, through the plugin over gRPC; another tenant's
// uid and subordinate uids get EACCES even with every mode bit open.
func TestFUSEOnlyTheTenantsUIDs(t *testing.T) {
	const sub, count = 1_610_000_000, 65536
	tenant := sdk.User{Name: "kg-sfuids", UID: 61101, GID: 61101, SubUID: sub, SubGID: sub, Count: count}
	// The neighbour's ids, as the engine allocates them: the next uid and
	// the next subordinate range.
	const neighbour, neighbourSub = 61102, sub + count
	ctx := context.Background()
	s := sdktest.StateFS(t, newFUSE())
	base, err := os.MkdirTemp("", "sf-uids-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	// Every uid may reach the mount point; the filesystem decides.
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	req := provisionReq(filepath.Join(base, "state"))
	req.User = tenant
	h, err := s.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Deprovision(ctx, h); err != nil {
			t.Error(err)
		}
	})
	if m, err := s.Mount(ctx, h); err != nil || m.Type != sdk.MountFUSE {
		t.Fatalf("Mount = %+v, %v", m, err)
	}
	// The tenant opens every mode bit of its state.
	if err := os.Chmod(req.Dir, 0o777); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		uid  uint32
		want string
	}{
		{"the tenant's user", tenant.UID, "ok"},
		{"its container's uid 10000", sub + 10000, "ok"},
		{"its container's root", sub, "ok"},
		{"its last subordinate uid", sub + count - 1, "ok"},
		{"another tenant's user", neighbour, "EACCES"},
		{"another tenant's container uid 10000", neighbourSub + 10000, "EACCES"},
		{"another tenant's container root", neighbourSub, "EACCES"},
		{"the uid below the range", sub - 1, "EACCES"},
		{"nobody", 65534, "EACCES"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tryAs(t, tt.uid, req.Dir); got != tt.want {
				t.Errorf("uid %d: %s, want %s", tt.uid, got, tt.want)
			}
		})
	}
	if _, err := os.ReadDir(req.Dir); err != nil {
		t.Errorf("root: %v", err)
	}
	if err := os.WriteFile(filepath.Join(req.Dir, "by-root"), nil, 0o600); err != nil {
		t.Errorf("root: %v", err)
	}
}

package statefs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
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
	if d.mounted() {
		t.Error("after Unmount: still mounted")
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
				if d.mounted() {
					t.Fatal("after umount -l: still mounted")
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
				if ms, err := d.mounts(); err != nil || len(ms) != 1 || ms[0].FSType != "tmpfs" {
					t.Errorf("the helper unmounted the tmpfs mounted over its mount point: mounts %+v, %v", ms, err)
				}
				if err := unix.Unmount(d.Dir, 0); err != nil {
					t.Fatal(err)
				}
			}
			if ms, err := d.mounts(); err != nil || len(ms) != 0 {
				t.Errorf("mounts left behind: %+v, %v", ms, err)
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

// writer appends fsync'd chunks to a file until it fails or is stopped;
// acked counts the bytes whose fsync returned.
type writer struct {
	acked atomic.Int64
	stop  chan struct{}
	done  chan error
}

// chunkByte is the content of the i'th chunk a writer writes.
func chunkByte(i int) byte { return byte('a' + i%26) }

const chunkSize = 16 << 10

func startWriter(t *testing.T, path string) *writer {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		defer f.Close()
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				w.done <- nil
				return
			default:
			}
			if _, err := f.Write(bytes.Repeat([]byte{chunkByte(i)}, chunkSize)); err != nil {
				w.done <- err
				return
			}
			if err := f.Sync(); err != nil {
				w.done <- err
				return
			}
			w.acked.Add(chunkSize)
		}
	}()
	return w
}

// waitAcked waits until w has n bytes acknowledged.
func (w *writer) waitAcked(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for w.acked.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("writer acknowledged %d bytes in 10s, want %d", w.acked.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkPrefix checks that path holds at least n bytes, the writer's chunks.
func checkPrefix(t *testing.T, path string, n int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) < n {
		t.Fatalf("%s holds %d bytes, %d were fsync'd", path, len(b), n)
	}
	for i := 0; int64(i*chunkSize) < n; i++ {
		if c := b[i*chunkSize : (i+1)*chunkSize]; !bytes.Equal(c, bytes.Repeat([]byte{chunkByte(i)}, chunkSize)) {
			t.Fatalf("%s: chunk %d of the fsync'd %d bytes is corrupt", path, i, n)
		}
	}
}

// TestFUSEPluginFaults, through the plugin over gRPC, with writers busy in
// every state: tearing one instance's state down leaves no mount, helper
// or directory of it, and the others keep serving; a helper SIGKILLed
// mid-write leaves a stale mount (ENOTCONN) that a restarted plugin's
// Recover clears, the fsync'd data is there, and the Merkle root equals a
// fresh scan; the neighbours' helpers are never replaced.
func TestFUSEPluginFaults(t *testing.T) {
	ctx := context.Background()
	s := sdktest.StateFS(t, newFUSE())
	handles := map[string]sdk.Handle{}
	data := map[string]handleData{}
	writers := map[string]*writer{}
	helpers := map[string]helperRecord{}
	for _, name := range []string{"gone", "killed", "kept"} {
		req := provisionReq(filepath.Join(t.TempDir(), name))
		req.SizeBytes = 64 << 20
		h, err := s.Provision(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := newFUSE().Deprovision(ctx, h); err != nil {
				t.Error(err)
			}
		})
		if _, err := s.Mount(ctx, h); err != nil {
			t.Fatal(err)
		}
		d, _ := decode(h)
		handles[name], data[name] = h, d
		writers[name] = startWriter(t, filepath.Join(d.Dir, "log"))
		writers[name].waitAcked(t, 4*chunkSize)
		helpers[name], _ = d.helper()
	}
	kept := func(when string) {
		t.Helper()
		w := writers["kept"]
		n := w.acked.Load()
		w.waitAcked(t, n+4*chunkSize)
		if r, alive := data["kept"].helper(); !alive || r != helpers["kept"] {
			t.Fatalf("%s: the kept state's helper is %+v (alive %v), was %+v", when, r, alive, helpers["kept"])
		}
	}

	// One state torn down while its writer and the others write.
	gone := data["gone"]
	if err := s.Unmount(ctx, handles["gone"]); err != nil {
		t.Fatal(err)
	}
	if err := s.Deprovision(ctx, handles["gone"]); err != nil {
		t.Fatal(err)
	}
	if err := <-writers["gone"].done; err == nil {
		t.Error("the torn-down state's writer went on")
	}
	if !endsWithin(helpers["gone"], 0) {
		t.Errorf("the torn-down state's helper %d runs", helpers["gone"].Pid)
	}
	for _, p := range []string{gone.Dir, gone.backing(), gone.runDir()} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after Deprovision: %s: %v, want it gone", p, err)
		}
	}
	kept("after tearing a neighbour down")

	// One helper SIGKILLed mid-write.
	killed := data["killed"]
	w := writers["killed"]
	w.waitAcked(t, w.acked.Load()+2*chunkSize)
	if err := unix.Kill(helpers["killed"].Pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	werr := <-w.done
	acked := w.acked.Load()
	if werr == nil {
		t.Fatal("the writer of the killed helper's state went on")
	}
	if _, err := os.Stat(filepath.Join(killed.Dir, "log")); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("stat through the killed helper's mount: %v, want ENOTCONN", err)
	}
	kept("with a neighbour's mount stale")

	// A restarted plugin recovers every state: the stale mount is cleared
	// and served by a new helper, the live ones are adopted.
	restarted := sdktest.StateFS(t, newFUSE())
	for _, name := range []string{"killed", "kept"} {
		if _, err := restarted.Recover(ctx, handles[name]); err != nil {
			t.Fatalf("Recover %s: %v", name, err)
		}
	}
	if r, alive := killed.helper(); !alive || r == helpers["killed"] {
		t.Fatalf("after Recover the killed state's helper is %+v (alive %v)", r, alive)
	}
	if n := mountsAt(t, killed.Dir); n != 1 {
		t.Errorf("%d mounts at %s after Recover, want 1", n, killed.Dir)
	}
	checkPrefix(t, filepath.Join(killed.Dir, "log"), acked)
	got, err := restarted.Hash(ctx, handles["killed"])
	if err != nil {
		t.Fatal(err)
	}
	scan, err := merkle.Scan(killed.backing())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, scan[:]) {
		t.Errorf("root after the restart %x, fresh scan %x", got, scan)
	}
	kept("after the restarted plugin recovered")
	close(writers["kept"].stop)
	if err := <-writers["kept"].done; err != nil {
		t.Errorf("the kept state's writer: %v", err)
	}
	checkPrefix(t, filepath.Join(data["kept"].Dir, "log"), writers["kept"].acked.Load())
}

// mountsAt counts the mounts at mount point dir.
func mountsAt(t *testing.T, dir string) int {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			n++
		}
	}
	return n
}

// TestFUSEProvisionMakesOnlyDir: in fuse mode Provision makes nothing but
// its Dir, so that the engine's removal of Dir, after an agent died
// before recording the handle, leaves nothing behind; the backing
// directory is made on the handle's first use, and a retried Provision
// adopts what is there.
func TestFUSEProvisionMakesOnlyDir(t *testing.T) {
	ctx := context.Background()
	s := newFUSE()
	entries := func(dir string) []string {
		t.Helper()
		es, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		return names
	}

	// The handle lost: the engine removes Dir, and nothing is left.
	base := t.TempDir()
	lost := provisionReq(filepath.Join(base, "lost"))
	if _, err := s.Provision(ctx, lost); err != nil {
		t.Fatal(err)
	}
	if got := entries(base); fmt.Sprint(got) != "[lost]" {
		t.Fatalf("after Provision the parent holds %v, want only [lost]", got)
	}
	if err := os.RemoveAll(lost.Dir); err != nil {
		t.Fatal(err)
	}
	if got := entries(base); len(got) != 0 {
		t.Errorf("after the engine removed Dir the parent holds %v", got)
	}

	// A handle naming a directory Provision did not mark gets no backing
	// directory and no mount.
	other := filepath.Join(base, "other")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	forged, _ := json.Marshal(handleData{Dir: other, Instance: "alice/web", Size: 1 << 20, UID: nobody.UID, GID: nobody.GID, Mode: modeFUSE})
	if _, err := s.Mount(ctx, sdk.Handle{Version: handleVersion, Data: forged}); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("Mount of an unmarked directory: %v, want not found", err)
	}
	if got := entries(base); fmt.Sprint(got) != "[other]" {
		t.Errorf("after the forged Mount the parent holds %v, want only [other]", got)
	}
	if n := mountsAt(t, other); n != 0 {
		t.Errorf("%d mounts at the unmarked %s", n, other)
	}

	// The handle recorded: a Recover before any Mount finds the state, and
	// Mount serves it over a backing directory owned by the tenant.
	req := provisionReq(filepath.Join(base, "kept"))
	h, err := s.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := newFUSE().Deprovision(ctx, h); err != nil {
			t.Error(err)
		}
	})
	if _, err := s.Recover(ctx, h); err != nil {
		t.Fatalf("Recover before Mount: %v", err)
	}
	if m, err := s.Mount(ctx, h); err != nil || m.Type != sdk.MountFUSE {
		t.Fatalf("Mount = %+v, %v", m, err)
	}
	d, _ := decode(h)
	fi, err := os.Lstat(d.backing())
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != nobody.UID {
		t.Fatalf("backing %s: %v, %v; want a 0700 directory of uid %d", d.backing(), fi, err, nobody.UID)
	}
	if err := os.WriteFile(filepath.Join(req.Dir, "f"), []byte("kept"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A retried Provision, mounted or not, adopts the state.
	again, err := newFUSE().Provision(ctx, req)
	if err != nil || !bytes.Equal(again.Data, h.Data) {
		t.Fatalf("retried Provision = %s, %v; want %s", again.Data, err, h.Data)
	}
	if b, err := os.ReadFile(filepath.Join(req.Dir, "f")); err != nil || string(b) != "kept" {
		t.Errorf("after a retried Provision: %q, %v", b, err)
	}
	if err := newFUSE().Unmount(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := newFUSE().Provision(ctx, req); err != nil {
		t.Fatalf("Provision of the unmounted state: %v", err)
	}
	// A mount point replaced by a symlink is refused.
	if err := os.RemoveAll(req.Dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(base, req.Dir); err != nil {
		t.Fatal(err)
	}
	if _, err := newFUSE().Provision(ctx, req); !errors.Is(err, sdk.ErrInvalid) {
		t.Errorf("Provision over a symlink: %v, want invalid", err)
	}
	if err := os.Remove(req.Dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(req.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
}

package ctrruntime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/fusemount"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/statefs"
)

// TestGiveState checks how a rootless daemon's workload is given its state:
// the root and what the tenant's own ids own (a seed) become the
// workload's; others' files, and whatever a symlink points at outside the
// state, are left alone; a state given before is not walked again; and a
// state owned by a stranger is refused, unchanged.
func TestGiveState(t *testing.T) {
	u := sdk.User{UID: 61500, GID: 61501, SubUID: 1_200_000_000, SubGID: 1_300_000_000, Count: 65536}
	const workload = 10000
	wu, wg := rootlessID(u.SubUID, workload), rootlessID(u.SubGID, workload)
	type owner struct{ uid, gid uint32 }
	tenant, given, other := owner{u.UID, u.GID}, owner{wu, wg}, owner{u.SubUID + 4, u.SubGID + 4}
	tests := []struct {
		name    string
		root    owner
		wantErr string
		// want are the owners after, by path; "outside" is the symlink's
		// target outside the state.
		want map[string]owner
	}{
		{name: "seeded", root: tenant, want: map[string]owner{
			".": given, "seed": given, "dir": given, "dir/deep": given, "link": given, "others": other, "mixed": {wu, u.SubGID + 4}, "outside": tenant,
		}},
		{name: "given before", root: given, want: map[string]owner{
			".": given, "seed": tenant, "dir/deep": tenant, "others": other, "outside": tenant,
		}},
		{name: "stranger's", root: owner{4242, 4242}, wantErr: "neither the tenant's", want: map[string]owner{
			".": {4242, 4242}, "seed": tenant, "outside": tenant,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			dir := filepath.Join(base, "state")
			outside := filepath.Join(base, "outside")
			files := map[string]owner{"seed": tenant, "dir/deep": tenant, "others": other, "mixed": {u.UID, u.SubGID + 4}, "outside": tenant}
			for _, p := range []string{dir, filepath.Join(dir, "dir")} {
				if err := os.Mkdir(p, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			chown(t, filepath.Join(dir, "dir"), tenant.uid, tenant.gid)
			for p, o := range files {
				path := filepath.Join(dir, p)
				if p == "outside" {
					path = outside
				}
				if err := os.WriteFile(path, []byte(p), 0o600); err != nil {
					t.Fatal(err)
				}
				chown(t, path, o.uid, o.gid)
			}
			if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
				t.Fatal(err)
			}
			if err := os.Lchown(filepath.Join(dir, "link"), int(u.UID), int(u.GID)); err != nil {
				t.Fatal(err)
			}
			chown(t, dir, tt.root.uid, tt.root.gid)

			err := giveState(dir, u, workload)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("giveState: %v, want error %q", err, tt.wantErr)
			}
			for p, want := range tt.want {
				path := filepath.Join(dir, p)
				if p == "outside" {
					path = outside
				}
				fi, err := os.Lstat(path)
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if got := (owner{st.Uid, st.Gid}); got != want {
					t.Errorf("%s owned by %v, want %v", p, got, want)
				}
			}
		})
	}
}

func chown(t *testing.T, path string, uid, gid uint32) {
	t.Helper()
	if err := os.Chown(path, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
}

// fuseProbe writes to the state, shows whether /dev/fuse is there, pushes
// past the state's 1 MiB quota and writes again after deleting.
const fuseProbe = `cat /state/probe 2>/dev/null; echo hello >>/state/probe && echo written
test -e /dev/fuse && echo fuse-visible || echo no-fuse
dd if=/dev/zero of=/state/big bs=64k count=64 2>&1 | grep -q 'No space left' && echo quota-held
rm -f /state/big && echo again >/state/after && echo writes-after-delete
echo done; exec sleep 1000`

// TestFUSEState runs a container on a real statefs-fuse state, below a
// root-only directory, in each daemon mode: the workload writes it as its own non-root uid (the
// tenant's own from the shared daemon, a subordinate one in the tenant's
// own), never sees /dev/fuse, stops at the quota and goes on after
// deleting; the state then mounts again (the statefs adopts a root given
// to the workload) and a second container reads what the first wrote.
func TestFUSEState(t *testing.T) {
	a, b := newTenant(t), newTenant(t)
	r := perTenant(t, a)
	a, b = prepare(t, r, a), prepare(t, r, b)
	ctx := context.Background()
	for _, tn := range []testTenant{a, b} {
		mode := r.modeOf(tn.name)
		t.Run(mode, func(t *testing.T) {
			// Root-only, as the engine's state directory: the tenant's
			// own daemon does not reach the state there.
			base := t.TempDir()
			if err := os.Chmod(base, 0o700); err != nil {
				t.Fatal(err)
			}
			sfs := statefs.New()
			sh, err := sfs.Provision(ctx, &sdk.ProvisionRequest{
				Instance: sdk.Instance{Tenant: tn.name, Name: "fuse"}, User: tn.user, SizeBytes: 1 << 20, Dir: filepath.Join(base, "state"),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := sfs.Deprovision(ctx, sh); err != nil {
					t.Errorf("deprovision: %v", err)
				}
			})
			hostUID := tn.user.UID
			if mode == ModePerTenant {
				hostUID = rootlessID(tn.user.SubUID, defaultWorkloadUID)
			}
			for i, want := range []string{"hello\n", "hello\nhello\n"} {
				m, err := sfs.Mount(ctx, sh)
				if err != nil {
					t.Fatalf("mount %d: %v", i, err)
				}
				if m.Type != sdk.MountFUSE {
					t.Fatalf("state mount of type %q, want FUSE", m.Type)
				}
				m.Target, m.State = "/", true
				req := request(t, tn, instance{name: fmt.Sprintf("fuse%d", i), args: []string{"sh", "-c", fuseProbe}})
				req.Mounts = []sdk.Mount{m}
				req.Permissions = sdk.Permissions{{Name: sdk.PermStateWrite}}
				h, err := r.Start(ctx, req)
				if err != nil {
					t.Fatalf("start %d: %v", i, err)
				}
				// Destroyed below; here too should the test fail first.
				t.Cleanup(func() { _ = r.Destroy(ctx, h) })
				out := waitLog(t, r, h, "done\n", 30*time.Second)
				for _, s := range []string{"written", "no-fuse", "quota-held", "writes-after-delete"} {
					if !strings.Contains(out, s+"\n") {
						t.Errorf("start %d: no %q in:\n%s\nstderr:\n%s", i, s, out, logs(t, r, h, sdk.Stderr))
					}
				}
				fi, err := os.Stat(filepath.Join(m.Source, "probe"))
				if err != nil {
					t.Fatal(err)
				}
				if uid := fileUID(fi); uid != hostUID {
					t.Errorf("state file owned by %d on the host, want the workload's %d", uid, hostUID)
				}
				if b, err := os.ReadFile(filepath.Join(m.Source, "probe")); err != nil || string(b) != want {
					t.Errorf("state file after start %d: %q, %v; want %q", i, b, err, want)
				}
				d, err := decodeHandle(h)
				if err != nil {
					t.Fatal(err)
				}
				if mode == ModePerTenant {
					if n := daemonMounts(t, tn, stateMountPoint(d)); n != 1 {
						t.Errorf("start %d: the daemon's mount namespace has %d mounts at %s, want 1", i, n, stateMountPoint(d))
					}
				}
				if err := r.Destroy(ctx, h); err != nil {
					t.Fatal(err)
				}
				if mode == ModePerTenant {
					if daemonMounts(t, tn, stateMountPoint(d)) != 0 {
						t.Errorf("destroy %d left a mount at %s in the daemon's mount namespace", i, stateMountPoint(d))
					}
					if _, err := os.Lstat(stateMountPoint(d)); !errors.Is(err, fs.ErrNotExist) {
						t.Errorf("destroy %d left the mount point %s: %v", i, stateMountPoint(d), err)
					}
				}
				if err := sfs.Unmount(ctx, sh); err != nil {
					t.Fatalf("unmount %d: %v", i, err)
				}
			}
		})
	}
}

// daemonMounts counts the mounts at dir in the mount namespace of tn's own
// daemon.
func daemonMounts(t *testing.T, tn testTenant, dir string) int {
	t.Helper()
	td, err := decodeTenant(tn.handle)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := daemonChild(td)
	if err != nil {
		t.Fatal(err)
	}
	mi, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	ms, err := fusemount.Parse(mi)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range ms {
		if m.Point == dir {
			n++
		}
	}
	return n
}

// TestShowStateReplaces checks that showing a state to a tenant's daemon
// replaces what an earlier mount left at its path there (a state whose
// helper was replaced), and that hiding it leaves nothing there.
func TestShowStateReplaces(t *testing.T) {
	tn := newTenant(t)
	r := perTenant(t, tn)
	tn = prepare(t, r, tn)
	td, err := decodeTenant(tn.handle)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	at := stateMountPoint(handleData{Daemon: td.Address, ID: "shown"})
	if err := makeMountPoint(at, tn.user); err != nil {
		t.Fatal(err)
	}
	pid, err := daemonChild(td)
	if err != nil {
		t.Fatal(err)
	}
	seen := filepath.Join(fmt.Sprintf("/proc/%d/root", pid), at, "which")
	host, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	for _, which := range []string{"first", "second"} {
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "which"), []byte(which), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := r.showState(td, dir, at); err != nil {
			t.Fatal(err)
		}
		// Twice is once.
		if err := r.showState(td, dir, at); err != nil {
			t.Fatal(err)
		}
		if err := unix.Unmount(dir, 0); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(seen); err != nil || string(b) != which {
			t.Errorf("the daemon sees %q, %v at %s, want %q", b, err, at, which)
		}
		if n := daemonMounts(t, tn, at); n != 1 {
			t.Errorf("%d mounts at %s in the daemon's namespace, want 1", n, at)
		}
	}
	if err := r.hideState(td, at); err != nil {
		t.Fatal(err)
	}
	if daemonMounts(t, tn, at) != 0 {
		t.Errorf("hideState left a mount at %s", at)
	}
	// No thread of this process stayed in the daemon's namespace.
	threads, _ := filepath.Glob("/proc/self/task/*/ns/mnt")
	for _, th := range threads {
		if ns, err := os.Readlink(th); err == nil && ns != host {
			t.Errorf("thread %s is in mount namespace %s, not the host's %s", th, ns, host)
		}
	}
}

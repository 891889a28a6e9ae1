package ctrruntime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/tenant"
)

// TestLifecycle covers exit status, Stop (grace, then kill), logs with
// their cap, Destroy leaving nothing, and Recover adopting a running
// container in a new plugin process without restarting it.
func TestLifecycle(t *testing.T) {
	r := newRuntime(t, nil)
	tn := newTenant(t)
	ctx := context.Background()

	t.Run("exit", func(t *testing.T) {
		h, _ := start(t, r, tn, instance{name: "exit", args: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}})
		st := waitExit(t, r, h, 30*time.Second)
		if st.State != sdk.StateExited || st.Cause != sdk.CauseExit || st.ExitCode != 3 {
			t.Errorf("status %+v, want exited with 3", st)
		}
		if out := logs(t, r, h, sdk.Stdout); out != "out\n" {
			t.Errorf("stdout %q", out)
		}
		if out := logs(t, r, h, sdk.Stderr); out != "err\n" {
			t.Errorf("stderr %q", out)
		}
	})

	t.Run("stop", func(t *testing.T) {
		// sh as pid 1 of its namespace ignores SIGTERM: Stop kills it
		// after the grace period; a trap ends at once.
		for _, tc := range []struct {
			name, script string
			min, max     time.Duration
		}{
			{"sigterm", "trap 'exit 0' TERM; echo up; while true; do sleep 0.1; done", 0, 5 * time.Second},
			{"kill", "echo up; exec sleep 1000", time.Second, 10 * time.Second},
		} {
			h, _ := start(t, r, tn, instance{name: "stop-" + tc.name, args: []string{"sh", "-c", tc.script}})
			waitLog(t, r, h, "up\n", 30*time.Second)
			t0 := time.Now()
			if err := r.Stop(ctx, h, time.Second); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(t0); d < tc.min || d > tc.max {
				t.Errorf("%s: Stop took %v", tc.name, d)
			}
			st, err := r.Inspect(ctx, h)
			if err != nil || st.State != sdk.StateStopped || st.Cause != sdk.CauseKilled {
				t.Errorf("%s: after Stop %+v, %v", tc.name, st, err)
			}
			if err := r.Stop(ctx, h, time.Second); err != nil {
				t.Errorf("%s: second Stop: %v", tc.name, err)
			}
		}
	})

	t.Run("log-cap", func(t *testing.T) {
		h, req := start(t, r, tn, instance{name: "chatty", args: []string{"sh", "-c", "head -c 12000000 /dev/zero | tr '\\0' x; echo; echo end"}})
		waitExit(t, r, h, 60*time.Second)
		fi, err := os.Stat(filepath.Join(req.RunDir, stdoutFile))
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(maxLogBytes + len(logLimitNote)); fi.Size() != want {
			t.Errorf("stdout.log is %d bytes, want %d", fi.Size(), want)
		}
		if out := logs(t, r, h, sdk.Stdout); !strings.HasSuffix(out, logLimitNote) {
			t.Errorf("stdout does not end with the limit note: %q", out[max(0, len(out)-100):])
		}
	})

	t.Run("leftover", func(t *testing.T) {
		// A second Start of an instance replaces the container the core
		// has no handle of any more.
		req := request(t, tn, instance{name: "twice", args: []string{"sh", "-c", "echo up; exec sleep 1000"}})
		h1, err := r.Start(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		waitLog(t, r, h1, "up\n", 30*time.Second)
		first, _ := r.Inspect(ctx, h1)
		h2, err := r.Start(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Destroy(ctx, h2)
		waitLog(t, r, h2, "up\n", 30*time.Second)
		if second, err := r.Inspect(ctx, h2); err != nil || second.State != sdk.StateRunning || second.Pid == first.Pid {
			t.Errorf("second start: %+v, %v; first pid %d", second, err, first.Pid)
		}
	})

	t.Run("containerd-restart", func(t *testing.T) {
		// containerd restarts (its shims go on): the container is adopted
		// as it runs.
		h, _ := start(t, r, tn, instance{name: "survivor", args: []string{"sh", "-c", "echo up; exec sleep 1000"}})
		waitLog(t, r, h, "up\n", 30*time.Second)
		before, err := r.Inspect(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.StopContainerd(); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Inspect(ctx, h); sdk.CodeOf(err) != sdk.CodeUnavailable {
			t.Errorf("Inspect with containerd down: %v, want unavailable", err)
		}
		if err := env.StartContainerd(ctx); err != nil {
			t.Fatal(err)
		}
		h2, err := r.Recover(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		after, err := r.Inspect(ctx, h2)
		if err != nil || after.State != sdk.StateRunning || after.Pid != before.Pid {
			t.Errorf("after a containerd restart %+v, %v; before %+v", after, err, before)
		}
	})

	t.Run("destroy-and-recover", func(t *testing.T) {
		req := request(t, tn, instance{name: "adopted", args: []string{"sh", "-c", "echo up; exec sleep 1000"}})
		h, err := r.Start(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		waitLog(t, r, h, "up\n", 30*time.Second)
		before, err := r.Inspect(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		// A new plugin process, with a client of its own.
		r.Close()
		r2 := newRuntime(t, nil)
		h2, err := r2.Recover(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		after, err := r2.Inspect(ctx, h2)
		if err != nil || after.State != sdk.StateRunning || after.Pid != before.Pid {
			t.Errorf("after Recover %+v, %v; before %+v", after, err, before)
		}
		// A handle whose labels do not match is refused.
		d, _ := decodeHandle(h)
		d.RunDir = "/elsewhere"
		forged, _ := d.encode()
		if _, err := r2.Recover(ctx, forged); sdk.CodeOf(err) != sdk.CodeInvalid {
			t.Errorf("Recover of a forged handle: %v", err)
		}
		if err := r2.Destroy(ctx, h2); err != nil {
			t.Fatal(err)
		}
		checkNothingLeft(t, d.ID)
		if err := r2.Destroy(ctx, h2); err != nil {
			t.Errorf("second Destroy: %v", err)
		}
		if _, err := r2.Recover(ctx, h2); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("Recover after Destroy: %v", err)
		}
		if _, err := os.Stat(filepath.Join(req.Cgroup.ProcsFiles[0], "..", "ctr")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("container cgroup left: %v", err)
		}
	})
}

// TestDaemonAdoption restarts the plugin while a per-tenant daemon runs a
// container: the daemon, in its own session, goes on; the new plugin's
// PrepareTenant adopts it (same process) and Recover the container (same
// task).
func TestDaemonAdoption(t *testing.T) {
	ctx := context.Background()
	tn := newTenant(t)
	cfg := sdk.Config{"daemon": ModePerTenant}
	r := newRuntime(t, cfg)
	treq := &sdk.TenantRequest{Tenant: tn.name, User: tn.user, Cgroup: tn.cgroup, RunDir: filepath.Join(t.TempDir(), "tenant")}
	th, err := r.PrepareTenant(ctx, treq)
	if err != nil {
		t.Fatal(err)
	}
	td, err := decodeTenant(th)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := readStat(td.Pid); err != nil || st[3] != strconv.Itoa(td.Pid) {
		t.Errorf("daemon %d is not the leader of its own session: %v, %v", td.Pid, st, err)
	}
	again, err := r.PrepareTenant(ctx, treq)
	if err != nil || string(again.Data) != string(th.Data) {
		t.Errorf("second PrepareTenant: %s, %v; want %s", again.Data, err, th.Data)
	}
	tn.handle = th
	req := request(t, tn, instance{name: "adopted", args: []string{"sh", "-c", "echo up; exec sleep 1000"}, resources: sdk.Resources{Pids: 16}})
	h, err := r.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, r, h, "up\n", 30*time.Second)
	before, err := r.Inspect(ctx, h)
	if err != nil {
		t.Fatal(err)
	}

	// A new plugin process, with a client of its own.
	r.Close()
	r2 := newRuntime(t, cfg)
	th2, err := r2.PrepareTenant(ctx, treq)
	if err != nil || string(th2.Data) != string(th.Data) {
		t.Fatalf("PrepareTenant after a restart: %s, %v; want the running daemon %s", th2.Data, err, th.Data)
	}
	h2, err := r2.Recover(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	after, err := r2.Inspect(ctx, h2)
	if err != nil || after.State != sdk.StateRunning || after.Pid != before.Pid {
		t.Errorf("after Recover %+v, %v; before %+v", after, err, before)
	}
	if out := logs(t, r2, h2, sdk.Stdout); out != "up\n" {
		t.Errorf("logs after Recover: %q", out)
	}
	d, _ := decodeHandle(h2)
	if err := r2.Destroy(ctx, h2); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{d.LogDir, filepath.Join("/sys/fs/cgroup/pids", d.Cgroup)} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Destroy: %v", dir, err)
		}
	}
	// rootlesskit, its child in the namespace, containerd: what Release
	// must end.
	if pids := daemonProcesses(td); len(pids) < 3 || !slices.Contains(pids, td.Pid) {
		t.Errorf("daemon processes %v, want rootlesskit %d and its children", pids, td.Pid)
	}
	if err := r2.ReleaseTenant(ctx, th2); err != nil {
		t.Fatal(err)
	}
	checkDaemonGone(t, th2)
	if err := r2.ReleaseTenant(ctx, th2); err != nil {
		t.Errorf("second ReleaseTenant: %v", err)
	}
}

// TestDaemonOverTenantLimits starts a per-tenant daemon in a tenant whose
// totals cannot hold it (the daemon counts against the tenant's cgroup):
// PrepareTenant fails saying so, with the limits and the daemon's own
// reason, and leaves no process or directory; a neighbour tenant's
// daemon starts meanwhile.
func TestDaemonOverTenantLimits(t *testing.T) {
	ctx := context.Background()
	r := newRuntime(t, sdk.Config{"daemon": ModePerTenant})
	small := newLimitedTenant(t, tenant.Limits{MemoryBytes: 32 << 20, Pids: 16})
	neighbour := prepare(t, r, newTenant(t))
	req := &sdk.TenantRequest{Tenant: small.name, User: small.user, Cgroup: small.cgroup, RunDir: filepath.Join(t.TempDir(), "tenant"),
		Resources: sdk.Resources{MemoryBytes: 32 << 20, Pids: 16}}
	h, err := r.PrepareTenant(ctx, req)
	var se *sdk.Error
	if !errors.As(err, &se) || se.Code != sdk.CodeUnavailable || !strings.Contains(se.Message, "did not start") || !strings.Contains(se.Message, "pids 16") {
		t.Fatalf("PrepareTenant in a 16-pid tenant = %s, %v; want unavailable, did not start, naming pids 16", h.Data, err)
	}
	t.Logf("the error: %v", err)
	if _, err := os.Lstat(filepath.Join(small.user.Home, ".kigumi-containerd")); err == nil {
		t.Errorf("the failed daemon's directory is left")
	}
	if pids, err := tenants.Processes(small.name); err != nil || len(pids) > 0 {
		t.Errorf("processes left in the small tenant's cgroup: %v, %v", pids, err)
	}
	nd, err := decodeTenant(neighbour.handle)
	if err != nil || !r.serving(ctx, nd) {
		t.Errorf("the neighbour's daemon does not serve: %v", err)
	}
}

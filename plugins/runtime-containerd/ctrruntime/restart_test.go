package ctrruntime

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// TestDaemonRestartReached kills a tenant's daemon (its rootlesskit) under
// an instance: the next PrepareTenant starts a new daemon and drops the old
// one's client, and the calls on the instance started before reach the new
// daemon (which knows no container: its directory is fresh) instead of
// being refused as the old daemon's socket.
func TestDaemonRestartReached(t *testing.T) {
	ctx := context.Background()
	tn := newTenant(t)
	r := perTenant(t, tn)
	treq := &sdk.TenantRequest{Tenant: tn.name, User: tn.user, Cgroup: tn.cgroup, RunDir: filepath.Join(t.TempDir(), "tenant")}
	var th sdk.Handle
	// Registered before the instance's Destroy, so run after it: the
	// tenant's latest daemon is released.
	t.Cleanup(func() {
		if err := r.ReleaseTenant(ctx, th); err != nil {
			t.Errorf("release: %v", err)
		}
		checkDaemonGone(t, th)
	})
	th, err := r.PrepareTenant(ctx, treq)
	if err != nil {
		t.Fatal(err)
	}
	old, err := decodeTenant(th)
	if err != nil {
		t.Fatal(err)
	}
	if old.RunDir != treq.RunDir {
		t.Errorf("the tenant handle's run dir %q, want %q", old.RunDir, treq.RunDir)
	}
	tn.handle = th
	h, _ := start(t, r, tn, instance{name: "before", args: []string{"sh", "-c", "exec sleep 1000"}, resources: sdk.Resources{Pids: 16}})
	if err := syscall.Kill(old.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); alive(old); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("rootlesskit %d still runs after SIGKILL", old.Pid)
		}
	}
	th2, err := r.PrepareTenant(ctx, treq)
	if err != nil {
		t.Fatal(err)
	}
	th = th2
	nd, err := decodeTenant(th2)
	if err != nil {
		t.Fatal(err)
	}
	if nd.Pid == old.Pid || !alive(nd) {
		t.Fatalf("PrepareTenant after the daemon died: daemon %d, want a new one (the old was %d)", nd.Pid, old.Pid)
	}
	r.mu.Lock()
	for k := range r.clients {
		if k.peer == *old.peer() {
			t.Errorf("the dead daemon's client %+v is kept", k)
		}
	}
	r.mu.Unlock()
	for _, tc := range []struct {
		name string
		call func() error
		// want is the error code of the call, empty for none.
		want sdk.Code
	}{
		{"inspect", func() error { _, err := r.Inspect(ctx, h); return err }, sdk.CodeNotFound},
		{"recover", func() error { _, err := r.Recover(ctx, h); return err }, sdk.CodeNotFound},
		{"destroy", func() error { return r.Destroy(ctx, h) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if (tc.want == "") != (err == nil) || (err != nil && sdk.CodeOf(err) != tc.want) {
				t.Errorf("%s of the instance started before the restart: %v, want code %v", tc.name, err, tc.want)
			}
		})
	}
}

// TestLegacyDaemonRecord adopts a running daemon whose record and tenant
// handle, written before the uid was kept, have none: its listener passes
// the check with the tenant's uid, so a new plugin's PrepareTenant keeps
// it (same rootlesskit) and rewrites the record with the uid.
func TestLegacyDaemonRecord(t *testing.T) {
	ctx := context.Background()
	tn := newTenant(t)
	r := perTenant(t, tn)
	runDir := filepath.Join(t.TempDir(), "tenant")
	tn = prepareAt(t, r, tn, runDir)
	td, err := decodeTenant(tn.handle)
	if err != nil {
		t.Fatal(err)
	}
	// The JSON of a record from before: no uid, no run dir.
	b, err := json.Marshal(map[string]any{"mode": td.Mode, "tenant": td.Tenant, "dir": td.Dir, "address": td.Address, "pid": td.Pid, "start_time": td.StartTime})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(runDir, daemonFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	legacy := sdk.Handle{Version: tenantHandleVersion, Data: b}
	if ld, err := decodeTenant(legacy); err != nil || ld.UID != 0 {
		t.Fatalf("decode a legacy tenant handle: %+v, %v", ld, err)
	}
	got, err := r.daemonOf(&sdk.StartRequest{Instance: sdk.Instance{Tenant: tn.name, Name: "web"}, User: tn.user, Cgroup: sdk.Cgroup{Path: "/kigumi/x"}, Tenant: legacy})
	if err != nil || got.UID != tn.user.UID || got.Pid != td.Pid {
		t.Errorf("daemonOf a legacy tenant handle: %+v, %v; want uid %d, pid %d", got, err, tn.user.UID, td.Pid)
	}

	// A new plugin process, with no client of the daemon yet.
	r2 := perTenant(t, tn)
	th, err := r2.PrepareTenant(ctx, &sdk.TenantRequest{Tenant: tn.name, User: tn.user, Cgroup: tn.cgroup, RunDir: runDir})
	if err != nil {
		t.Fatal(err)
	}
	nd, err := decodeTenant(th)
	if err != nil {
		t.Fatal(err)
	}
	if nd.Pid != td.Pid || nd.StartTime != td.StartTime || nd.UID != tn.user.UID || nd.RunDir != runDir {
		t.Errorf("PrepareTenant over a legacy record: %+v, want the running daemon %d of uid %d", nd, td.Pid, tn.user.UID)
	}
	rec, err := readDaemonFile(runDir)
	if err != nil || rec.UID != tn.user.UID || rec.Pid != td.Pid {
		t.Errorf("the record after adoption: %+v, %v; want uid %d", rec, err, tn.user.UID)
	}
}

// TestLegacyInstanceHandle destroys an instance whose handle, written
// before the daemon's peer was kept, names none: root does not dial the
// daemon unchecked, so Destroy kills and removes the container's cgroup,
// its logs and its slirp4netns without it, and other calls say only
// Destroy works.
func TestLegacyInstanceHandle(t *testing.T) {
	ctx := context.Background()
	tn := newTenant(t)
	r := perTenant(t, tn)
	tn = prepare(t, r, tn)
	h, _ := start(t, r, tn, instance{name: "legacy", args: []string{"sh", "-c", "echo up; exec sleep 1000"}, resources: sdk.Resources{Pids: 16}})
	waitLog(t, r, h, "up\n", 30*time.Second)
	d, err := decodeHandle(h)
	if err != nil {
		t.Fatal(err)
	}
	d.Peer, d.TenantRunDir = nil, ""
	lh, err := d.encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"inspect", func() error { _, err := r.Inspect(ctx, lh); return err }},
		{"stop", func() error { return r.Stop(ctx, lh, time.Second) }},
		{"recover", func() error { _, err := r.Recover(ctx, lh); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); sdk.CodeOf(err) != sdk.CodeUnavailable || !strings.Contains(err.Error(), "only Destroy works") {
				t.Errorf("%s of a legacy handle: %v", tc.name, err)
			}
		})
	}
	for i := 0; i < 2; i++ {
		if err := r.Destroy(ctx, lh); err != nil {
			t.Fatalf("destroy %d of a legacy handle: %v", i, err)
		}
	}
	for _, dir := range []string{d.LogDir, filepath.Join("/sys/fs/cgroup/pids", d.Cgroup)} {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after Destroy: %v", dir, err)
		}
	}
	if st, err := r.Inspect(ctx, h); err != nil || st.State == sdk.StateRunning {
		t.Errorf("the container after the legacy Destroy: %+v, %v; want its task ended", st, err)
	}
}

package ctrruntime

import (
	"context"
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// TestWatchExits checks that WatchExits reports, promptly and once, the
// exit of a container this process started, with its exit code and
// cause; that a running neighbour and a container of another plugin
// process are not reported; and that a killed container is reported as
// killed by its signal.
func TestWatchExits(t *testing.T) {
	r := newRuntime(t, nil)
	other := newRuntime(t, nil)
	tn := newTenant(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	exits := make(chan sdk.ExitEvent, 16)
	done := make(chan error, 1)
	go func() {
		done <- r.WatchExits(ctx, func() { close(ready) }, func(e sdk.ExitEvent) error {
			exits <- e
			return nil
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("WatchExits before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("WatchExits not ready")
	}

	running, _ := start(t, r, tn, instance{name: "running", args: []string{"sh", "-c", "echo up; exec sleep 1000"}})
	waitLog(t, r, running, "up\n", 30*time.Second)
	start(t, other, tn, instance{name: "other", args: []string{"sh", "-c", "exit 2"}})
	_, req := start(t, r, tn, instance{name: "crash", args: []string{"sh", "-c", "sleep 0.5; exit 1"}})

	e := nextExit(t, exits)
	if e.Instance != req.Instance || e.Status.State != sdk.StateExited || e.Status.Cause != sdk.CauseExit || e.Status.ExitCode != 1 {
		t.Fatalf("exit event %+v, want %s exited with 1", e, req.Instance)
	}
	if st, err := r.Inspect(ctx, e.Handle); err != nil || st.ExitCode != 1 {
		t.Errorf("the event's handle inspects as %+v, %v", st, err)
	}

	// The running neighbour is reported once it is killed, by its signal.
	cctx, rc := client(t)
	ctr, err := rc.LoadContainer(cctx, idOf(sdk.Instance{Tenant: tn.name, Name: "running"}))
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(cctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(cctx, 9); err != nil {
		t.Fatal(err)
	}
	e = nextExit(t, exits)
	if e.Instance.Name != "running" || e.Status.Cause != sdk.CauseSignal || e.Status.Signal != 9 {
		t.Fatalf("exit event %+v, want running killed by signal 9", e)
	}
	select {
	case e := <-exits:
		t.Fatalf("unexpected exit event %+v", e)
	case <-time.After(time.Second):
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchExits ended with %v, want the context's error", err)
	}
}

// TestWatchExitsPerTenant checks that WatchExits follows a per-tenant
// daemon prepared before or after it started: a container there that
// exits 1 is reported with its code, while a shared-mode neighbour keeps
// running; releasing the tenant ends that subscription, not the stream,
// which then reports the neighbour's exit.
func TestWatchExitsPerTenant(t *testing.T) {
	for _, tc := range []struct {
		name          string
		prepareBefore bool
	}{{"prepared-after", false}, {"prepared-before", true}} {
		t.Run(tc.name, func(t *testing.T) { testWatchExitsPerTenant(t, tc.prepareBefore) })
	}
}

func testWatchExitsPerTenant(t *testing.T, prepareBefore bool) {
	bob, alice := newTenant(t), newTenant(t)
	r := perTenant(t, bob)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	treq := &sdk.TenantRequest{Tenant: bob.name, User: bob.user, Cgroup: bob.cgroup, RunDir: filepath.Join(t.TempDir(), "tenant")}
	var th sdk.Handle
	prepare := func() {
		var err error
		if th, err = r.PrepareTenant(ctx, treq); err != nil {
			t.Fatal(err)
		}
	}
	if prepareBefore {
		prepare()
	}
	ready := make(chan struct{})
	exits := make(chan sdk.ExitEvent, 16)
	done := make(chan error, 1)
	go func() {
		done <- r.WatchExits(ctx, func() { close(ready) }, func(e sdk.ExitEvent) error {
			exits <- e
			return nil
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("WatchExits before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("WatchExits not ready")
	}

	if !prepareBefore {
		prepare()
	}
	released := false
	t.Cleanup(func() {
		if !released {
			_ = r.ReleaseTenant(context.Background(), th)
		}
	})
	bob.handle = th
	neighbour, _ := start(t, r, alice, instance{name: "neighbour", args: []string{"sh", "-c", "echo up; exec sleep 1000"}})
	waitLog(t, r, neighbour, "up\n", 30*time.Second)
	req := request(t, bob, instance{name: "crash", args: []string{"sh", "-c", "sleep 0.5; exit 1"}, resources: sdk.Resources{Pids: 16}})
	h, err := r.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	e := nextExit(t, exits)
	if e.Instance != req.Instance || e.Status.State != sdk.StateExited || e.Status.Cause != sdk.CauseExit || e.Status.ExitCode != 1 {
		t.Fatalf("exit event %+v, want %s exited with 1", e, req.Instance)
	}
	if st, err := r.Inspect(ctx, neighbour); err != nil || st.State != sdk.StateRunning {
		t.Errorf("neighbour %+v, %v; want running", st, err)
	}

	if err := r.Destroy(ctx, h); err != nil {
		t.Fatal(err)
	}
	if err := r.ReleaseTenant(ctx, th); err != nil {
		t.Fatal(err)
	}
	released = true
	checkDaemonGone(t, th)
	r.exits.mu.Lock()
	for s := range r.exits.streams {
		if len(s.subs) != 0 || len(r.exits.daemons) != 0 {
			t.Errorf("after release: subscriptions %v, daemons %v", s.subs, r.exits.daemons)
		}
	}
	r.exits.mu.Unlock()
	select {
	case err := <-done:
		t.Fatalf("WatchExits ended with the release: %v", err)
	default:
	}

	cctx, rc := client(t)
	ctr, err := rc.LoadContainer(cctx, idOf(sdk.Instance{Tenant: alice.name, Name: "neighbour"}))
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(cctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Kill(cctx, 9); err != nil {
		t.Fatal(err)
	}
	e = nextExit(t, exits)
	if e.Instance.Name != "neighbour" || e.Status.Cause != sdk.CauseSignal || e.Status.Signal != 9 {
		t.Fatalf("exit event %+v, want neighbour killed by signal 9", e)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchExits ended with %v, want the context's error", err)
	}
}

// TestWatchExitsStoppedDaemon stops a per-tenant daemon (its tenant can:
// it runs as the tenant's user) before WatchExits starts: the stream is
// ready within followTimeout anyway (the stopped daemon's dial takes
// longer) and reports a shared-mode neighbour's exit.
func TestWatchExitsStoppedDaemon(t *testing.T) {
	bob, alice := newTenant(t), newTenant(t)
	r := perTenant(t, bob)
	bob = prepare(t, r, bob)
	d, err := decodeTenant(bob.handle)
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range daemonProcesses(d) {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan struct{})
	exits := make(chan sdk.ExitEvent, 16)
	done := make(chan error, 1)
	go func() {
		done <- r.WatchExits(ctx, func() { close(ready) }, func(e sdk.ExitEvent) error {
			exits <- e
			return nil
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("WatchExits before ready: %v", err)
	case <-time.After(followTimeout + 2*time.Second):
		t.Fatal("WatchExits not ready with a stopped per-tenant daemon")
	}
	_, req := start(t, r, alice, instance{name: "neighbour", args: []string{"sh", "-c", "exit 2"}})
	if e := nextExit(t, exits); e.Instance != req.Instance || e.Status.ExitCode != 2 {
		t.Fatalf("exit event %+v, want %s exited with 2", e, req.Instance)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchExits ended with %v, want the context's error", err)
	}
}

// nextExit returns the next exit event, failing after a bound.
func nextExit(t *testing.T, exits <-chan sdk.ExitEvent) sdk.ExitEvent {
	t.Helper()
	select {
	case e := <-exits:
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("no exit event")
	}
	return sdk.ExitEvent{}
}

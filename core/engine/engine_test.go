package engine

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/kigumi/kigumi/core/engine/enginetest"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
)

func testHost(t *testing.T) *spec.Host {
	return &spec.Host{
		Name: "test", StateDir: t.TempDir(),
		Capacity:  spec.Capacity{MilliCPU: 4000, MemoryBytes: 4 << 30, DiskBytes: 10 << 30, MaxInstances: 10},
		Isolation: spec.Isolation{TenantUsers: true, UIDBase: 61000, SubIDBase: 1 << 30, SubIDCount: 65536},
		Plugins: []spec.PluginBlock{
			{Kind: sdk.KindRuntime, Name: "wasm", Body: hcl.EmptyBody()},
			{Kind: sdk.KindStateFS, Name: "fuse", Body: hcl.EmptyBody()},
		},
	}
}

func desired(names ...string) []plan.Tenant {
	var out []plan.Tenant
	for _, n := range names {
		out = append(out, plan.Tenant{Name: n, Source: "file:tenants/" + n + ".hcl", Instances: []plan.Instance{{Name: "web", Spec: state.InstanceSpec{
			Runtime: "wasm", Module: "/m.wasm", ModuleDigest: "sha256:1", StateBytes: 1 << 20,
			Resources: sdk.Resources{MemoryBytes: 32 << 20, MilliCPU: 100, Pids: 8},
		}}}})
	}
	return out
}

// newEngine opens the store at h.StateDir and returns a configured engine.
func newEngine(t *testing.T, h *spec.Host, w *enginetest.World) *Engine {
	t.Helper()
	st, err := state.Open(filepath.Join(h.StateDir, "kigumi.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := New(h, st, w, w)
	if diags, err := e.Configure(context.Background()); err != nil || diags.HasErrors() {
		t.Fatal(diags, err)
	}
	return e
}

// apply plans want and applies it, in a goroutine so a simulated crash
// (runtime.Goexit) ends only that apply.
func apply(t *testing.T, e *Engine, want []plan.Tenant) (*plan.Plan, error, bool) {
	t.Helper()
	p, err := e.Plan(context.Background(), state.SourceFile, want)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		done <- e.Apply(context.Background(), p)
	}()
	<-exited
	select {
	case err := <-done:
		return p, err, true
	default:
		return p, nil, false
	}
}

func TestApplyLifecycle(t *testing.T) {
	w := enginetest.NewWorld()
	h := testHost(t)
	e := newEngine(t, h, w)
	ctx := context.Background()

	p, err, _ := apply(t, e, desired("alice", "bob"))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Count(plan.Create); got != 4 {
		t.Errorf("creates = %d, want 4", got)
	}
	live, states, tenants, cgroups := w.Snapshot()
	if !slices.Equal(live, []string{"alice/web", "bob/web"}) || len(states) != 2 || len(tenants) != 2 || len(cgroups) != 2 {
		t.Fatalf("after apply: live %v states %v tenants %v cgroups %v", live, states, tenants, cgroups)
	}
	recs, _ := e.store.Tenants()
	if recs[0].User.UID == recs[1].User.UID || recs[0].User.SubUID == recs[1].User.SubUID {
		t.Errorf("tenants share ids: %+v", recs)
	}
	// Each tenant was prepared, and its handle recorded.
	for _, r := range recs {
		if h, ok := r.RuntimeHandles["wasm"]; !ok || string(h.Data) != r.Name || !w.Prepared[r.Name] {
			t.Errorf("tenant %s: runtime handles %+v, prepared %v", r.Name, r.RuntimeHandles, w.Prepared)
		}
	}
	// The state reaches the runtime as a read-only mount at /state.
	wantMount := []sdk.Mount{{Source: "/state/bob/web", Target: sdk.StateTarget, ReadOnly: true, Type: sdk.MountDir, State: true}}
	if !reflect.DeepEqual(w.LastStart.Mounts, wantMount) {
		t.Errorf("start mounts = %+v, want %+v", w.LastStart.Mounts, wantMount)
	}

	// A second apply with no change does nothing.
	p, err, _ = apply(t, e, desired("alice", "bob"))
	if err != nil || !p.Empty() || w.Starts != 2 {
		t.Fatalf("second apply: plan %v, err %v, starts %d", p.Actions, err, w.Starts)
	}

	st, err := e.Status(ctx)
	if err != nil || len(st) != 2 || st[0].Instances[0].State != sdk.StateRunning {
		t.Fatalf("status = %+v, %v", st, err)
	}
	var logs []byte
	if err := e.Logs(ctx, "alice", "web", sdk.LogOptions{}, func(b []byte) error { logs = append(logs, b...); return nil }); err != nil || string(logs) != "log of alice/web" {
		t.Errorf("logs = %q, %v", logs, err)
	}
	if err := e.Logs(ctx, "alice", "nope", sdk.LogOptions{}, nil); !errors.Is(err, ErrUnknownInstance) {
		t.Errorf("logs of unknown instance: %v", err)
	}

	// Updating a spec restarts the workload and keeps its state.
	upd := desired("alice", "bob")
	upd[0].Instances[0].Spec.Args = []string{"-v"}
	if _, err, _ := apply(t, e, upd); err != nil {
		t.Fatal(err)
	}
	if live, states, _, _ := w.Snapshot(); len(live) != 2 || len(states) != 2 || w.Starts != 3 {
		t.Fatalf("after update: live %v states %v starts %d", live, states, w.Starts)
	}

	// Destroying everything leaves nothing.
	dp, err := e.DestroyPlan(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Apply(ctx, dp); err != nil {
		t.Fatal(err)
	}
	live, states, tenants, cgroups = w.Snapshot()
	if len(live)+len(states)+len(tenants)+len(cgroups) != 0 {
		t.Fatalf("after destroy: live %v states %v tenants %v cgroups %v", live, states, tenants, cgroups)
	}
	if ts, _ := e.store.Tenants(); len(ts) != 0 {
		t.Errorf("tenant records left: %+v", ts)
	}
	if len(w.Prepared) != 0 {
		t.Errorf("tenants not released: %v", w.Prepared)
	}
	if !slices.Equal(w.Released, []string{"alice", "bob"}) {
		t.Errorf("tenant plugin processes released for %v, want alice and bob", w.Released)
	}
	if _, err := e.DestroyPlan(ctx, []string{"ghost"}); !errors.Is(err, ErrUnknownTenant) {
		t.Errorf("destroy of unknown tenant: %v", err)
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(w *enginetest.World)
		wantErr error
		// wantRefused: the CLI reports invalid input, not a failure.
		wantRefused bool
	}{
		{name: "invalid start rolls back the instance and the new tenant",
			setup:   func(w *enginetest.World) { w.FailStart = sdk.InvalidAttribute("module", "bad magic") },
			wantErr: sdk.ErrInvalid, wantRefused: true},
		{name: "plugin exited mid-call",
			setup: func(w *enginetest.World) {
				w.FailStart = &sdk.Error{Code: sdk.CodeUnavailable, Message: `plugin runtime "wasm" exited`}
			},
			wantErr: sdk.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := enginetest.NewWorld()
			e := newEngine(t, testHost(t), w)
			tt.setup(w)
			_, err, _ := apply(t, e, desired("alice"))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if Refused(err) != tt.wantRefused {
				t.Errorf("Refused(%v) = %v", err, !tt.wantRefused)
			}
			var ae *ActionError
			if !errors.As(err, &ae) || ae.Action.Target() != "instance alice/web" {
				t.Errorf("err does not name the action: %v", err)
			}
			live, states, tenants, cgroups := w.Snapshot()
			if len(live)+len(states)+len(tenants)+len(cgroups) != 0 {
				t.Fatalf("left behind: live %v states %v tenants %v cgroups %v", live, states, tenants, cgroups)
			}
			if is, _ := e.store.Instances(); len(is) != 0 {
				t.Errorf("instance records left: %+v", is)
			}
			// The next apply succeeds from scratch.
			if _, err, _ := apply(t, e, desired("alice")); err != nil {
				t.Fatal(err)
			}
			if live, _, _, _ := w.Snapshot(); len(live) != 1 {
				t.Errorf("live after retry = %v", live)
			}
		})
	}
}

// TestResumeAfterCrash kills an apply right after the runtime started a
// workload but before the engine recorded its handle, then applies again
// with a fresh engine: the orphan is swept and exactly one workload runs.
func TestResumeAfterCrash(t *testing.T) {
	w := enginetest.NewWorld()
	h := testHost(t)
	e := newEngine(t, h, w)
	w.CrashAt = "start"
	if _, _, finished := apply(t, e, desired("alice")); finished {
		// Goexit ends the goroutine without sending.
		t.Fatal("apply finished; the simulated crash did not happen")
	}
	rec, ok, _ := e.store.Instance("alice", "web")
	if !ok || rec.Phase != state.PhaseCreating || rec.RuntimeHandle != nil {
		t.Fatalf("after crash: %+v %v", rec, ok)
	}
	// The step that was running when the apply died was journaled before
	// it ran, with every write before it.
	j, err := e.store.Journal(1)
	if err != nil || len(j) != 1 || j[0].Step != "runtime.start" || j[0].Event != state.EventBegin || j[0].Target != "instance alice/web" {
		t.Fatalf("last journal entry after the crash: %+v, %v", j, err)
	}
	if rec.Cgroup.Path == "" || rec.StateHandle == nil {
		t.Errorf("the writes before the crashed step are not on disk: %+v", rec)
	}
	e.store.Close()

	e2 := newEngine(t, h, w)
	p, err, _ := apply(t, e2, desired("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Actions) != 1 || !p.Actions[0].Resume || p.Actions[0].Target() != "instance alice/web" {
		t.Errorf("resume plan = %+v", p.Actions)
	}
	live, states, _, _ := w.Snapshot()
	if !slices.Equal(live, []string{"alice/web"}) || len(states) != 1 || w.Starts != 2 {
		t.Fatalf("after resume: live %v states %v starts %d", live, states, w.Starts)
	}
	// And nothing more to do.
	if p, err, _ := apply(t, e2, desired("alice")); err != nil || !p.Empty() {
		t.Fatalf("third apply: %v %v", p.Actions, err)
	}
}

// TestResumeAdoptsRunning: a create interrupted after the handle was
// recorded adopts the running workload instead of starting another.
func TestResumeAdoptsRunning(t *testing.T) {
	w := enginetest.NewWorld()
	h := testHost(t)
	e := newEngine(t, h, w)
	if _, err, _ := apply(t, e, desired("alice")); err != nil {
		t.Fatal(err)
	}
	rec, _, _ := e.store.Instance("alice", "web")
	rec.Phase = state.PhaseCreating // as if killed before the last write
	if err := e.store.PutInstance(rec); err != nil {
		t.Fatal(err)
	}
	p, err, _ := apply(t, e, desired("alice"))
	if err != nil || len(p.Actions) != 1 || !p.Actions[0].Resume {
		t.Fatalf("plan %+v err %v", p.Actions, err)
	}
	if w.Starts != 1 {
		t.Errorf("starts = %d, want 1 (adopted)", w.Starts)
	}
	if rec, _, _ := e.store.Instance("alice", "web"); rec.Phase != state.PhaseReady {
		t.Errorf("phase = %s", rec.Phase)
	}
}

// TestRelaunchedPluginIsConfigured: a plugin relaunched after it exited
// gets its settings again before it is used.
func TestRelaunchedPluginIsConfigured(t *testing.T) {
	w := enginetest.NewWorld()
	e := newEngine(t, testHost(t), w)
	before := w.Configs
	w.Dead[sdk.KindRuntime] = true
	if _, err, _ := apply(t, e, desired("alice")); err != nil {
		t.Fatal(err)
	}
	if w.Configs != before+1 {
		t.Errorf("configures = %d, want %d", w.Configs, before+1)
	}
}

// TestEachPluginProcessRecovers: each runtime process recovers every
// instance it serves once, at its first refresh, except those it started.
func TestEachPluginProcessRecovers(t *testing.T) {
	w := enginetest.NewWorld()
	e := newEngine(t, testHost(t), w)
	ctx := context.Background()
	if _, err, _ := apply(t, e, desired("alice", "bob")); err != nil {
		t.Fatal(err)
	}
	recovers := func() int {
		w.Mu.Lock()
		defer w.Mu.Unlock()
		return w.Recovers
	}
	steps := []struct {
		name  string
		crash bool
		want  int
	}{
		{"started by this process", false, 0},
		{"relaunched", true, 2},
		{"recovered already", false, 2},
		{"relaunched again", true, 4},
	}
	for _, s := range steps {
		w.Mu.Lock()
		w.Dead[sdk.KindRuntime] = s.crash
		w.Mu.Unlock()
		if _, err := e.Plan(ctx, state.SourceFile, desired("alice", "bob")); err != nil {
			t.Fatal(err)
		}
		if got := recovers(); got != s.want {
			t.Errorf("%s: %d recovers, want %d", s.name, got, s.want)
		}
	}
}

// TestResumeWithChangedSpec: a create interrupted after its workload
// started, resumed with an edited spec, replaces the workload instead of
// adopting one that runs the old spec.
func TestResumeWithChangedSpec(t *testing.T) {
	w := enginetest.NewWorld()
	e := newEngine(t, testHost(t), w)
	if _, err, _ := apply(t, e, desired("alice")); err != nil {
		t.Fatal(err)
	}
	rec, _, _ := e.store.Instance("alice", "web")
	rec.Phase = state.PhaseCreating
	if err := e.store.PutInstance(rec); err != nil {
		t.Fatal(err)
	}
	edited := desired("alice")
	edited[0].Instances[0].Spec.Args = []string{"--new"}
	if _, err, _ := apply(t, e, edited); err != nil {
		t.Fatal(err)
	}
	rec, _, _ = e.store.Instance("alice", "web")
	if w.Starts != 2 || rec.RuntimeSpecHash != edited[0].Instances[0].Spec.Hash() || rec.Phase != state.PhaseReady {
		t.Errorf("starts %d, record %+v", w.Starts, rec)
	}
	if live, _, _, _ := w.Snapshot(); len(live) != 1 {
		t.Errorf("live = %v", live)
	}
}

// TestFailedUpdateKeepsState: an update that drops the state and fails to
// start restores the previous spec, state included.
func TestFailedUpdateKeepsState(t *testing.T) {
	w := enginetest.NewWorld()
	e := newEngine(t, testHost(t), w)
	if _, err, _ := apply(t, e, desired("alice")); err != nil {
		t.Fatal(err)
	}
	noState := desired("alice")
	noState[0].Instances[0].Spec.StateBytes = 0
	w.FailStart = sdk.InvalidAttribute("module", "bad magic")
	_, err, _ := apply(t, e, noState)
	if !errors.Is(err, sdk.ErrInvalid) || !strings.Contains(err.Error(), "previous spec was restored") {
		t.Fatalf("err = %v", err)
	}
	live, states, _, _ := w.Snapshot()
	if len(live) != 1 || len(states) != 1 {
		t.Fatalf("after failed update: live %v states %v", live, states)
	}
	rec, _, _ := e.store.Instance("alice", "web")
	if rec.Phase != state.PhaseReady || rec.Spec.StateBytes == 0 || rec.StateHandle == nil {
		t.Errorf("record = %+v", rec)
	}
}

// TestDestroyedTenantIDsAreNotReused destroys tenants and creates new ones,
// reopening the database in between: no new tenant gets a destroyed one's
// uid or any of its subordinate ids.
func TestDestroyedTenantIDsAreNotReused(t *testing.T) {
	w := enginetest.NewWorld()
	h := testHost(t)
	ctx := context.Background()
	var gone []sdk.User
	check := func(e *Engine, name string) {
		t.Helper()
		rec, ok, err := e.store.Tenant(name)
		if err != nil || !ok {
			t.Fatalf("tenant %s: %v %v", name, ok, err)
		}
		u := rec.User
		for _, g := range gone {
			if u.UID == g.UID {
				t.Errorf("tenant %s got uid %d of a destroyed tenant", name, u.UID)
			}
			if u.SubUID < g.SubUID+g.Count && g.SubUID < u.SubUID+u.Count {
				t.Errorf("tenant %s got subordinate ids %d+%d, overlapping a destroyed tenant's %d+%d",
					name, u.SubUID, u.Count, g.SubUID, g.Count)
			}
		}
	}
	destroy := func(e *Engine, name string) {
		t.Helper()
		rec, _, err := e.store.Tenant(name)
		if err != nil {
			t.Fatal(err)
		}
		dp, err := e.DestroyPlan(ctx, []string{name})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Apply(ctx, dp); err != nil {
			t.Fatal(err)
		}
		gone = append(gone, rec.User)
	}

	e := newEngine(t, h, w)
	if _, err, _ := apply(t, e, desired("alice", "bob")); err != nil {
		t.Fatal(err)
	}
	destroy(e, "alice")
	if _, err, _ := apply(t, e, desired("bob", "carol")); err != nil {
		t.Fatal(err)
	}
	check(e, "carol")

	// Across a reopened database, with the lowest ids free again.
	destroy(e, "bob")
	destroy(e, "carol")
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	e = newEngine(t, h, w)
	if _, err, _ := apply(t, e, desired("dave")); err != nil {
		t.Fatal(err)
	}
	check(e, "dave")
	if len(gone) != 3 {
		t.Fatalf("destroyed %d tenants, want 3", len(gone))
	}
}

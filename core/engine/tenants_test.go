package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/kigumi/kigumi/core/engine/enginetest"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
)

func TestOwnershipDiagnostics(t *testing.T) {
	owners := map[string]string{"a": "file:tenants/a.hcl", "l": "lease:7", "old": ""}
	tenants := func(names ...string) []*spec.Tenant {
		var out []*spec.Tenant
		for _, n := range names {
			out = append(out, &spec.Tenant{Name: n, DeclRange: hcl.Range{Filename: "tenants/" + n + ".hcl"}})
		}
		return out
	}
	tests := []struct {
		name    string
		claim   string
		tenants []*spec.Tenant
		want    []string // tenants with a diagnostic
	}{
		{"new tenant", state.SourceFile, tenants("new"), nil},
		{"same source", state.SourceFile, tenants("a"), nil},
		{"moved to another file of the same kind", state.SourceFile, []*spec.Tenant{{Name: "a", DeclRange: hcl.Range{Filename: "tenants/b.hcl"}}}, nil},
		{"record without a source belongs to file", state.SourceFile, tenants("old"), nil},
		{"lease tenant claimed by a file", state.SourceFile, tenants("a", "l"), []string{"l"}},
		{"file tenant claimed by a lease", state.SourceLease, tenants("a", "old", "l"), []string{"a", "old"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			diags := OwnershipDiagnostics(owners, tt.claim, tt.tenants)
			var got []string
			for _, d := range diags {
				if d.Severity != hcl.DiagError || d.Subject == nil {
					t.Errorf("diagnostic %+v is not an error on the file", d)
				}
				for _, tn := range tt.tenants {
					if d.Subject != nil && *d.Subject == tn.DeclRange && !slices.Contains(got, tn.Name) {
						got = append(got, tn.Name)
					}
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("diagnostics for %v, want %v: %v", got, tt.want, diags)
			}
		})
	}
}

// TestPlanOwnership: a file plan never touches a tenant of another source,
// and refuses to claim one.
func TestPlanOwnership(t *testing.T) {
	w := enginetest.NewWorld()
	h := testHost(t)
	e := newEngine(t, h, w)
	ctx := context.Background()
	if _, err, _ := apply(t, e, desired("alice", "lease")); err != nil {
		t.Fatal(err)
	}
	rec, _, _ := e.store.Tenant("lease")
	rec.Source = "lease:1"
	if err := e.store.PutTenant(rec); err != nil {
		t.Fatal(err)
	}
	// The file source no longer desires "lease": it is not its to destroy.
	p, err := e.Plan(ctx, state.SourceFile, desired("alice"))
	if err != nil || !p.Empty() {
		t.Fatalf("plan %v, %v: want nothing", summaryOf(p), err)
	}
	var oe *OwnerError
	if _, err := e.Plan(ctx, state.SourceFile, desired("alice", "lease")); !errors.As(err, &oe) || oe.Owner != "lease:1" {
		t.Fatalf("claiming a lease tenant: %v", err)
	}
	if p, err := e.PlanTenant(ctx, state.SourceLease, "lease", nil); err != nil || summaryOf(p)[0] != "destroy instance lease/web" {
		t.Fatalf("the lease source's own plan: %v, %v", summaryOf(p), err)
	}
}

func summaryOf(p *plan.Plan) []string {
	if p == nil {
		return nil
	}
	var out []string
	for _, a := range p.Actions {
		out = append(out, string(a.Op)+" "+a.Target())
	}
	return out
}

// TestFailingTenantBlocksNoOther: a tenant whose destroy keeps failing
// fails alone, in one apply and in concurrent per-tenant applies, while the
// other tenants' creates and updates go through.
func TestFailingTenantBlocksNoOther(t *testing.T) {
	w := enginetest.NewWorld()
	h := testHost(t)
	e := newEngine(t, h, w)
	ctx := context.Background()
	if _, err, _ := apply(t, e, desired("bad", "good")); err != nil {
		t.Fatal(err)
	}
	w.FailRemove = map[string]error{"bad": errors.New("too many open files")}

	// One apply: bad is destroyed (and fails), good updated, new created.
	want := desired("good", "new")
	want[0].Instances[0].Spec.Args = []string{"-v"}
	_, err, _ := apply(t, e, want)
	var ae *ActionError
	if !errors.As(err, &ae) || ae.Action.Tenant != "bad" {
		t.Fatalf("apply: %v, want bad's destroy to fail", err)
	}
	live, _, tenants, _ := w.Snapshot()
	if !slices.Equal(live, []string{"good/web", "new/web"}) || !slices.Contains(tenants, "new") {
		t.Fatalf("live %v tenants %v: the others did not go through", live, tenants)
	}
	if r, _, _ := e.store.Instance("good", "web"); !slices.Equal(r.Spec.Args, []string{"-v"}) {
		t.Fatalf("good was not updated: %+v", r.Spec)
	}

	// Concurrent per-tenant reconciles, as the agent runs them.
	names := []string{"bad", "good", "new", "c1", "c2", "c3"}
	specs := map[string]*plan.Tenant{}
	for _, d := range desired("good", "new", "c1", "c2", "c3") {
		d := d
		d.Instances[0].Spec.Env = map[string]string{"ROUND": "2"}
		specs[d.Name] = &d
	}
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := e.PlanTenant(ctx, state.SourceFile, n, specs[n])
			if err == nil {
				err = e.Apply(ctx, p)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, n := range names {
		if (errs[i] != nil) != (n == "bad") {
			t.Errorf("tenant %s: %v", n, errs[i])
		}
	}
	recs, _ := e.store.Tenants()
	uids := map[uint32]string{}
	for _, r := range recs {
		if other, dup := uids[r.User.UID]; dup {
			t.Errorf("tenants %s and %s share uid %d", r.Name, other, r.User.UID)
		}
		uids[r.User.UID] = r.Name
	}
	if b, ok, _ := e.store.Tenant("bad"); !ok || b.Phase != state.PhaseDestroying {
		t.Errorf("bad: %+v, want its record left destroying for a retry", b)
	}
}

// TestCapacityPerTenant: a tenant that would take the host past its
// capacity fails alone with a *CapacityError; concurrent applies never
// overbook the host together.
func TestCapacityPerTenant(t *testing.T) {
	w := enginetest.NewWorld()
	h := testHost(t)
	h.Capacity = spec.Capacity{MilliCPU: 4000, MemoryBytes: 100 << 20, DiskBytes: 1 << 30, MaxInstances: 10}
	e := newEngine(t, h, w)
	ctx := context.Background()
	// Each desired tenant holds 32 MiB: three fit, a fourth does not.
	var names []string
	for i := range 6 {
		names = append(names, fmt.Sprintf("t%d", i))
	}
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, d := range desired(names...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := e.PlanTenant(ctx, state.SourceFile, d.Name, &d)
			if err == nil {
				err = e.Apply(ctx, p)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		var ce *CapacityError
		switch {
		case err == nil:
			ok++
		case !errors.As(err, &ce):
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != 3 {
		t.Fatalf("%d tenants applied, want 3 of 6: %v", ok, errs)
	}
	// Shrinking always fits.
	small := desired("t9")
	small[0].Instances[0].Spec.Resources.MemoryBytes = 1 << 20
	if _, err, _ := apply(t, e, small); err != nil {
		var ce *CapacityError
		if !errors.As(err, &ce) {
			t.Fatal(err)
		}
	}
}

// TestRefreshRestartsDeadWorkload: a workload found ended is restarted as
// its policy says, keeping its state, and the exit is reported and counted.
func TestRefreshRestartsDeadWorkload(t *testing.T) {
	w := enginetest.NewWorld()
	h := testHost(t)
	exits := &exitHook{}
	e := newEngine(t, h, w)
	e.hooks = append(e.hooks, exits)
	ctx := context.Background()
	// The fake workload ends with code 0: only "always" restarts it.
	want := desired("alice")
	want[0].Instances[0].Spec.Restart = spec.RestartAlways
	if _, err, _ := apply(t, e, want); err != nil {
		t.Fatal(err)
	}
	w.Mu.Lock()
	w.InspectState = func(string) sdk.Status { return sdk.Status{State: sdk.StateExited} }
	w.Mu.Unlock()
	// Just ended: the first restart waits its backoff.
	p, err := e.Plan(ctx, state.SourceFile, want)
	if err != nil || !p.Empty() || p.RetryAfter <= 0 || len(p.Drift) != 1 {
		t.Fatalf("plan %v (retry after %v), %v", summaryOf(p), p.RetryAfter, err)
	}
	// An hour later it restarts.
	r, _, _ := e.store.Instance("alice", "web")
	r.Run.StartedAt = r.Run.StartedAt.Add(-2 * time.Hour)
	r.Run.LastExit.At = r.Run.LastExit.At.Add(-time.Hour)
	if err := e.store.PutInstance(r); err != nil {
		t.Fatal(err)
	}
	p, err = e.Plan(ctx, state.SourceFile, want)
	if err != nil || !slices.Equal(summaryOf(p), []string{"restart instance alice/web"}) {
		t.Fatalf("plan %v, %v", summaryOf(p), err)
	}
	w.Mu.Lock()
	w.InspectState = nil
	w.Mu.Unlock()
	if err := e.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	r, _, _ = e.store.Instance("alice", "web")
	if r.Run.Restarts != 1 || r.Run.LastExit == nil || r.StateHandle == nil || len(exits.seen) != 1 {
		t.Fatalf("after restart: run %+v, state %v, exits %v", r.Run, r.StateHandle, exits.seen)
	}
	// Running again: nothing to do.
	if p, err := e.Plan(ctx, state.SourceFile, want); err != nil || !p.Empty() {
		t.Fatalf("plan %v, %v", summaryOf(p), err)
	}
}

type exitHook struct {
	NilHook
	mu   sync.Mutex
	seen []string
}

func (h *exitHook) Exited(tenant, instance string, e state.Exit) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, tenant+"/"+instance+" "+e.Cause)
}

package agent

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
)

// noPlugins launches no plugin: the tests here need the engine's refresh,
// not its workloads.
type noPlugins struct{}

func (noPlugins) Runtime(context.Context, string, pluginhost.Scope) (sdk.Runtime, error) {
	return nil, sdk.ErrNotFound
}
func (noPlugins) StateFS(context.Context, string, pluginhost.Scope) (sdk.StateFS, error) {
	return nil, sdk.ErrNotFound
}
func (noPlugins) Ledger(context.Context, string, pluginhost.Scope) (sdk.Ledger, error) {
	return nil, sdk.ErrNotFound
}
func (noPlugins) Release(string) error { return nil }

// lockProbe reports, at each refresh of a tenant, whether the tenant's
// runner lock was held.
type lockProbe struct {
	engine.NilHook
	a    *Agent
	mu   sync.Mutex // Plan refreshes tenants in parallel
	seen map[string]bool
}

func (p *lockProbe) PreRefresh(tenant string) {
	p.a.mu.Lock()
	r := p.a.runners[tenant]
	p.a.mu.Unlock()
	free := r.mu.TryLock()
	if free {
		r.mu.Unlock()
	}
	p.mu.Lock()
	p.seen[tenant] = !free
	p.mu.Unlock()
}

// TestPlanRefreshesUnderTheTenantLock: the refresh of Plan, which may
// record exits and recovered handles, runs while the tenant cannot
// reconcile, as a reconcile's own refresh does.
func TestPlanRefreshesUnderTheTenantLock(t *testing.T) {
	dir := t.TempDir()
	st, err := state.Open(filepath.Join(dir, "kigumi.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	names := []string{"lvplana", "lvplanb"}
	for _, n := range names {
		if err := st.PutTenant(state.Tenant{Name: n, Source: "file:tenants/" + n + ".hcl", Phase: state.PhaseReady}); err != nil {
			t.Fatal(err)
		}
	}
	host := &spec.Host{Name: "lv", StateDir: dir}
	probe := &lockProbe{seen: map[string]bool{}}
	e := engine.New(host, st, noPlugins{}, nil, engine.WithHooks(probe))
	a := New(Config{Host: host, Engine: e, Store: st})
	probe.a = a
	for _, n := range names {
		a.want(n, "file:tenants/"+n+".hcl", 1, nil, nil, nil, false)
	}
	if _, err := a.Plan(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if held, ok := probe.seen[n]; !ok || !held {
			t.Errorf("tenant %s: refreshed %v, under its lock %v", n, ok, held)
		}
	}
}

// TestPluginExited: a plugin process that died is reported as a plugin
// restart with its cause, and the tenants it serves that the agent knows
// are queued to reconcile (recovering their instances); a tenant the agent
// does not know is not, since reconciling it would destroy it.
func TestPluginExited(t *testing.T) {
	dir := t.TempDir()
	st, err := state.Open(filepath.Join(dir, "kigumi.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, in := range []state.Instance{
		{Tenant: "lvwasm", Name: "app", Spec: state.InstanceSpec{Runtime: "wasm"}},
		{Tenant: "lvghost", Name: "app", Spec: state.InstanceSpec{Runtime: "wasm"}},
		{Tenant: "lvother", Name: "app", Spec: state.InstanceSpec{Runtime: "oci"}},
	} {
		if err := st.PutInstance(in); err != nil {
			t.Fatal(err)
		}
	}
	host := &spec.Host{Name: "lv", StateDir: dir}
	a := New(Config{Host: host, Engine: engine.New(host, st, noPlugins{}, nil), Store: st})
	for _, n := range []string{"lvwasm", "lvother"} {
		a.want(n, "file:tenants/"+n+".hcl", 1, nil, nil, nil, false)
		if got, _ := a.queue.Get(); got != n {
			t.Fatalf("queued %s, want %s", got, n)
		}
		a.queue.Done(n)
	}
	sub := a.Bus().Subscribe(4)
	a.PluginExited(pluginhost.Event{Kind: sdk.KindRuntime, Name: "wasm", Cause: "signal: killed", Restarts: 1})
	e := <-sub.C()
	if e.Type != events.TypePluginRestart || e.Cause != "signal: killed" || e.Tenant != "" || !strings.Contains(e.Message, `runtime plugin "wasm" exited`) {
		t.Errorf("event = %+v", e)
	}
	if got, _ := a.queue.Get(); got != "lvwasm" {
		t.Errorf("queued %s, want lvwasm", got)
	}
	if n := a.queue.Len(); n != 0 {
		t.Errorf("%d more tenants queued, want none", n)
	}
}

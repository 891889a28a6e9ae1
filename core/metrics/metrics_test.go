package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

// fakeStatus answers with the tenants it holds.
type fakeStatus struct {
	tenants []engine.TenantStatus
	err     error
}

func (f *fakeStatus) Status(context.Context) ([]engine.TenantStatus, error) { return f.tenants, f.err }

type fakeDB struct{ st state.Stats }

func (f fakeDB) Stats() (state.Stats, error) { return f.st, nil }

func tenant(name string, states ...sdk.State) engine.TenantStatus {
	t := engine.TenantStatus{Name: name, Phase: state.PhaseReady}
	for _, s := range states {
		t.Instances = append(t.Instances, engine.InstanceStatus{Name: string(s), State: s})
	}
	return t
}

func TestSnapshot(t *testing.T) {
	st := &fakeStatus{tenants: []engine.TenantStatus{
		tenant("mt1", sdk.StateRunning, sdk.StateRunning, sdk.StateExited),
		tenant("mt2", sdk.StateRunning),
	}}
	m := New(st, fakeDB{state.Stats{JournalEntries: 12, SizeBytes: 65536}}, nil)
	const head = `
# HELP kigumi_instances Instances by tenant and state (running, exited, stopped, unknown...).
# TYPE kigumi_instances gauge
`
	want := head + `kigumi_instances{state="exited",tenant="mt1"} 1
kigumi_instances{state="running",tenant="mt1"} 2
kigumi_instances{state="running",tenant="mt2"} 1
# HELP kigumi_tenants Tenants by phase (creating, updating, ready, destroying).
# TYPE kigumi_tenants gauge
kigumi_tenants{phase="ready"} 2
# HELP kigumi_journal_entries Entries kept in the state database's journal.
# TYPE kigumi_journal_entries gauge
kigumi_journal_entries 12
# HELP kigumi_state_db_size_bytes Size of the state database file.
# TYPE kigumi_state_db_size_bytes gauge
kigumi_state_db_size_bytes 65536
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"kigumi_instances", "kigumi_tenants", "kigumi_journal_entries", "kigumi_state_db_size_bytes"); err != nil {
		t.Error(err)
	}
	// A removed tenant's series vanish at the next scrape.
	st.tenants = st.tenants[1:]
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(head+`kigumi_instances{state="running",tenant="mt2"} 1
`), "kigumi_instances"); err != nil {
		t.Error(err)
	}
	// A failing status fails the scrape of its metrics, not the others.
	st.err = errors.New("agent stopping")
	if _, err := m.Registry().Gather(); err == nil || !strings.Contains(err.Error(), "agent stopping") {
		t.Errorf("gather with a failing status: %v", err)
	}
}

func TestEvents(t *testing.T) {
	bus := events.NewBus()
	m := New(nil, nil, bus)
	sub := bus.Subscribe(100)
	for _, e := range []events.Event{
		{Type: events.TypeReconcile, Tenant: "mt1", Duration: 0.2},
		{Type: events.TypeReconcile, Tenant: "mt1", Duration: 3, Error: "boom"},
		{Type: events.TypeInstanceRestart, Tenant: "mt1", Instance: "a", Cause: "oom"},
		{Type: events.TypeInstanceRestart, Tenant: "mt1", Instance: "a", Cause: "oom"},
		{Type: events.TypeInstanceRestart, Tenant: "mt1", Instance: "b", Cause: "exit"},
		{Type: events.TypeInstanceExited, Tenant: "mt1", Instance: "b"},
		{Type: events.TypePluginRestart, Cause: "exit"},
		{Type: events.TypePolicyDenied, Tenant: "mt2"},
		{Type: events.TypeActionDone, Op: "create"},
		{Type: events.TypeActionFailed, Op: "update"},
	} {
		bus.Publish(e)
	}
	// A subscriber that never reads loses what does not fit.
	idle := bus.Subscribe(1)
	defer idle.Close()
	bus.Publish(events.Event{Type: events.TypeDiagnostics})
	bus.Publish(events.Event{Type: events.TypeDiagnostics})
	bus.Close()
	m.Run(context.Background(), sub) // returns once the closed bus is drained

	want := `
# HELP kigumi_instance_restarts_total Instances restarted by their restart policy, by cause.
# TYPE kigumi_instance_restarts_total counter
kigumi_instance_restarts_total{cause="exit"} 1
kigumi_instance_restarts_total{cause="oom"} 2
# HELP kigumi_instance_exits_total Instance workloads that ended, by cause.
# TYPE kigumi_instance_exits_total counter
kigumi_instance_exits_total{cause="unknown"} 1
# HELP kigumi_plugin_restarts_total Plugin processes relaunched after they died, by cause.
# TYPE kigumi_plugin_restarts_total counter
kigumi_plugin_restarts_total{cause="exit"} 1
# HELP kigumi_policy_denials_total Policy denials.
# TYPE kigumi_policy_denials_total counter
kigumi_policy_denials_total 1
# HELP kigumi_actions_total Apply actions finished, by operation and result (done, failed).
# TYPE kigumi_actions_total counter
kigumi_actions_total{op="create",result="done"} 1
kigumi_actions_total{op="update",result="failed"} 1
# HELP kigumi_event_bus_dropped_total Events that subscribers of the event bus lost to full buffers.
# TYPE kigumi_event_bus_dropped_total counter
kigumi_event_bus_dropped_total 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"kigumi_instance_restarts_total", "kigumi_instance_exits_total", "kigumi_plugin_restarts_total",
		"kigumi_policy_denials_total", "kigumi_actions_total", "kigumi_event_bus_dropped_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.reconcile); n != 2 {
		t.Errorf("reconcile histogram has %d series, want ok and error", n)
	}
	if got := testutil.ToFloat64(m.events.WithLabelValues("instance_restart")); got != 3 {
		t.Errorf("instance_restart events = %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.events.WithLabelValues("diagnostics")); got != 2 {
		t.Errorf("diagnostics events = %v, want 2", got)
	}
}

func TestLint(t *testing.T) {
	bus := events.NewBus()
	m := New(&fakeStatus{tenants: []engine.TenantStatus{tenant("mt1", sdk.StateRunning)}}, fakeDB{}, bus)
	for _, typ := range []events.Type{events.TypeReconcile, events.TypeInstanceRestart, events.TypeInstanceExited,
		events.TypePluginRestart, events.TypePolicyDenied, events.TypeActionDone, events.TypeActionFailed} {
		m.Observe(events.Event{Type: typ, Op: "create", Cause: "exit"})
	}
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestServe(t *testing.T) {
	m := New(&fakeStatus{tenants: []engine.TenantStatus{tenant("mt1", sdk.StateRunning)}}, nil, events.NewBus())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`kigumi_instances{state="running",tenant="mt1"} 1`, "go_goroutines ", "process_resident_memory_bytes "} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
}

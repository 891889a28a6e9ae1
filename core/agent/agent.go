// Package agent runs Kigumi as a long-lived host agent: it watches the
// desired state of its sources and reconciles each tenant on its own, so
// that one failing tenant never holds up another.
//
// Sources emit full snapshots of the tenants they own. The agent merges
// them into one desired spec per tenant (the latest wins), and queues the
// tenants that changed. Workers take tenants from the queue, at most
// Workers at once and never one tenant twice at once, and reconcile each:
// refresh, plan, apply. A failed reconcile is retried with exponential
// backoff and jitter, per tenant.
package agent

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"golang.org/x/sync/errgroup"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/policy"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
)

// Config configures an Agent.
type Config struct {
	Host   *spec.Host
	Engine *engine.Engine
	Store  *state.Store
	// Policies are evaluated over every desired tenant of each snapshot.
	Policies *policy.Set
	// Bus receives the agent's events; the engine's hooks should publish
	// on it too (engine.BusHook).
	Bus *events.Bus
	Log hclog.Logger
	// Workers bounds how many tenants reconcile at once (default
	// DefaultWorkers).
	Workers int
	// Resync is the period of the full resync (default 30s).
	Resync time.Duration
	// Backoff is the retry delay of a failed reconcile (default 1s to 5m).
	Backoff Backoff
	// Ledger returns the client of a ledger plugin the host spec declares
	// (default: the engine's, Engine.Ledger).
	Ledger func(ctx context.Context, name string) (Ledger, error)
}

// DefaultWorkers is how many tenants reconcile at once by default. A
// reconcile mostly waits: on the state database, whose every step is an
// fsync'd commit (about eight per instance created), and on plugins. The
// commits of tenants reconciling at once share one fsync (state's group
// commit), so throughput grows with the tenants in flight: with the fake
// runtime, 4 workers converged 390 instance actions/s, 16 776/s and 64
// 1,817/s on a quiet machine (make bench), where the target is 2,000/s.
// Each worker is one goroutine and one tenant's plan in memory; what a
// real runtime costs per start (compiling a module) is bounded by the
// runtime plugin, not by this number.
const DefaultWorkers = 64

// Agent reconciles tenants continuously.
type Agent struct {
	cfg   Config
	queue *Queue
	// policies keeps the policy decisions of unchanged tenants across
	// snapshots; nil without policies.
	policies *policy.Memo

	mu      sync.Mutex
	runners map[string]*runner
	gen     uint64 // generation of the last snapshot merged

	leases leases
}

// runner is one tenant's desired spec and reconcile status.
type runner struct {
	name string
	// mu is held while the tenant reconciles or an operator acts on one
	// of its instances.
	mu sync.Mutex

	// The fields below are guarded by Agent.mu.
	source     string
	generation uint64
	desired    *plan.Tenant // nil: not desired (destroy), unless held
	spec       *spec.Tenant // the decoded spec desired was made from
	known      bool         // desired has been set from a valid spec
	held       bool         // its spec is invalid: leave the tenant alone
	print      string       // fingerprint of desired
	diags      hcl.Diagnostics
	lastErr    error
	failures   int
	nextRetry  time.Time
	reconciled time.Time
	pending    []chan Result // Reconcile callers, for the next run
	inflight   []chan Result // Reconcile callers, for the current run
}

// Result is the outcome of one tenant's reconcile.
type Result struct {
	Tenant string
	// Created, Updated, Destroyed and Restarted count the actions of its
	// plan, done or attempted.
	Created, Updated, Destroyed, Restarted int
	Duration                               time.Duration
	Err                                    error
}

// New returns an agent; Run starts it.
func New(cfg Config) *Agent {
	if cfg.Workers <= 0 {
		cfg.Workers = DefaultWorkers
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Backoff.Base <= 0 {
		cfg.Backoff = Backoff{Base: time.Second, Max: 5 * time.Minute}
	}
	if cfg.Log == nil {
		cfg.Log = hclog.NewNullLogger()
	}
	if cfg.Bus == nil {
		cfg.Bus = events.NewBus()
	}
	a := &Agent{cfg: cfg, queue: NewQueue(), runners: map[string]*runner{}, leases: leases{timers: map[string]*time.Timer{}}}
	if cfg.Policies != nil {
		a.policies = cfg.Policies.NewMemo()
	}
	return a
}

// Bus returns the agent's event bus.
func (a *Agent) Bus() *events.Bus { return a.cfg.Bus }

// Run watches the file source and the ledgers' leases, and reconciles until
// ctx ends. Stopping
// leaves every workload running: reconciles under way finish, nothing is
// torn down, and the next start adopts the workloads again.
func (a *Agent) Run(ctx context.Context) error {
	snaps := make(chan Snapshot)
	src := &FileSource{Host: a.cfg.Host, Resync: a.cfg.Resync}
	if a.cfg.Engine != nil {
		src.Plugins = a.cfg.Engine
	}
	srcErr := make(chan error, 1)
	go func() { srcErr <- src.Run(ctx, snaps) }()
	var wg sync.WaitGroup
	for range a.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.work(ctx)
		}()
	}
	wctx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	for _, name := range a.cfg.Engine.RuntimesWith(sdk.FeatureWatch) {
		wg.Go(func() { a.watchExits(wctx, name) })
	}
	if ledgers := a.ledgers(); len(ledgers) > 0 {
		if err := a.restoreLeases(wctx); err != nil {
			a.cfg.Log.Error("restore leases", "error", err)
		}
		for _, name := range ledgers {
			wg.Go(func() { a.runLedger(wctx, name) })
		}
	}
	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case s := <-snaps:
			if merr := a.Merge(ctx, s); merr != nil {
				a.cfg.Log.Error("merge snapshot", "generation", s.Generation, "error", merr)
			}
		case err = <-srcErr:
			break loop
		}
	}
	stopWatching()
	a.stopLeases()
	a.queue.ShutDown()
	wg.Wait()
	a.mu.Lock()
	for _, r := range a.runners {
		for _, c := range append(r.pending, r.inflight...) {
			c <- Result{Tenant: r.name, Err: context.Canceled}
		}
		r.pending, r.inflight = nil, nil
	}
	a.mu.Unlock()
	return err
}

// work takes tenants from the queue and reconciles them until shutdown.
func (a *Agent) work(ctx context.Context) {
	for {
		name, ok := a.queue.Get()
		if !ok {
			return
		}
		a.reconcile(ctx, name)
		a.queue.Done(name)
	}
}

func (a *Agent) runner(name string) *runner {
	r, ok := a.runners[name]
	if !ok {
		r = &runner{name: name}
		a.runners[name] = r
	}
	return r
}

// Merge takes a source's snapshot as the desired state of the tenants it
// owns, and queues those that changed (all of them on a resync).
func (a *Agent) Merge(ctx context.Context, s Snapshot) error {
	owners, err := a.cfg.Engine.Owners(ctx)
	if err != nil {
		return err
	}
	// A tenant another source is making, not yet recorded, is its.
	a.mu.Lock()
	for n, r := range a.runners {
		if _, ok := owners[n]; !ok && r.source != "" {
			owners[n] = r.source
		}
	}
	a.mu.Unlock()
	type claim struct {
		t    *spec.Tenant
		file *FileSpec
	}
	valid := map[string]claim{}
	held := map[string]*FileSpec{}
	var all []*spec.Tenant
	for _, src := range slices.Sorted(maps.Keys(s.Files)) {
		f := s.Files[src]
		if f.Invalid() {
			// A file that cannot be used holds its tenants as they are:
			// those it declared last, and those recorded from it.
			for name, owner := range owners {
				if owner == src {
					held[name] = f
				}
			}
			a.mu.Lock()
			for name, r := range a.runners {
				if r.source == src {
					held[name] = f
				}
			}
			a.mu.Unlock()
			if src == "" { // the directory itself is unreadable
				for name, owner := range owners {
					if state.SourceKind(owner) == s.Kind {
						held[name] = f
					}
				}
			}
			continue
		}
		for _, t := range f.Tenants {
			if d := engine.OwnershipDiagnostics(owners, s.Kind, []*spec.Tenant{t}); d.HasErrors() {
				a.report(t.Name, src, s.Generation, d, true)
				continue
			}
			if first, dup := valid[t.Name]; dup {
				a.report(t.Name, src, s.Generation, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Duplicate tenant",
					Detail:  fmt.Sprintf("Tenant %q is already declared in %s; this declaration is ignored.", t.Name, first.file.Source),
					Subject: t.DeclRange.Ptr()}}, false)
				continue
			}
			valid[t.Name] = claim{t: t, file: f}
			all = append(all, t)
		}
	}
	// Policies decide over every valid tenant together, so host totals
	// hold; a denied tenant is held like one with an invalid spec. The
	// memo re-evaluates only the tenants whose spec changed, unless the
	// host's totals changed.
	denied := map[string]hcl.Diagnostics{}
	if a.policies != nil {
		rep, err := a.policies.Evaluate(ctx, a.cfg.Host, all)
		if err != nil {
			return err
		}
		for _, res := range rep.Results {
			if !res.Allowed {
				one := policy.Report{Results: []policy.Result{res}}
				if res.Tenant == "" { // a host-scope decision: it concerns all
					for name := range valid {
						denied[name] = append(denied[name], one.Diagnostics()...)
					}
				} else {
					denied[res.Tenant] = append(denied[res.Tenant], one.Diagnostics()...)
				}
			}
		}
	}
	names := map[string]bool{}
	for n, o := range owners {
		if state.SourceKind(o) == s.Kind {
			names[n] = true
		}
	}
	a.mu.Lock()
	for n, r := range a.runners {
		if r.source == "" || state.SourceKind(r.source) == s.Kind {
			names[n] = true
		}
	}
	a.mu.Unlock()
	for n := range valid {
		names[n] = true
	}
	for n := range held {
		names[n] = true
	}
	a.mu.Lock()
	a.gen = s.Generation
	a.mu.Unlock()
	for name := range names {
		c, ok := valid[name]
		switch {
		case ok && denied[name].HasErrors():
			a.hold(name, c.file.Source, s.Generation, denied[name])
		case ok:
			// A spec decoded before (the file source decodes a file only
			// when its content changed) needs no new desired state, but on
			// a resync, which also pins module digests afresh.
			if !s.Resync && a.keep(name, c.t, c.file.Source, s.Generation, denied[name]) {
				continue
			}
			d, err := engine.Desired(a.cfg.Host, []*spec.Tenant{c.t})
			if err != nil {
				a.hold(name, c.file.Source, s.Generation, hcl.Diagnostics{{Severity: hcl.DiagError,
					Summary: "Cannot use tenant spec", Detail: err.Error(), Subject: c.t.DeclRange.Ptr()}})
				continue
			}
			a.want(name, c.file.Source, s.Generation, &d[0], c.t, denied[name], s.Resync)
		case held[name] != nil:
			a.hold(name, held[name].Source, s.Generation, held[name].Diags)
		default:
			a.want(name, "", s.Generation, nil, nil, nil, s.Resync)
		}
	}
	return nil
}

// keep reports whether the tenant's desired state in force was made from t,
// the spec from source, and stands; if so, it takes gen and warnings as the
// tenant's generation and diagnostics.
func (a *Agent) keep(name string, t *spec.Tenant, source string, gen uint64, warnings hcl.Diagnostics) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	r, ok := a.runners[name]
	if !ok || r.spec != t || !r.known || r.held || r.source != source {
		return false
	}
	r.generation, r.diags = gen, warnings
	return true
}

// want sets a tenant's desired spec (nil: destroy it), made from t, and
// queues it if it changed, or on a resync.
func (a *Agent) want(name, source string, gen uint64, d *plan.Tenant, t *spec.Tenant, warnings hcl.Diagnostics, resync bool) {
	data, _ := json.Marshal(d)
	sum := sha256.Sum256(data)
	print := string(sum[:])
	a.mu.Lock()
	r := a.runner(name)
	changed := r.print != print || r.held || !r.known
	// A resync leaves a failed tenant to its backoff.
	resync = resync && !time.Now().Before(r.nextRetry)
	if source != "" {
		r.source = source
	}
	r.generation, r.desired, r.spec, r.known, r.held, r.print, r.diags = gen, d, t, true, false, print, warnings
	a.mu.Unlock()
	if changed || resync {
		a.queue.Add(name)
	}
}

// hold keeps a tenant as it is while its spec is invalid: the last good
// spec stays in force, and the diagnostics are reported.
func (a *Agent) hold(name, source string, gen uint64, diags hcl.Diagnostics) {
	a.mu.Lock()
	r := a.runner(name)
	was := r.held
	r.source, r.generation, r.held, r.diags = source, gen, true, diags
	a.mu.Unlock()
	if !was {
		a.cfg.Bus.Publish(events.Event{Type: events.TypeDiagnostics, Source: source, Generation: gen, Tenant: name,
			Message:     "the tenant's spec is invalid: its last good spec stays in force",
			Diagnostics: events.Diagnostics(diags)})
	}
}

// report publishes diagnostics for a tenant declaration that was ignored.
func (a *Agent) report(name, source string, gen uint64, diags hcl.Diagnostics, owner bool) {
	msg := "a duplicate declaration is ignored"
	if owner {
		msg = "the tenant belongs to another source"
	}
	a.cfg.Bus.Publish(events.Event{Type: events.TypeDiagnostics, Source: source, Generation: gen, Tenant: name,
		Message: msg, Diagnostics: events.Diagnostics(diags)})
}

// reconcile brings one tenant to its desired spec.
func (a *Agent) reconcile(ctx context.Context, name string) {
	a.mu.Lock()
	r := a.runner(name)
	r.inflight, r.pending = append(r.inflight, r.pending...), nil
	desired, held, known, source, gen := r.desired, r.held, r.known, r.source, r.generation
	a.mu.Unlock()

	start := time.Now()
	var err error
	var retry time.Duration
	res := Result{Tenant: name}
	if known || !held {
		r.mu.Lock()
		// Apply outlives the agent's stop: a step under way finishes and
		// is recorded, and nothing is rolled back because the agent stops.
		actx := context.WithoutCancel(ctx)
		var p *plan.Plan
		if p, err = a.cfg.Engine.PlanTenant(actx, state.SourceKind(source), name, desired); err == nil {
			err = a.cfg.Engine.Apply(actx, p)
			retry = p.RetryAfter
			res.Created, res.Updated, res.Destroyed, res.Restarted =
				p.Count(plan.Create), p.Count(plan.Update), p.Count(plan.Destroy), p.Count(plan.Restart)
		}
		r.mu.Unlock()
	}
	res.Duration, res.Err = time.Since(start), err

	a.mu.Lock()
	r.lastErr, r.reconciled = err, time.Now()
	if err != nil {
		r.failures++
		retry = a.cfg.Backoff.next(r.failures)
		r.nextRetry = time.Now().Add(retry)
	} else {
		r.failures, r.nextRetry = 0, time.Time{}
	}
	for _, c := range r.inflight {
		c <- res
	}
	r.inflight = nil
	if err == nil && desired == nil && !held && len(r.pending) == 0 {
		delete(a.runners, name) // destroyed
	}
	a.mu.Unlock()

	ev := events.Event{Type: events.TypeReconcile, Tenant: name, Source: source, Generation: gen, Duration: time.Since(start).Seconds()}
	if err != nil {
		ev.Error = err.Error()
		a.cfg.Log.Warn("reconcile failed", "tenant", name, "error", err, "retry_in", retry)
	}
	a.cfg.Bus.Publish(ev)
	if retry > 0 {
		a.queue.AddAfter(name, retry)
	}
}

// Reconcile queues the named tenants (every known tenant when none is
// named) and waits until each has reconciled once, started after the call,
// returning each one's result. The error is for the call itself: an
// unknown tenant, or ctx ending first.
func (a *Agent) Reconcile(ctx context.Context, tenants ...string) ([]Result, error) {
	a.mu.Lock()
	if len(tenants) == 0 {
		tenants = slices.Sorted(maps.Keys(a.runners))
	}
	for _, n := range tenants {
		if _, ok := a.runners[n]; !ok {
			a.mu.Unlock()
			return nil, fmt.Errorf("tenant %q: %w", n, engine.ErrUnknownTenant)
		}
	}
	waits := make([]chan Result, len(tenants))
	for i, n := range tenants {
		waits[i] = make(chan Result, 1)
		a.runners[n].pending = append(a.runners[n].pending, waits[i])
	}
	a.mu.Unlock()
	for _, n := range tenants {
		a.queue.Add(n)
	}
	out := make([]Result, len(tenants))
	for i, c := range waits {
		select {
		case out[i] = <-c:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return out, nil
}

// TenantStatus is the agent's view of a tenant.
type TenantStatus struct {
	engine.TenantStatus
	// Generation is the source generation of the desired spec in force.
	Generation uint64 `json:"generation"`
	// Held is set while the tenant's spec is invalid or denied: its last
	// good spec stays in force.
	Held        bool                `json:"held"`
	Diagnostics []events.Diagnostic `json:"diagnostics,omitempty"`
	LastError   string              `json:"last_error,omitempty"`
	Failures    int                 `json:"failures,omitempty"`
	NextRetry   time.Time           `json:"next_retry,omitzero"`
	Reconciled  time.Time           `json:"reconciled,omitzero"`
}

// Status reports every tenant: the engine's records and run states, with
// the agent's view of each tenant's source, spec and reconciles.
func (a *Agent) Status(ctx context.Context) ([]TenantStatus, error) {
	recs, err := a.cfg.Engine.Status(ctx)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := map[string]bool{}
	var out []TenantStatus
	add := func(ts engine.TenantStatus) {
		st := TenantStatus{TenantStatus: ts}
		if r, ok := a.runners[ts.Name]; ok {
			st.Generation, st.Held, st.Failures, st.NextRetry, st.Reconciled = r.generation, r.held, r.failures, r.nextRetry, r.reconciled
			st.Diagnostics = events.Diagnostics(r.diags)
			if r.lastErr != nil {
				st.LastError = r.lastErr.Error()
			}
			if st.Source == "" {
				st.Source = r.source
			}
		}
		out = append(out, st)
	}
	for _, ts := range recs {
		seen[ts.Name] = true
		add(ts)
	}
	for _, n := range slices.Sorted(maps.Keys(a.runners)) {
		if !seen[n] {
			add(engine.TenantStatus{Name: n, Instances: []engine.InstanceStatus{}})
		}
	}
	return out, nil
}

// instanceOp runs an operator's action on an instance while its tenant does
// not reconcile, then queues the tenant.
func (a *Agent) instanceOp(ctx context.Context, tenant string, op func(context.Context) error) error {
	a.mu.Lock()
	r, ok := a.runners[tenant]
	a.mu.Unlock()
	if !ok {
		return fmt.Errorf("tenant %q: %w", tenant, engine.ErrUnknownTenant)
	}
	r.mu.Lock()
	err := op(ctx)
	r.mu.Unlock()
	a.queue.Add(tenant)
	return err
}

// Stop stops an instance and holds it stopped until Start or Restart.
func (a *Agent) Stop(ctx context.Context, tenant, instance string) error {
	return a.instanceOp(ctx, tenant, func(ctx context.Context) error { return a.cfg.Engine.StopInstance(ctx, tenant, instance) })
}

// Start starts an instance an operator stopped.
func (a *Agent) Start(ctx context.Context, tenant, instance string) error {
	return a.instanceOp(ctx, tenant, func(ctx context.Context) error { return a.cfg.Engine.StartInstance(ctx, tenant, instance) })
}

// Restart starts an instance's workload afresh, keeping its state.
func (a *Agent) Restart(ctx context.Context, tenant, instance string) error {
	return a.instanceOp(ctx, tenant, func(ctx context.Context) error { return a.cfg.Engine.RestartInstance(ctx, tenant, instance) })
}

// StateHash returns the Merkle root of an instance's state.
func (a *Agent) StateHash(ctx context.Context, tenant, instance string) ([]byte, error) {
	return a.cfg.Engine.StateHash(ctx, tenant, instance)
}

// Checkpoints lists an instance's checkpoints, oldest first.
func (a *Agent) Checkpoints(ctx context.Context, tenant, instance string) ([]sdk.Checkpoint, error) {
	return a.cfg.Engine.Checkpoints(ctx, tenant, instance)
}

// Checkpoint snapshots an instance's state under name, while its tenant
// does not reconcile.
func (a *Agent) Checkpoint(ctx context.Context, tenant, instance, name string) (sdk.Checkpoint, error) {
	var cp sdk.Checkpoint
	err := a.instanceOp(ctx, tenant, func(ctx context.Context) error {
		var err error
		cp, err = a.cfg.Engine.Checkpoint(ctx, tenant, instance, name)
		return err
	})
	return cp, err
}

// Rollback returns an instance's state to its checkpoint name while its
// tenant does not reconcile, stopping and starting a running workload
// around it.
func (a *Agent) Rollback(ctx context.Context, tenant, instance, name string) error {
	return a.instanceOp(ctx, tenant, func(ctx context.Context) error { return a.cfg.Engine.Rollback(ctx, tenant, instance, name) })
}

// MountCheckpoint mounts an instance's checkpoint read-only next to its
// state.
func (a *Agent) MountCheckpoint(ctx context.Context, tenant, instance, name string) (sdk.Mount, error) {
	var m sdk.Mount
	err := a.instanceOp(ctx, tenant, func(ctx context.Context) error {
		var err error
		m, err = a.cfg.Engine.MountCheckpoint(ctx, tenant, instance, name)
		return err
	})
	return m, err
}

// UnmountCheckpoint unmounts an instance's checkpoint.
func (a *Agent) UnmountCheckpoint(ctx context.Context, tenant, instance, name string) error {
	return a.instanceOp(ctx, tenant, func(ctx context.Context) error {
		return a.cfg.Engine.UnmountCheckpoint(ctx, tenant, instance, name)
	})
}

// Logs streams an instance's output into fn.
func (a *Agent) Logs(ctx context.Context, tenant, instance string, opts sdk.LogOptions, fn func([]byte) error) error {
	return a.cfg.Engine.Logs(ctx, tenant, instance, opts, fn)
}

// Journal returns the last n journal entries, oldest first.
func (a *Agent) Journal(_ context.Context, n int) ([]state.Entry, error) {
	return a.cfg.Store.Journal(n)
}

// Plan returns what the next reconcile of every tenant would do, without
// doing it. Tenants are planned in parallel, GOMAXPROCS at once: each
// plan reads and refreshes that tenant's records alone.
func (a *Agent) Plan(ctx context.Context) (*plan.Plan, error) {
	a.mu.Lock()
	type want struct {
		r       *runner
		source  string
		desired *plan.Tenant
	}
	var ws []want
	for _, n := range slices.Sorted(maps.Keys(a.runners)) {
		if r := a.runners[n]; !r.held || r.known {
			ws = append(ws, want{r, r.source, r.desired})
		}
	}
	a.mu.Unlock()
	plans := make([]*plan.Plan, len(ws))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, w := range ws {
		g.Go(func() error {
			// The plan's refresh records exits and recovered handles: it
			// runs while the tenant does not reconcile, as a reconcile's
			// does.
			w.r.mu.Lock()
			defer w.r.mu.Unlock()
			p, err := a.cfg.Engine.PlanTenant(gctx, state.SourceKind(w.source), w.r.name, w.desired)
			plans[i] = p
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := &plan.Plan{Usage: map[string]plan.Usage{}}
	for _, p := range plans {
		out.Actions = append(out.Actions, p.Actions...)
		out.Drift = append(out.Drift, p.Drift...)
		maps.Copy(out.Usage, p.Usage)
	}
	return out, nil
}

// kick queues the named tenants that the agent knows, to reconcile now: a
// tenant it has no runner for is not queued, since reconciling it with no
// desired spec would destroy it.
func (a *Agent) kick(tenants ...string) {
	a.mu.Lock()
	known := make([]string, 0, len(tenants))
	for _, n := range tenants {
		if _, ok := a.runners[n]; ok {
			known = append(known, n)
		}
	}
	a.mu.Unlock()
	for _, n := range known {
		a.queue.Add(n)
	}
}

// kickServed queues the tenants that the plugin kind/name serves.
func (a *Agent) kickServed(ctx context.Context, kind sdk.Kind, name string) {
	tenants, err := a.cfg.Engine.TenantsServedBy(ctx, kind, name)
	if err != nil {
		a.cfg.Log.Error("find the tenants a plugin serves", "kind", kind, "plugin", name, "error", err)
		return
	}
	a.kick(tenants...)
}

// watchBackoff bounds the delay before subscribing again to a runtime's
// exits; the plugin host adds its own backoff before relaunching a plugin.
var watchBackoff = Backoff{Base: 100 * time.Millisecond, Max: 30 * time.Second}

// watchExits follows the exits of runtime name's instances until ctx ends,
// and queues the tenant of each exited instance, so that its restart
// policy acts at once rather than at the next resync. It subscribes again
// whenever the stream ends (the plugin restarted), and after each
// subscription queues the runtime's tenants, whose exits in between went
// unseen (and whose refresh has the new plugin process recover them).
func (a *Agent) watchExits(ctx context.Context, name string) {
	failures := 0
	for {
		err := a.cfg.Engine.WatchExits(ctx, name, func() {
			failures = 0
			a.kickServed(ctx, sdk.KindRuntime, name)
		}, func(e sdk.ExitEvent) error {
			a.cfg.Log.Debug("instance exited", "runtime", name, "tenant", e.Instance.Tenant, "instance", e.Instance.Name,
				"cause", e.Status.Cause, "exit_code", e.Status.ExitCode)
			a.kick(e.Instance.Tenant)
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, sdk.ErrUnsupported) {
			a.cfg.Log.Warn("runtime cannot watch exits: its exits are seen at each resync", "runtime", name, "error", err)
			return
		}
		failures++
		delay := watchBackoff.next(failures)
		a.cfg.Log.Debug("exit watch ended; subscribing again", "runtime", name, "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// PluginExited handles a plugin process that exited without being asked
// to (pluginhost.WithObserver): it publishes a plugin restart event, and
// queues the tenants the plugin serves, whose reconciles relaunch it and
// have it recover their instances from their stored handles. It returns
// at once.
func (a *Agent) PluginExited(e pluginhost.Event) {
	msg := fmt.Sprintf("%s plugin %q exited; relaunching after %s (failure %d in a row)", e.Kind, e.Name, e.Delay.Round(time.Millisecond), e.Restarts)
	a.cfg.Log.Warn("plugin exited", "kind", e.Kind, "plugin", e.Name, "tenant", e.Tenant, "cause", e.Cause, "restarts", e.Restarts)
	a.cfg.Bus.Publish(events.Event{Type: events.TypePluginRestart, Tenant: e.Tenant, Cause: e.Cause, Message: msg})
	if e.Tenant != "" {
		a.kick(e.Tenant)
		return
	}
	go a.kickServed(context.Background(), e.Kind, e.Name)
}

package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/engine/enginetest"
	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/policy"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
)

// fakeLedger is a test double of a ledger plugin: a list of lease events,
// streamed after a cursor (the index of the last event handled), and the
// replies received. Like a real plugin, it sends a reply once per
// idempotency key.
type fakeLedger struct {
	mu      sync.Mutex
	events  []sdk.LeaseEvent
	added   chan struct{}
	replies chan sdk.LeaseReply // every reply sent (not repeated ones)
	sent    map[string]sdk.LeaseReply
	calls   int // Reply calls, repeated ones included
}

func newFakeLedger() *fakeLedger {
	return &fakeLedger{added: make(chan struct{}, 1), replies: make(chan sdk.LeaseReply, 64), sent: map[string]sdk.LeaseReply{}}
}

func (f *fakeLedger) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: "fake", Kind: sdk.KindLedger, Version: "1", Capabilities: sdk.Capabilities{Scope: sdk.ScopeHost}}, nil
}
func (f *fakeLedger) Configure(context.Context, sdk.ConfigureRequest) error { return nil }

// add appends an event to the ledger.
func (f *fakeLedger) add(ev sdk.LeaseEvent) {
	f.mu.Lock()
	ev.Cursor = strconv.Itoa(len(f.events) + 1)
	f.events = append(f.events, ev)
	f.mu.Unlock()
	select {
	case f.added <- struct{}{}:
	default:
	}
}

func (f *fakeLedger) Events(ctx context.Context, cursor string, fn func(sdk.LeaseEvent) error) error {
	next := 0
	if cursor != "" {
		n, err := strconv.Atoi(cursor)
		if err != nil {
			return err
		}
		next = n
	}
	for {
		f.mu.Lock()
		evs := f.events[min(next, len(f.events)):]
		f.mu.Unlock()
		for _, ev := range evs {
			if err := fn(ev); err != nil {
				return err
			}
			next++
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-f.added:
		}
	}
}

func (f *fakeLedger) Reply(_ context.Context, r sdk.LeaseReply) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if _, ok := f.sent[r.IdempotencyKey]; ok {
		return nil
	}
	f.sent[r.IdempotencyKey] = r
	f.replies <- r
	return nil
}

// next waits for the next reply sent.
func (f *fakeLedger) next(t *testing.T) sdk.LeaseReply {
	t.Helper()
	select {
	case r := <-f.replies:
		return r
	case <-time.After(time.Minute):
		t.Fatal("no reply within a minute")
		return sdk.LeaseReply{}
	}
}

// ledgerWorld is the engine's fake world with a ledger plugin.
type ledgerWorld struct {
	*enginetest.World
	ledger *fakeLedger
}

func (w ledgerWorld) Ledger(context.Context, string, pluginhost.Scope) (sdk.Ledger, error) {
	return w.ledger, nil
}

// leaseHost is a host on the fake world with one file tenant, bench0000,
// and a ledger plugin "fake".
type leaseHost struct {
	dir    string
	host   *spec.Host
	world  *enginetest.World
	ledger *fakeLedger
	store  *state.Store
	agent  *Agent
	stop   func()
	smu    sync.Mutex
	// started counts the starts of each instance; guarded by smu.
	started map[string]int
}

// starts returns how many times tenant's instance web started.
func (lh *leaseHost) starts(tenant string) int {
	lh.smu.Lock()
	defer lh.smu.Unlock()
	return lh.started[tenant+"/web"]
}

func newLeaseHost(t *testing.T) *leaseHost {
	t.Helper()
	dir := t.TempDir()
	policies, err := filepath.Abs("../../policies")
	if err != nil {
		t.Fatal(err)
	}
	hostFile, err := enginetest.WriteHost(dir, policies, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(hostFile)
	if err != nil {
		t.Fatal(err)
	}
	src = []byte(strings.Replace(string(src), "instances = 1\n", "instances = 8\n", 1) + "ledger \"fake\" {}\n")
	if err := os.WriteFile(hostFile, src, 0o644); err != nil {
		t.Fatal(err)
	}
	lh := &leaseHost{dir: dir, world: enginetest.NewWorld(), ledger: newFakeLedger(), started: map[string]int{}}
	lh.world.OnStart = func(key string) {
		lh.smu.Lock()
		lh.started[key]++
		lh.smu.Unlock()
	}
	p := spec.NewParser()
	h, diags := p.LoadHost(hostFile)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	lh.host = h
	if err := engine.PrepareStateDir(h); err != nil {
		t.Fatal(err)
	}
	lh.start(t)
	return lh
}

// start starts the agent afresh on the host's state.
func (lh *leaseHost) start(t *testing.T) {
	t.Helper()
	p := spec.NewParser()
	set, diags := policy.Load(p, lh.host.PolicyFiles)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	st, err := state.Open(engine.DBPath(lh.host))
	if err != nil {
		t.Fatal(err)
	}
	e := engine.New(lh.host, st, ledgerWorld{lh.world, lh.ledger}, lh.world)
	if diags, err := e.Configure(context.Background()); err != nil || diags.HasErrors() {
		t.Fatal(diags, err)
	}
	lh.store = st
	lh.agent = New(Config{Host: lh.host, Engine: e, Store: st, Policies: set, Resync: time.Hour, Workers: 4,
		Log: hclog.New(&hclog.LoggerOptions{Output: testWriter{t}, Level: hclog.Debug})})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := lh.agent.Run(ctx); err != nil {
			t.Error(err)
		}
	}()
	stopped := false
	lh.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		st.Close()
	}
	t.Cleanup(lh.stop)
}

// leaseName returns a fresh lease ID and its tenant's name, as a ledger
// derives it.
func leaseName(t *testing.T) (id, tenant string) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return strings.ToUpper(hex.EncodeToString(b)), "l-" + hex.EncodeToString(b[:8])
}

// leaseSpec is a lease request for tenant with one instance asking for
// memory.
func leaseSpec(tenant, memory string) []byte {
	return fmt.Appendf(nil, `tenant %q {
  instance "web" {
    runtime = "wasm"
    module  = "app.wasm"
    resources {
      memory = %q
      cpu    = 0.1
      pids   = 32
    }
  }
}
`, tenant, memory)
}

// live reports whether the world runs tenant's instance web.
func (lh *leaseHost) live(tenant string) bool {
	lh.world.Mu.Lock()
	defer lh.world.Mu.Unlock()
	_, ok := lh.world.Live[tenant+"/web"]
	return ok
}

// TestLeaseAcquire: an acquire provisions the lease's tenant, owned by the
// lease, and is answered with success naming the event, with the
// instance details; the cursor is stored after. A replay of the event
// after a restart is answered with the same reply key, and provisions
// nothing again; the terminate destroys the tenant.
func TestLeaseAcquire(t *testing.T) {
	lh := newLeaseHost(t)
	id, tenant := leaseName(t)
	lh.ledger.add(sdk.LeaseEvent{ID: "TX1", Kind: sdk.LeaseAcquired, Lease: id, Tenant: tenant,
		Spec: leaseSpec(tenant, "64MiB"), ExpiresAt: time.Now().Add(time.Hour)})
	r := lh.ledger.next(t)
	if !r.OK || r.EventID != "TX1" || r.Lease != id || r.IdempotencyKey != replyKey("TX1") {
		t.Fatalf("reply = %+v", r)
	}
	var d LeaseDetails
	if err := json.Unmarshal(r.Payload, &d); err != nil || d.Tenant != tenant || len(d.Instances) != 1 || d.Instances[0] != "web" {
		t.Errorf("payload %s: %+v, %v", r.Payload, d, err)
	}
	if !lh.live(tenant) {
		t.Fatalf("tenant %s's instance is not running", tenant)
	}
	rec, ok, err := lh.store.Tenant(tenant)
	if err != nil || !ok || rec.Source != "lease:"+id {
		t.Errorf("tenant record %+v, %v, %v; want source lease:%s", rec, ok, err, id)
	}

	// The agent stops before the cursor is stored: the event comes again.
	lh.stop()
	st, err := state.Open(engine.DBPath(lh.host))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutCursor(ledgerCursor("fake"), ""); err != nil {
		t.Fatal(err)
	}
	st.Close()
	lh.start(t)
	lh.ledger.add(sdk.LeaseEvent{ID: "TX2", Kind: sdk.LeaseTerminated, Lease: id, Tenant: tenant})
	if r := lh.ledger.next(t); r.EventID != "TX2" || !r.OK {
		t.Fatalf("reply = %+v, want the terminate's", r)
	}
	lh.ledger.mu.Lock()
	calls := lh.ledger.calls
	lh.ledger.mu.Unlock()
	if calls != 3 {
		t.Errorf("%d Reply calls, want 3: the acquire's twice, under one key", calls)
	}
	if n := lh.starts(tenant); n != 1 {
		t.Errorf("tenant %s's instance started %d times, want once", tenant, n)
	}
	if _, err := lh.agent.Reconcile(context.Background(), tenant); err != nil {
		t.Logf("reconcile after terminate: %v", err) // the runner may be gone already
	}
	if lh.live(tenant) {
		t.Errorf("tenant %s still runs after its terminate", tenant)
	}
	if c, err := lh.store.Cursor(ledgerCursor("fake")); err != nil || c != "2" {
		t.Errorf("cursor %q, %v; want 2", c, err)
	}
}

// testWriter writes log lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// TestLeaseRefused: requests the host must not serve are answered with an
// error reply (which refunds), provision nothing, and leave every other
// tenant alone; the stream goes on past them.
func TestLeaseRefused(t *testing.T) {
	lh := newLeaseHost(t)
	ctx := context.Background()
	if err := lh.agent.Merge(ctx, (&FileSource{Host: lh.host}).Scan(ctx)); err != nil {
		t.Fatal(err)
	}
	if _, err := lh.agent.Reconcile(ctx, "bench0000"); err != nil {
		t.Fatal(err)
	}
	fileTenant, _, err := lh.store.Tenant("bench0000")
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		name string
		spec func(tenant string) []byte
		want string
	}{
		{"names the file tenant", func(string) []byte { return leaseSpec("bench0000", "64MiB") }, `exactly tenant "l-`},
		{"names another tenant", func(string) []byte { return leaseSpec("l-0000000000000000", "64MiB") }, `exactly tenant "l-`},
		{"two tenants", func(tn string) []byte {
			return append(leaseSpec(tn, "64MiB"), leaseSpec("l-0000000000000000", "64MiB")...)
		}, "exactly tenant"},
		{"fails policy", func(tn string) []byte { return leaseSpec(tn, "1536MiB") }, "denied by the host's policies"},
		{"invalid", func(tn string) []byte { return []byte(`tenant "` + tn + `" { instance "web" { runtime = "nope" } }`) }, "invalid"},
		{"module outside the artifacts", func(tn string) []byte {
			return []byte(strings.Replace(string(leaseSpec(tn, "64MiB")), `"app.wasm"`, `"/etc/passwd"`, 1))
		}, "invalid"},
		{"oversized", func(tn string) []byte {
			return append(leaseSpec(tn, "64MiB"), strings.Repeat("#", spec.MaxFileSize)...)
		}, "Spec too large"},
		{"nested too deep", func(tn string) []byte {
			return fmt.Appendf(nil, "tenant %q {\n  x = %s1%s\n}\n", tn, strings.Repeat("[", 100), strings.Repeat("]", 100))
		}, "invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, tenant := leaseName(t)
			ev := fmt.Sprintf("BAD%d", i)
			lh.ledger.add(sdk.LeaseEvent{ID: ev, Kind: sdk.LeaseAcquired, Lease: id, Tenant: tenant,
				Spec: tc.spec(tenant), ExpiresAt: time.Now().Add(time.Hour)})
			r := lh.ledger.next(t)
			if r.OK || r.EventID != ev || !strings.Contains(r.Message, tc.want) || len(r.Payload) != 0 {
				t.Errorf("reply = %+v, want an error with %q", r, tc.want)
			}
			if _, ok, err := lh.store.Tenant(tenant); ok || err != nil {
				t.Errorf("tenant %s recorded (%v)", tenant, err)
			}
			if n := lh.starts(tenant) + lh.starts("l-0000000000000000"); n != 0 {
				t.Errorf("%d starts", n)
			}
		})
	}
	after, _, err := lh.store.Tenant("bench0000")
	lh.world.Mu.Lock()
	_, live := lh.world.Live["bench0000/app00"]
	lh.world.Mu.Unlock()
	if err != nil || after.Source != fileTenant.Source || !live {
		t.Errorf("file tenant after: %+v, %v, live %v", after, err, live)
	}
}

// TestLeaseExpires: a lease's tenant is destroyed at its expiry, unless
// an extend moved the expiry; one lease's end leaves the others running.
func TestLeaseExpires(t *testing.T) {
	lh := newLeaseHost(t)
	shortID, short := leaseName(t)
	longID, long := leaseName(t)
	lh.ledger.add(sdk.LeaseEvent{ID: "A1", Kind: sdk.LeaseAcquired, Lease: longID, Tenant: long,
		Spec: leaseSpec(long, "64MiB"), ExpiresAt: time.Now().Add(time.Hour)})
	if r := lh.ledger.next(t); !r.OK {
		t.Fatalf("reply = %+v", r)
	}
	sub := lh.agent.Bus().Subscribe(64)
	defer sub.Close()
	lh.ledger.add(sdk.LeaseEvent{ID: "A2", Kind: sdk.LeaseAcquired, Lease: shortID, Tenant: short,
		Spec: leaseSpec(short, "64MiB"), ExpiresAt: time.Now().Add(time.Hour)})
	if r := lh.ledger.next(t); !r.OK {
		t.Fatalf("reply = %+v", r)
	}
	// An extend into the past: the lease expires at once.
	lh.ledger.add(sdk.LeaseEvent{ID: "E1", Kind: sdk.LeaseExtended, Lease: shortID, Tenant: short, ExpiresAt: time.Now()})
	if r := lh.ledger.next(t); !r.OK || r.EventID != "E1" {
		t.Fatalf("reply = %+v", r)
	}
	// The reconcile that destroys the tenant reports it before the store
	// has forgotten it: wait for both, within a generous bound.
	deadline := time.After(30 * time.Second)
	for gone := false; !gone; {
		select {
		case ev := <-sub.C():
			if ev.Type != "reconcile" || ev.Tenant != short {
				continue
			}
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("expired tenant %s still recorded or live", short)
		}
		_, recorded, _ := lh.store.Tenant(short)
		gone = !recorded && !lh.live(short)
	}
	if !lh.live(long) {
		t.Errorf("tenant %s stopped when another lease expired", long)
	}
	// An extend of the ended lease is refused.
	lh.ledger.add(sdk.LeaseEvent{ID: "E2", Kind: sdk.LeaseExtended, Lease: shortID, Tenant: short, ExpiresAt: time.Now().Add(time.Hour)})
	if r := lh.ledger.next(t); r.OK {
		t.Errorf("extend of an ended lease: reply = %+v", r)
	}
}

// TestLeaseOwnership: a spec file that declares a lease's tenant is
// refused and leaves the tenant to its lease; a rescan of the spec
// directory destroys no lease tenant.
func TestLeaseOwnership(t *testing.T) {
	lh := newLeaseHost(t)
	ctx := context.Background()
	id, tenant := leaseName(t)
	lh.ledger.add(sdk.LeaseEvent{ID: "O1", Kind: sdk.LeaseAcquired, Lease: id, Tenant: tenant,
		Spec: leaseSpec(tenant, "64MiB"), ExpiresAt: time.Now().Add(time.Hour)})
	if r := lh.ledger.next(t); !r.OK {
		t.Fatalf("reply = %+v", r)
	}
	if err := enginetest.WriteTenant(lh.host.TenantDir, tenant, 1, "taken"); err != nil {
		t.Fatal(err)
	}
	sub := lh.agent.Bus().Subscribe(64)
	defer sub.Close()
	if err := lh.agent.Merge(ctx, (&FileSource{Host: lh.host}).Scan(ctx)); err != nil {
		t.Fatal(err)
	}
	for ev := range sub.C() {
		if ev.Tenant == tenant && ev.Type == "diagnostics" {
			if !strings.Contains(ev.Message, "belongs to another source") {
				t.Errorf("event = %+v", ev)
			}
			break
		}
	}
	if _, err := lh.agent.Reconcile(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	rec, _, err := lh.store.Tenant(tenant)
	if err != nil || rec.Source != "lease:"+id || !lh.live(tenant) {
		t.Errorf("tenant %s: %+v, %v, live %v; want it running for its lease", tenant, rec, err, lh.live(tenant))
	}
}

// waitGone waits until tenant's instance no longer runs and its record is
// gone.
func (lh *leaseHost) waitGone(t *testing.T, tenant string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for lh.live(tenant) || lh.recorded(tenant) {
		if time.Now().After(deadline) {
			t.Fatalf("tenant %s still there", tenant)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recorded reports whether the store holds tenant.
func (lh *leaseHost) recorded(tenant string) bool {
	_, ok, _ := lh.store.Tenant(tenant)
	return ok
}

// TestLeaseLedgerClock: a lease on its ledger's clock expires when the
// ledger's progress passes its last ledger, never on wall-clock time: a
// stalled ledger keeps it running long past its ExpiresAt, and a resumed
// one expires it at the right ledger, extensions counted, also after the
// agent restarted.
func TestLeaseLedgerClock(t *testing.T) {
	lh := newLeaseHost(t)
	progress := func(ledger uint64) {
		lh.ledger.add(sdk.LeaseEvent{Kind: sdk.LeaseProgress, Ledger: ledger, LedgerTime: time.Now()})
	}
	aID, a := leaseName(t)
	bID, b := leaseName(t)
	past := time.Now().Add(-time.Hour) // a wall clock that says both expired
	lh.ledger.add(sdk.LeaseEvent{ID: "A", Kind: sdk.LeaseAcquired, Lease: aID, Tenant: a, Spec: leaseSpec(a, "64MiB"),
		ExpiresAt: past, Ledger: 100, ExpiresLedger: 104})
	lh.ledger.add(sdk.LeaseEvent{ID: "B", Kind: sdk.LeaseAcquired, Lease: bID, Tenant: b, Spec: leaseSpec(b, "64MiB"),
		ExpiresAt: past, Ledger: 100, ExpiresLedger: 110})
	for range 2 {
		if r := lh.ledger.next(t); !r.OK {
			t.Fatalf("reply = %+v", r)
		}
	}
	progress(101)
	progress(104) // A's last ledger: still its
	// The ledger stalls at 104: nothing expires, whatever the wall clock.
	time.Sleep(500 * time.Millisecond)
	if !lh.live(a) || !lh.live(b) {
		t.Fatalf("a lease expired while the ledger stalled: %s live %v, %s live %v", a, lh.live(a), b, lh.live(b))
	}
	// A is extended to 106; the ledger resumes.
	lh.ledger.add(sdk.LeaseEvent{ID: "EA", Kind: sdk.LeaseExtended, Lease: aID, Tenant: a, ExpiresAt: past, Ledger: 104, ExpiresLedger: 106})
	if r := lh.ledger.next(t); !r.OK || !strings.Contains(r.Message, "ledger 106") {
		t.Fatalf("extend reply = %+v", r)
	}
	progress(106)
	time.Sleep(200 * time.Millisecond)
	if !lh.live(a) {
		t.Fatalf("lease %s expired at its last ledger", a)
	}
	progress(107)
	lh.waitGone(t, a)
	if !lh.live(b) {
		t.Fatalf("tenant %s went with another lease", b)
	}

	// After a restart, B still waits for its ledger; an old progress
	// changes nothing, the one past 110 expires it.
	lh.stop()
	lh.start(t)
	progress(109)
	time.Sleep(300 * time.Millisecond)
	if _, err := lh.agent.Reconcile(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	if !lh.live(b) {
		t.Fatalf("lease %s expired before its last ledger after a restart", b)
	}
	progress(111)
	lh.waitGone(t, b)
}

// TestLeaseTaken: an acquire is refused, with an error reply and nothing
// provisioned, when its lease is held already (the same request in a new
// transaction), or when the tenant the ledger derived exists already,
// owned by a spec file or by another lease.
func TestLeaseTaken(t *testing.T) {
	lh := newLeaseHost(t)
	ctx := context.Background()
	if err := lh.agent.Merge(ctx, (&FileSource{Host: lh.host}).Scan(ctx)); err != nil {
		t.Fatal(err)
	}
	if _, err := lh.agent.Reconcile(ctx, "bench0000"); err != nil {
		t.Fatal(err)
	}
	id, tenant := leaseName(t)
	otherID, _ := leaseName(t)
	lh.ledger.add(sdk.LeaseEvent{ID: "T1", Kind: sdk.LeaseAcquired, Lease: id, Tenant: tenant,
		Spec: leaseSpec(tenant, "64MiB"), ExpiresAt: time.Now().Add(time.Hour)})
	if r := lh.ledger.next(t); !r.OK {
		t.Fatalf("reply = %+v", r)
	}
	for _, tc := range []struct {
		name string
		ev   sdk.LeaseEvent
		want string
	}{
		{"the same request again, in a new transaction", sdk.LeaseEvent{ID: "T2", Kind: sdk.LeaseAcquired, Lease: id, Tenant: tenant,
			Spec: leaseSpec(tenant, "64MiB"), ExpiresAt: time.Now().Add(time.Hour)}, "still held"},
		{"another lease's tenant", sdk.LeaseEvent{ID: "T3", Kind: sdk.LeaseAcquired, Lease: otherID, Tenant: tenant,
			Spec: leaseSpec(tenant, "64MiB"), ExpiresAt: time.Now().Add(time.Hour)}, "exists already"},
		{"a file tenant", sdk.LeaseEvent{ID: "T4", Kind: sdk.LeaseAcquired, Lease: otherID + "F", Tenant: "bench0000",
			Spec: leaseSpec("bench0000", "64MiB"), ExpiresAt: time.Now().Add(time.Hour)}, "exists already"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lh.ledger.add(tc.ev)
			r := lh.ledger.next(t)
			if r.OK || r.EventID != tc.ev.ID || !strings.Contains(r.Message, tc.want) {
				t.Fatalf("reply = %+v, want an error with %q", r, tc.want)
			}
		})
	}
	if n := lh.starts(tenant); n != 1 {
		t.Errorf("tenant %s's instance started %d times, want once", tenant, n)
	}
	rec, _, err := lh.store.Tenant(tenant)
	if err != nil || rec.Source != "lease:"+id || !lh.live(tenant) {
		t.Errorf("tenant %s: %+v, %v; want it running for its first lease", tenant, rec, err)
	}
	file, _, err := lh.store.Tenant("bench0000")
	if err != nil || file.Source == "" || strings.HasPrefix(file.Source, "lease:") {
		t.Errorf("file tenant: %+v, %v", file, err)
	}
}

package agent

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/engine/enginetest"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/policy"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
)

// The scale benchmarks of issue 5: a host of 1,000 tenants with 10
// instances each (KIGUMI_BENCH_TENANTS and KIGUMI_BENCH_INSTANCES change
// it), driven through the agent with the fake in-process runtime of
// enginetest, so that the agent and engine are what is measured. The state
// database is real bbolt on disk, fsync'd as in production. cmd/benchtable
// prints their metrics as the table of `make bench`.

// benchScale returns the tenants and instances per tenant of the scale
// benchmarks.
func benchScale(b *testing.B) (tenants, perTenant int) {
	get := func(env string, def int) int {
		if v := os.Getenv(env); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				b.Fatalf("%s=%q: want a positive number", env, v)
			}
			return n
		}
		return def
	}
	return get("KIGUMI_BENCH_TENANTS", 1000), get("KIGUMI_BENCH_INSTANCES", 10)
}

// benchAgent is an agent over a fresh scale host, with its workers running.
type benchAgent struct {
	*Agent
	host   *spec.Host
	world  *enginetest.World
	store  *state.Store
	events *events.Subscription
	cancel context.CancelFunc
	done   chan struct{}
}

// newBenchAgent writes a scale host in a fresh directory and starts an agent
// on it: workers only, without a file source, unless run is set.
func newBenchAgent(b *testing.B, tenants, perTenant int, run bool) *benchAgent {
	b.Helper()
	dir := b.TempDir()
	policies, err := filepath.Abs("../../policies")
	if err != nil {
		b.Fatal(err)
	}
	hostFile, err := enginetest.WriteHost(dir, policies, tenants, perTenant)
	if err != nil {
		b.Fatal(err)
	}
	p := spec.NewParser()
	h, diags := p.LoadHost(hostFile)
	if diags.HasErrors() {
		b.Fatal(diags)
	}
	set, diags := policy.Load(p, h.PolicyFiles)
	if diags.HasErrors() {
		b.Fatal(diags)
	}
	if err := engine.PrepareStateDir(h); err != nil {
		b.Fatal(err)
	}
	st, err := state.Open(engine.DBPath(h))
	if err != nil {
		b.Fatal(err)
	}
	w := enginetest.NewWorld()
	e := engine.New(h, st, w, w)
	if diags, err := e.Configure(context.Background()); err != nil || diags.HasErrors() {
		b.Fatal(diags, err)
	}
	bus := events.NewBus()
	ba := &benchAgent{host: h, world: w, store: st, events: bus.Subscribe(1 << 16), done: make(chan struct{})}
	ba.Agent = New(Config{Host: h, Engine: e, Store: st, Policies: set, Bus: bus, Resync: time.Hour, Workers: benchWorkers})
	ctx, cancel := context.WithCancel(context.Background())
	ba.cancel = cancel
	if run {
		go func() {
			defer close(ba.done)
			if err := ba.Run(ctx); err != nil {
				b.Error(err)
			}
		}()
	} else {
		for range ba.cfg.Workers {
			go ba.work(ctx)
		}
		close(ba.done)
	}
	b.Cleanup(ba.close)
	return ba
}

func (ba *benchAgent) close() {
	ba.cancel()
	ba.queue.ShutDown()
	<-ba.done
	ba.events.Close()
	ba.store.Close()
}

// waitReconciled waits until each of names has reconciled without error
// once more, and fails on a reconcile error.
func (ba *benchAgent) waitReconciled(b *testing.B, names ...string) {
	b.Helper()
	left := map[string]bool{}
	for _, n := range names {
		left[n] = true
	}
	timeout := time.After(10 * time.Minute)
	for len(left) > 0 {
		select {
		case ev := <-ba.events.C():
			if ev.Type != events.TypeReconcile || !left[ev.Tenant] {
				continue
			}
			if ev.Error != "" {
				b.Fatalf("reconcile %s: %s", ev.Tenant, ev.Error)
			}
			delete(left, ev.Tenant)
		case <-timeout:
			b.Fatalf("%d tenants not reconciled after 10 minutes", len(left))
		}
	}
	if n := ba.events.Dropped(); n > 0 {
		b.Fatalf("%d events dropped", n)
	}
}

// converge merges a scan of the host's tenant directory and waits until
// every tenant has reconciled.
func (ba *benchAgent) converge(b *testing.B, tenants int) {
	b.Helper()
	src := &FileSource{Host: ba.host}
	if err := ba.Merge(context.Background(), src.Scan(context.Background())); err != nil {
		b.Fatal(err)
	}
	names := make([]string, tenants)
	for i := range names {
		names[i] = enginetest.TenantName(i)
	}
	ba.waitReconciled(b, names...)
}

// BenchmarkScaleConverge creates every instance of a fresh scale host
// through the agent: a scan of the spec files, policies, and per-tenant
// reconciles with bounded concurrency. It reports instance actions per
// second, and the agent's memory once converged.
func BenchmarkScaleConverge(b *testing.B) {
	tenants, perTenant := benchScale(b)
	var elapsed time.Duration
	var heap, rss float64
	for range b.N {
		b.StopTimer()
		ba := newBenchAgent(b, tenants, perTenant, false)
		runtime.GC()
		b.StartTimer()
		start := time.Now()
		ba.converge(b, tenants)
		elapsed += time.Since(start)
		b.StopTimer()
		live, _, _, _ := ba.world.Snapshot()
		if got := len(live); got != tenants*perTenant {
			b.Fatalf("%d workloads run, want %d", got, tenants*perTenant)
		}
		h, r := memory()
		heap, rss = max(heap, h), max(rss, r)
		ba.close()
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*tenants*perTenant)/elapsed.Seconds(), "actions/s")
	b.ReportMetric(heap, "heap-MiB")
	b.ReportMetric(rss, "rss-MiB")
}

// memory returns the heap in use after a collection, and the process's
// resident set, in MiB.
func memory() (heap, rss float64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap = float64(ms.HeapInuse) / (1 << 20)
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			rss = kb / 1024
		}
	}
	return heap, rss
}

// BenchmarkScalePlanAgent is the agent's plan of a converged scale host with
// no change: a scan of the spec files (each read, none decoded again), a
// merge (policies kept for unchanged tenants), and each tenant's refresh
// and diff. The API's plan is the last part alone: api-ms/plan.
func BenchmarkScalePlanAgent(b *testing.B) {
	tenants, perTenant := benchScale(b)
	ba := newBenchAgent(b, tenants, perTenant, false)
	ba.converge(b, tenants)
	src := &FileSource{Host: ba.host}
	src.Scan(context.Background()) // the cache is warm in a running agent
	ctx := context.Background()
	var api time.Duration
	b.ResetTimer()
	for range b.N {
		if err := ba.Merge(ctx, src.Scan(ctx)); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		p, err := ba.Plan(ctx)
		api += time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if !p.Empty() {
			b.Fatalf("plan of a converged host: %d actions", len(p.Actions))
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/plan")
	b.ReportMetric(float64(api.Milliseconds())/float64(b.N), "api-ms/plan")
}

// BenchmarkScaleEmptyReconcile is the baseline of the agent's figures: one
// tenant's reconcile with nothing to do, on a converged scale host.
func BenchmarkScaleEmptyReconcile(b *testing.B) {
	tenants, perTenant := benchScale(b)
	ba := newBenchAgent(b, tenants, perTenant, false)
	ba.converge(b, tenants)
	ctx := context.Background()
	name := enginetest.TenantName(tenants / 2)
	b.ResetTimer()
	for range b.N {
		res, err := ba.Reconcile(ctx, name)
		if err != nil || res[0].Err != nil {
			b.Fatal(err, res)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/reconcile")
}

// BenchmarkScaleSpecLatency measures, on a converged scale host run by the
// agent with its file source (fsnotify), the time from a tenant's spec file
// being written (an environment change: every instance of the tenant is
// updated) to the tenant's reconcile having run it.
func BenchmarkScaleSpecLatency(b *testing.B) {
	tenants, perTenant := benchScale(b)
	ba := newBenchAgent(b, tenants, perTenant, true)
	names := make([]string, tenants)
	for i := range names {
		names[i] = enginetest.TenantName(i)
	}
	ba.waitReconciled(b, names...)
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		name := names[(i*7919)%tenants]
		start := time.Now()
		if err := enginetest.WriteTenant(ba.host.TenantDir, name, perTenant, "Hello"+strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
		ba.waitReconciled(b, name)
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(Settle.Milliseconds()), "settle-ms")
}

// benchWorkers is how many tenants the benchmarks' agents reconcile at once:
// KIGUMI_BENCH_WORKERS, or the agent's default.
var benchWorkers = func() int {
	if n, err := strconv.Atoi(os.Getenv("KIGUMI_BENCH_WORKERS")); err == nil && n > 0 {
		return n
	}
	return DefaultWorkers
}()

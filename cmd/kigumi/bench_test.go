package main

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kigumi/kigumi/core/agent"
	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/engine/enginetest"
	"github.com/kigumi/kigumi/core/policy"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
)

// The quickstart-sized benchmarks: two tenants with one wasm instance each,
// run through the real binary, real users, cgroups and sandboxes.
// BenchmarkExecBaseline is what starting the binary alone costs, so the
// others can be read as ratios to it.

func BenchmarkExecBaseline(b *testing.B) {
	for b.Loop() {
		if err := exec.Command(kigumiBin, "--help").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPlan(b *testing.B) {
	w := newWorkspace(b, 2)
	for b.Loop() {
		mustKigumi(b, "plan", "-c", w.host)
	}
}

func BenchmarkApplyNoChange(b *testing.B) {
	w := newWorkspace(b, 2)
	mustKigumi(b, "apply", "-c", w.host, "--auto-approve")
	for b.Loop() {
		mustKigumi(b, "apply", "-c", w.host, "--auto-approve")
	}
}

// BenchmarkApplyDestroy creates two tenants with an instance each, then
// destroys them: users, cgroups, state, sandboxes.
func BenchmarkApplyDestroy(b *testing.B) {
	w := newWorkspace(b, 2)
	mustKigumi(b, "apply", "-c", w.host, "--auto-approve") // warm the compilation cache
	mustKigumi(b, "destroy", "-c", w.host, "--auto-approve")
	for b.Loop() {
		mustKigumi(b, "apply", "-c", w.host, "--auto-approve")
		mustKigumi(b, "destroy", "-c", w.host, "--auto-approve")
	}
}

// BenchmarkScalePlanCLI is `kigumi plan` without an agent on the scale host
// of issue 5 (1,000 tenants of 10 instances; KIGUMI_BENCH_TENANTS and
// KIGUMI_BENCH_INSTANCES change it), converged first by an agent with the
// fake in-process runtime of enginetest. Each run goes through the CLI's
// code path in-process, as apply's read-only plan does (storePlan): the host
// spec, every tenant file, the policies and their evaluation, the state
// database read-only, desired state, the refresh and diff of every record,
// and the rendering. It launches no plugin: a real runtime would refresh
// each workload through its plugin instead of the fake.
func BenchmarkScalePlanCLI(b *testing.B) {
	tenants, perTenant := benchScale(b)
	hostFile := convergedScaleHost(b, tenants, perTenant)
	c := &cli{config: hostFile, lockTimeout: time.Minute, stdout: io.Discard, stderr: io.Discard,
		log: hclog.NewNullLogger()}
	ctx := context.Background()
	for b.Loop() {
		s, p, code := planFromSpecs(ctx, c, storePlan)
		s.close()
		if code != exitOK {
			b.Fatalf("plan: exit %d", code)
		}
		if !p.Empty() {
			b.Fatalf("plan of a converged host: %d actions", len(p.Actions))
		}
		if err := p.Render(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/plan")
}

// benchScale returns the tenants and instances per tenant of the scale
// benchmarks, as core/agent's benchmarks take them.
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

// convergedScaleHost writes a scale host in a fresh directory and has an
// agent on the fake runtime bring every tenant up, recording them in the
// host's state database. It returns the host spec's path.
func convergedScaleHost(b *testing.B, tenants, perTenant int) string {
	b.Helper()
	policies, err := filepath.Abs("../../policies")
	if err != nil {
		b.Fatal(err)
	}
	hostFile, err := enginetest.WriteHost(b.TempDir(), policies, tenants, perTenant)
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
	defer st.Close()
	w := enginetest.NewWorld()
	e := engine.New(h, st, w, w)
	if diags, err := e.Configure(context.Background()); err != nil || diags.HasErrors() {
		b.Fatal(diags, err)
	}
	a := agent.New(agent.Config{Host: h, Engine: e, Store: st, Policies: set, Resync: time.Hour, Workers: 64})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	names := make([]string, tenants)
	for i := range names {
		names[i] = enginetest.TenantName(i)
	}
	// The agent knows the tenants once its file source's first snapshot
	// is merged.
	for {
		res, err := a.Reconcile(ctx, names...)
		if errors.Is(err, engine.ErrUnknownTenant) {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				b.Fatalf("reconcile %s: %v", r.Tenant, r.Err)
			}
		}
		return hostFile
	}
}

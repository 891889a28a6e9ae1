package ctrruntime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// benchArgs is what the benchmarks' containers run: a pid 1 that ends on
// SIGTERM, so that destroying them does not wait for the kill.
var benchArgs = []string{"/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"}

// BenchmarkCtrStartLatency measures start to running of one container of
// a pulled image: through the runtime (Start: the spec with its hardening,
// the remapped snapshot, the logging process) and, in the same run and
// interleaved with it, bare containerd as `ctr run -d --null-io` does it
// (container with a snapshot and the image's default spec, task, start).
// It reports the p50 and p99 of each.
func BenchmarkCtrStartLatency(b *testing.B) {
	r := newRuntime(b, nil)
	tn := newTenant(b)
	ctx, c := benchClient(b)
	img, err := r.pull(ctx, c, sdk.Artifact{Image: env.Image})
	if err != nil {
		b.Fatal(err)
	}
	// The first start of each also makes what later ones reuse (the
	// tenant's remapped base snapshot).
	if _, err := startOurs(b, r, tn, "warm"); err != nil {
		b.Fatal(err)
	}
	if _, err := startBare(ctx, c, img, "bare-warm"); err != nil {
		b.Fatal(err)
	}
	var ours, bare []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d, err := startOurs(b, r, tn, fmt.Sprintf("i%d", i))
		if err != nil {
			b.Fatal(err)
		}
		ours = append(ours, d)
		if d, err = startBare(ctx, c, img, fmt.Sprintf("bare-%d", i)); err != nil {
			b.Fatal(err)
		}
		bare = append(bare, d)
	}
	b.StopTimer()
	b.ReportMetric(percentile(ours, 50), "kigumi-p50-ms")
	b.ReportMetric(percentile(ours, 99), "kigumi-p99-ms")
	b.ReportMetric(percentile(bare, 50), "bare-p50-ms")
	b.ReportMetric(percentile(bare, 99), "bare-p99-ms")
}

// BenchmarkCtrScale50 starts 50 containers across 10 tenants through the
// runtime, one after another, and reports the total time and the memory
// then: containerd's and its shims' RSS (the shims' logging processes
// included), and the RSS of this process, which holds the runtime.
func BenchmarkCtrScale50(b *testing.B) {
	const tenantCount, perTenant = 10, 5
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		r := newRuntime(b, nil)
		tns := make([]testTenant, tenantCount)
		for j := range tns {
			tns[j] = newTenant(b)
		}
		b.StartTimer()
		t0 := time.Now()
		for j := 0; j < perTenant; j++ {
			for _, tn := range tns {
				if _, err := startOurs(b, r, tn, fmt.Sprintf("s%d-%d", i, j)); err != nil {
					b.Fatal(err)
				}
			}
		}
		total := time.Since(t0)
		b.StopTimer()
		b.ReportMetric(total.Seconds(), "total-s")
		b.ReportMetric(float64(rssBelow(b, env.Address))/(1<<20), "containerd-rss-MiB")
		b.ReportMetric(float64(rssOf(b, os.Getpid()))/(1<<20), "runtime-rss-MiB")
	}
}

// BenchmarkCtrDaemon measures what a tenant's own daemon costs in the
// per-tenant mode, each iteration on a fresh tenant: PrepareTenant to the
// daemon serving, and the daemon's memory (RSS and PSS of its rootlesskit
// and containerd processes, from /proc/PID/smaps_rollup, idle, before any
// container). It also measures the first container's Start (the
// tenant's first, so its image and snapshot are new to the daemon) in the
// per-tenant mode and, in the same run and interleaved with it, in the
// shared mode on a fresh neighbour tenant. It reports the p50 of each.
func BenchmarkCtrDaemon(b *testing.B) {
	ctx := context.Background()
	own := newRuntime(b, sdk.Config{"daemon": ModePerTenant})
	shared := newRuntime(b, nil)
	var prep, ownStart, sharedStart []time.Duration
	var rss, pss int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		tn, nb := newTenant(b), newTenant(b)
		b.StartTimer()
		treq := &sdk.TenantRequest{Tenant: tn.name, User: tn.user, Cgroup: tn.cgroup, RunDir: filepath.Join(b.TempDir(), "tenant")}
		t0 := time.Now()
		th, err := own.PrepareTenant(ctx, treq)
		prep = append(prep, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		d, err := decodeTenant(th)
		if err != nil {
			b.Fatal(err)
		}
		for _, pid := range daemonProcesses(d) {
			r, p := smapsRollup(pid)
			rss, pss = rss+r, pss+p
		}
		tn.handle = th
		for _, m := range []struct {
			r  *Runtime
			tn testTenant
			ds *[]time.Duration
		}{{own, tn, &ownStart}, {shared, nb, &sharedStart}} {
			req := request(b, m.tn, instance{name: "first", args: benchArgs, resources: sdk.Resources{MemoryBytes: 32 << 20, Pids: 16}})
			t0 := time.Now()
			h, err := m.r.Start(ctx, req)
			*m.ds = append(*m.ds, time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
			if err := m.r.Destroy(ctx, h); err != nil {
				b.Fatal(err)
			}
		}
		if err := own.ReleaseTenant(ctx, th); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(percentile(prep, 50), "prepare-p50-ms")
	b.ReportMetric(float64(rss)/float64(b.N)/(1<<20), "daemon-rss-MiB")
	b.ReportMetric(float64(pss)/float64(b.N)/(1<<20), "daemon-pss-MiB")
	b.ReportMetric(percentile(ownStart, 50), "per-tenant-first-p50-ms")
	b.ReportMetric(percentile(sharedStart, 50), "shared-first-p50-ms")
}

// BenchmarkCtrNetwork measures Start of a networked container with one
// published port and outbound "internet": in the per-tenant mode (its
// slirp4netns, started and ready, the rules in its namespace, the port
// added) and, in the same run and interleaved with them, in the same mode
// without a network and in the shared mode (CNI on the bridge). It
// reports the p50 of each, and the RSS of one slirp4netns.
func BenchmarkCtrNetwork(b *testing.B) {
	ctx := context.Background()
	pt, nb := newTenant(b), newTenant(b)
	r := newRuntime(b, slirpConfig(nil, pt))
	treq := &sdk.TenantRequest{Tenant: pt.name, User: pt.user, Cgroup: pt.cgroup, RunDir: filepath.Join(b.TempDir(), "tenant")}
	th, err := r.PrepareTenant(ctx, treq)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = r.ReleaseTenant(ctx, th) })
	pt.handle = th
	modes := []struct {
		tn       testTenant
		settings sdk.Config
		ds       []time.Duration
		metric   string
	}{
		{pt, netSettings(outboundInternet, 8080), nil, "per-tenant-slirp-p50-ms"},
		{pt, nil, nil, "per-tenant-none-p50-ms"},
		{nb, netSettings(outboundInternet, 8080), nil, "shared-cni-p50-ms"},
	}
	var rss int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range modes {
			m := &modes[j]
			req := request(b, m.tn, instance{name: fmt.Sprintf("n%d-%d", i, j), args: benchArgs, settings: m.settings, resources: sdk.Resources{MemoryBytes: 32 << 20, Pids: 16}})
			t0 := time.Now()
			h, err := r.Start(ctx, req)
			m.ds = append(m.ds, time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
			if j == 0 {
				d, _ := decodeHandle(h)
				if s, err := readSlirpFile(d.RunDir); err == nil {
					r, _ := smapsRollup(s.Pid)
					rss += r
				}
			}
			if err := r.Destroy(ctx, h); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.StopTimer()
	for _, m := range modes {
		b.ReportMetric(percentile(m.ds, 50), m.metric)
	}
	b.ReportMetric(float64(rss)/float64(b.N)/(1<<20), "slirp-rss-MiB")
}

// smapsRollup returns a process's RSS and PSS in bytes, 0 when it is gone.
func smapsRollup(pid int) (rss, pss int64) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(st), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(line, "Rss: %d kB", &kb); err == nil {
			rss = kb << 10
		} else if _, err := fmt.Sscanf(line, "Pss: %d kB", &kb); err == nil {
			pss = kb << 10
		}
	}
	return rss, pss
}

// startOurs starts an instance through the runtime and returns how long
// Start took; the instance is destroyed when the benchmark ends.
func startOurs(b *testing.B, r *Runtime, tn testTenant, name string) (time.Duration, error) {
	req := request(b, tn, instance{name: name, args: benchArgs, resources: sdk.Resources{MemoryBytes: 32 << 20, Pids: 16}})
	t0 := time.Now()
	h, err := r.Start(context.Background(), req)
	d := time.Since(t0)
	if err != nil {
		return d, err
	}
	b.Cleanup(func() {
		if err := r.Destroy(context.Background(), h); err != nil {
			b.Errorf("destroy %s: %v", name, err)
		}
	})
	return d, nil
}

// startBare starts a container of img as `ctr run -d --null-io` would and
// returns how long that took; it is removed when the benchmark ends.
func startBare(ctx context.Context, c *containerd.Client, img containerd.Image, id string) (time.Duration, error) {
	t0 := time.Now()
	ctr, err := c.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithNewSnapshot(id, img),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs(benchArgs...)),
	)
	if err != nil {
		return 0, err
	}
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err == nil {
		err = task.Start(ctx)
	}
	d := time.Since(t0)
	if err != nil {
		_ = ctr.Delete(ctx, containerd.WithSnapshotCleanup)
	}
	return d, err
}

// benchClient returns a client in the tests' namespace; every container
// it made is removed when the benchmark ends.
func benchClient(b *testing.B) (context.Context, *containerd.Client) {
	ctx, c := client(b)
	b.Cleanup(func() {
		cs, _ := c.Containers(ctx, "id~=^bare-")
		for _, ctr := range cs {
			if t, err := ctr.Task(ctx, nil); err == nil {
				_, _ = t.Delete(ctx, containerd.WithProcessKill)
			}
			_ = ctr.Delete(ctx, containerd.WithSnapshotCleanup)
		}
	})
	return ctx, c
}

// percentile returns the p-th percentile of ds, in milliseconds.
func percentile(ds []time.Duration, p int) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	i = max(i-1, 0)
	return float64(s[i]) / float64(time.Millisecond)
}

// rssBelow returns the summed RSS of containerd serving address, its
// shims and the shims' children (the logging processes).
func rssBelow(b *testing.B, address string) int64 {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		b.Fatal(err)
	}
	config := filepath.Join(filepath.Dir(address), "containerd.toml")
	ours := map[int]bool{}
	parent := map[int]int{}
	for _, p := range stats {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		st, err := os.ReadFile(p)
		cl, cerr := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
		if err != nil || cerr != nil {
			continue
		}
		// pid (comm) state ppid ...
		if f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:])); len(f) > 1 {
			parent[pid], _ = strconv.Atoi(f[1])
		}
		args := strings.Split(string(cl), "\x00")
		ours[pid] = slices.Contains(args, address) || slices.Contains(args, config)
	}
	var total int64
	for pid, in := range ours {
		if in || ours[parent[pid]] {
			total += rssOf(b, pid)
		}
	}
	return total
}

// rssOf returns a process's resident set size in bytes, 0 when it is gone.
func rssOf(b *testing.B, pid int) int64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(st), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(line, "VmRSS: %d kB", &kb); err == nil {
			return kb << 10
		}
	}
	return 0
}

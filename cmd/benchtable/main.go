// Command benchtable reads `go test -bench` output on standard input and
// prints the figures of the performance targets (issues 5 to 9) as a
// table: each figure, the baseline measured in the same run, their ratio,
// and the target, on the figure itself or on the ratio. `make bench` runs
// it.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
)

// row is one line of the table: the figure unit reported by benchmark,
// compared with the baseline's figure.
type row struct {
	what             string
	benchmark, unit  string
	baseline, bunit  string
	target           string
	higherIsBetter   bool
	targetValue      float64
	targetComparable bool
	// ratioTarget, when set, is the target of the ratio to the baseline
	// instead (at least it when higherIsBetter, else at most it).
	ratioTarget float64
}

var rows = []row{
	{what: "plan, agent (1k tenants, 10k instances)", benchmark: "BenchmarkScalePlanAgent", unit: "ms/plan",
		baseline: "BenchmarkScaleEmptyReconcile", bunit: "ms/reconcile", target: "<= 300 ms/plan", targetValue: 300, targetComparable: true},
	{what: "plan, agent API alone", benchmark: "BenchmarkScalePlanAgent", unit: "api-ms/plan",
		baseline: "BenchmarkScaleEmptyReconcile", bunit: "ms/reconcile", target: "<= 300 ms/plan", targetValue: 300, targetComparable: true},
	{what: "plan, CLI (kigumi plan)", benchmark: "BenchmarkScalePlanCLI", unit: "ms/plan",
		baseline: "BenchmarkExecBaseline", bunit: "ms/exec", target: "<= 300 ms/plan", targetValue: 300, targetComparable: true},
	{what: "converge 10k creates, agent", benchmark: "BenchmarkScaleConverge", unit: "actions/s",
		baseline: "BenchmarkBaselineCommit", bunit: "commits/s", target: ">= 2000 actions/s", targetValue: 2000, targetComparable: true, higherIsBetter: true},
	{what: "agent heap in use, converged", benchmark: "BenchmarkScaleConverge", unit: "heap-MiB",
		target: "<= 150 MiB", targetValue: 150, targetComparable: true},
	{what: "agent RSS, converged", benchmark: "BenchmarkScaleConverge", unit: "rss-MiB",
		target: "<= 150 MiB", targetValue: 150, targetComparable: true},
	{what: "spec change to running, p50", benchmark: "BenchmarkScaleSpecLatency", unit: "p50-ms",
		baseline: "BenchmarkScaleSpecLatency", bunit: "settle-ms", target: "(report)"},
	{what: "spec change to running, p99", benchmark: "BenchmarkScaleSpecLatency", unit: "p99-ms",
		baseline: "BenchmarkScaleSpecLatency", bunit: "settle-ms", target: "(report)"},
	{what: "journal entry, lone writer", benchmark: "BenchmarkRecord", unit: "ms/entry",
		baseline: "BenchmarkBaselineCommit", bunit: "ms/commit", target: "(report)"},
	{what: "lease acquire validated to running, p50", benchmark: "BenchmarkLeaseLatency", unit: "running-p50-ms",
		baseline: "BenchmarkLeaseLatency", bunit: "file-p50-ms", target: "<= 1000 ms", targetValue: 1000, targetComparable: true},
	{what: "lease acquire validated to running, p99", benchmark: "BenchmarkLeaseLatency", unit: "running-p99-ms",
		baseline: "BenchmarkLeaseLatency", bunit: "file-p99-ms", target: "<= 1000 ms", targetValue: 1000, targetComparable: true},
	{what: "lease acquire validated to reply submitted, p50", benchmark: "BenchmarkLeaseLatency", unit: "reply-p50-ms",
		baseline: "BenchmarkLeaseLatency", bunit: "file-p50-ms", target: "(report)"},
	{what: "lease acquire validated to reply submitted, p99", benchmark: "BenchmarkLeaseLatency", unit: "reply-p99-ms",
		baseline: "BenchmarkLeaseLatency", bunit: "file-p99-ms", target: "(report)"},
	// The containerd runtime against bare containerd (`ctr run`), interleaved in one run.
	{what: "container start to running, p50", benchmark: "BenchmarkCtrStartLatency", unit: "kigumi-p50-ms",
		baseline: "BenchmarkCtrStartLatency", bunit: "bare-p50-ms", target: "<= 1.3x bare", ratioTarget: 1.3},
	{what: "container start to running, p99", benchmark: "BenchmarkCtrStartLatency", unit: "kigumi-p99-ms",
		baseline: "BenchmarkCtrStartLatency", bunit: "bare-p99-ms", target: "<= 1.3x bare", ratioTarget: 1.3},
	{what: "50 containers, 10 tenants: start all", benchmark: "BenchmarkCtrScale50", unit: "total-s", target: "(report)"},
	{what: "50 containers: containerd+shims RSS", benchmark: "BenchmarkCtrScale50", unit: "containerd-rss-MiB", target: "(report)"},
	{what: "50 containers: runtime process RSS", benchmark: "BenchmarkCtrScale50", unit: "runtime-rss-MiB", target: "(report)"},
	// The per-tenant daemon mode: a tenant's own daemon, and its first container against the shared mode's.
	{what: "per-tenant daemon: prepare to serving, p50", benchmark: "BenchmarkCtrDaemon", unit: "prepare-p50-ms", target: "(report)"},
	{what: "per-tenant daemon: RSS, idle", benchmark: "BenchmarkCtrDaemon", unit: "daemon-rss-MiB", target: "(report)"},
	{what: "per-tenant daemon: PSS, idle", benchmark: "BenchmarkCtrDaemon", unit: "daemon-pss-MiB", target: "(report)"},
	{what: "tenant's first container start, per-tenant vs shared, p50", benchmark: "BenchmarkCtrDaemon", unit: "per-tenant-first-p50-ms",
		baseline: "BenchmarkCtrDaemon", bunit: "shared-first-p50-ms", target: "(report)"},
	// The FUSE state (quotafs) against its backing directory.
	{what: "state: sequential read", benchmark: "BenchmarkStateSeqRead/quotafs", unit: "MB/s",
		baseline: "BenchmarkStateSeqRead/native", bunit: "MB/s", target: ">= 0.8x native", ratioTarget: 0.8, higherIsBetter: true},
	{what: "state: sequential write, hashing included", benchmark: "BenchmarkStateSeqWrite/quotafs", unit: "MB/s",
		baseline: "BenchmarkStateSeqWrite/native", bunit: "MB/s", target: ">= 0.6x native+hash", ratioTarget: 0.6, higherIsBetter: true},
	{what: "state: sequential write vs unhashed native", benchmark: "BenchmarkStateSeqWrite/quotafs", unit: "MB/s",
		baseline: "BenchmarkStateSeqWrite/native-nohash", bunit: "MB/s", target: "(report)"},
	{what: "state: small file create+write+close", benchmark: "BenchmarkStateSmallFile/quotafs", unit: "files/s",
		baseline: "BenchmarkStateSmallFile/native", bunit: "files/s", target: ">= 0.5x native", ratioTarget: 0.5, higherIsBetter: true},
	{what: "state: stat, p50", benchmark: "BenchmarkStateStat/quotafs", unit: "p50-ns",
		baseline: "BenchmarkStateStat/native", bunit: "p50-ns", target: "<= 2x native", ratioTarget: 2},
	// The wasm runtime (issue 6) against plain wazero and process spawning.
	{what: "wasm: instantiate tiny module, compiled, p50", benchmark: "BenchmarkInstantiateLatency/sandbox", unit: "p50-us",
		baseline: "BenchmarkInstantiateLatency/wazero-default", bunit: "p50-us", target: "(report)"},
	{what: "wasm: instantiate tiny module, compiled, p99", benchmark: "BenchmarkInstantiateLatency/sandbox", unit: "p99-us",
		baseline: "BenchmarkInstantiateLatency/wazero-default", bunit: "p99-us", target: "<= 1000 us", targetValue: 1000, targetComparable: true},
	{what: "wasm: new sandbox ready, tiny module, p50", benchmark: "BenchmarkSandboxStart", unit: "p50-ms",
		baseline: "BenchmarkSandboxStart", bunit: "exec-p50-ms", target: "<= 50 ms", targetValue: 50, targetComparable: true},
	{what: "wasm: new sandbox ready, tiny module, p99", benchmark: "BenchmarkSandboxStart", unit: "p99-ms",
		baseline: "BenchmarkSandboxStart", bunit: "exec-p50-ms", target: "(report)"},
	{what: "wasm: compile Go module (2 MB), cached vs cold", benchmark: "BenchmarkCompile/cached", unit: "ms/compile",
		baseline: "BenchmarkCompile/cold", bunit: "ms/compile", target: "(report)"},
}

// parse reads benchmark lines into benchmark name (without the -N suffix)
// to unit to value.
func parse(r io.Reader) (map[string]map[string]float64, error) {
	out := map[string]map[string]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i]
		}
		m := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			m[f[i+1]] = v
		}
		// Derived figures.
		if ns, ok := m["ns/op"]; ok {
			if _, ok := m["ms/exec"]; !ok && name == "BenchmarkExecBaseline" {
				m["ms/exec"] = ns / 1e6
			}
			if _, ok := m["ms/commit"]; ok {
				m["commits/s"] = 1e9 / ns
			}
		}
		out[name] = m
	}
	return out, sc.Err()
}

func main() {
	got, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
	table(os.Stdout, got)
}

// table prints the rows of the figures in got.
func table(out io.Writer, got map[string]map[string]float64) {
	w := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(w, "figure\tvalue\tbaseline\tratio\ttarget\tmet")
	for _, r := range rows {
		v, ok := got[r.benchmark][r.unit]
		if !ok {
			fmt.Fprintf(w, "%s\t(not run)\t\t\t%s\t\n", r.what, r.target)
			continue
		}
		base, ratio, met := "", "", ""
		if b, ok := got[r.baseline][r.bunit]; ok && b != 0 {
			base = fmt.Sprintf("%.4g %s", b, r.bunit)
			ratio = fmt.Sprintf("%.3gx", v/b)
			if r.ratioTarget > 0 {
				met = "no"
				if (r.higherIsBetter && v/b >= r.ratioTarget) || (!r.higherIsBetter && v/b <= r.ratioTarget) {
					met = "yes"
				}
			}
		}
		if r.targetComparable {
			met = "no"
			if (r.higherIsBetter && v >= r.targetValue) || (!r.higherIsBetter && v <= r.targetValue) {
				met = "yes"
			}
		}
		fmt.Fprintf(w, "%s\t%.4g %s\t%s\t%s\t%s\t%s\n", r.what, v, r.unit, base, ratio, r.target, met)
	}
	w.Flush()
}

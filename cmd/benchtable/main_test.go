package main

import (
	"strings"
	"testing"
)

// TestStateRows checks the state rows: sub-benchmark names (a side with a
// dash in it too), ratios, and targets on the ratio in both directions.
func TestStateRows(t *testing.T) {
	in := `BenchmarkStateSeqRead/native-2   56  19353573 ns/op  1000.00 MB/s  48 B/op  1 allocs/op
BenchmarkStateSeqRead/quotafs-2  61  16396330 ns/op   900.00 MB/s
BenchmarkStateSeqWrite/native-nohash-2  82  1 ns/op  3000 MB/s
BenchmarkStateSeqWrite/native-2  15  1 ns/op  1000 MB/s
BenchmarkStateSeqWrite/quotafs-2  8  1 ns/op  500 MB/s
BenchmarkStateStat/native-2  1  1 ns/op  400 p50-ns
BenchmarkStateStat/quotafs-2  1  1 ns/op  900 p50-ns
`
	got, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if got["BenchmarkStateSeqWrite/native-nohash"]["MB/s"] != 3000 {
		t.Fatalf("parsed %v", got)
	}
	var b strings.Builder
	table(&b, got)
	// Column widths follow the longest figure, so compare with runs of
	// spaces folded.
	folded := strings.Join(strings.Fields(b.String()), " ")
	for _, want := range []string{
		"state: sequential read 900 MB/s 1000 MB/s 0.9x >= 0.8x native yes",
		"0.5x >= 0.6x native+hash no",
		"0.167x (report)",
		"2.25x <= 2x native no",
		"state: small file create+write+close (not run)",
	} {
		if !strings.Contains(folded, want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// TestWasmRows checks the wasm rows: a baseline unit of the same benchmark,
// a target on the figure, and sub-benchmarks with a dash in their name.
func TestWasmRows(t *testing.T) {
	in := `BenchmarkCompile/cold-2  2  1 ns/op  1000 ms/compile
BenchmarkCompile/cached-2  25  1 ns/op  50 ms/compile
BenchmarkInstantiateLatency/wazero-default-2  100  1 ns/op  20 p50-us  600 p99-us
BenchmarkInstantiateLatency/sandbox-2  100  1 ns/op  8 p50-us  1200 p99-us
BenchmarkSandboxStart-2  51  1 ns/op  1.25 exec-p50-ms  17.5 p50-ms  40 p99-ms
`
	got, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	table(&b, got)
	folded := strings.Join(strings.Fields(b.String()), " ")
	for _, want := range []string{
		"wasm: instantiate tiny module, compiled, p50 8 p50-us 20 p50-us 0.4x (report)",
		"wasm: instantiate tiny module, compiled, p99 1200 p99-us 600 p99-us 2x <= 1000 us no",
		"wasm: new sandbox ready, tiny module, p50 17.5 p50-ms 1.25 exec-p50-ms 14x <= 50 ms yes",
		"wasm: compile Go module (2 MB), cached vs cold 50 ms/compile 1000 ms/compile 0.05x (report)",
	} {
		if !strings.Contains(folded, want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// TestCtrDaemonRows checks the per-tenant daemon rows: figures without a
// baseline, and the per-tenant first start against the shared one.
func TestCtrDaemonRows(t *testing.T) {
	in := `BenchmarkCtrDaemon-2  3  2856443043 ns/op  31.42 daemon-pss-MiB  53.81 daemon-rss-MiB  611.5 per-tenant-first-p50-ms  209.9 prepare-p50-ms  328.6 shared-first-p50-ms
`
	got, err := parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	table(&b, got)
	folded := strings.Join(strings.Fields(b.String()), " ")
	for _, want := range []string{
		"per-tenant daemon: prepare to serving, p50 209.9 prepare-p50-ms (report)",
		"per-tenant daemon: PSS, idle 31.42 daemon-pss-MiB (report)",
		"tenant's first container start, per-tenant vs shared, p50 611.5 per-tenant-first-p50-ms 328.6 shared-first-p50-ms 1.86x (report)",
	} {
		if !strings.Contains(folded, want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

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

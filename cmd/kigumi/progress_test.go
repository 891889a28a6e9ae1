package main

import (
	"strings"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

// TestProgressLines: a start's progress prints its first report, one a
// second at most, and its last; each instance and step on its own.
func TestProgressLines(t *testing.T) {
	const ref = "127.0.0.1:5000/kigumi/busybox:1"
	pull := func(layers, done int64) sdk.Progress {
		return sdk.Progress{Step: "pulling", Subject: ref, PartsDone: layers, Parts: 3, Unit: "layers",
			BytesDone: done, BytesTotal: 2000 << 10}
	}
	type report struct {
		at       time.Duration
		instance string
		p        sdk.Progress
	}
	tests := []struct {
		name    string
		reports []report
		want    []string
	}{
		{"first and last", []report{{0, "web", pull(0, 0)}, {250 * time.Millisecond, "web", pull(1, 700<<10)},
			{500 * time.Millisecond, "web", pull(2, 1200<<10)}, {750 * time.Millisecond, "web", pull(3, 2000<<10)}},
			[]string{"pulling " + ref + ": 0/3 layers, 0 B of 2.0 MiB", "pulling " + ref + ": 3/3 layers, 2.0 MiB of 2.0 MiB"}},
		{"one a second", []report{{0, "web", pull(0, 0)}, {500 * time.Millisecond, "web", pull(1, 100<<10)},
			{1100 * time.Millisecond, "web", pull(1, 1200<<10)}, {1500 * time.Millisecond, "web", pull(2, 1500<<10)}},
			[]string{"0/3 layers, 0 B of", "1/3 layers, 1.2 MiB of 2.0 MiB"}},
		{"done once", []report{{0, "web", pull(0, 0)}, {100 * time.Millisecond, "web", pull(3, 2000<<10)},
			{1500 * time.Millisecond, "web", pull(3, 2000<<10)}},
			[]string{"0/3 layers", "3/3 layers"}},
		{"instances apart", []report{{0, "web", pull(0, 0)}, {100 * time.Millisecond, "db", pull(1, 0)}},
			[]string{"0/3 layers", "1/3 layers"}},
		{"no counts", []report{{0, "web", sdk.Progress{Step: "unpacking", Subject: ref}}}, []string{"unpacking " + ref + "\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			p := newProgress(&out)
			t0, at := time.Unix(1e9, 0), time.Duration(0)
			p.now = func() time.Time { return t0.Add(at) }
			for _, r := range tt.reports {
				at = r.at
				p.Progress("alice", r.instance, r.p)
			}
			lines := strings.SplitAfter(strings.TrimSuffix(out.String(), "\n"), "\n")
			if len(lines) != len(tt.want) {
				t.Fatalf("printed %q, want %d lines", out.String(), len(tt.want))
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(lines[i], "  ") || !strings.Contains(lines[i]+"\n", w) {
					t.Errorf("line %d = %q, want it to hold %q", i, lines[i], w)
				}
			}
		})
	}
}

// TestProgressAfterAction: an action's end forgets its progress, so the
// next action's first report prints at once.
func TestProgressAfterAction(t *testing.T) {
	var out strings.Builder
	p := newProgress(&out)
	p.now = func() time.Time { return time.Unix(1e9, 0) }
	r := sdk.Progress{Step: "pulling", Subject: "r", Parts: 2, Unit: "layers"}
	a := plan.Action{Op: plan.Create, Tenant: "alice", Instance: "web"}
	p.Progress("alice", "web", r)
	p.PostApply(a, time.Second, nil)
	p.Progress("alice", "web", r)
	if got := strings.Count(out.String(), "pulling r: 0/2 layers"); got != 2 {
		t.Errorf("printed %q, want the report twice", out.String())
	}
}

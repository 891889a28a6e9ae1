package engine

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/engine/enginetest"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
)

// TestRestartPoliciesSideBySide: in one tenant, each ended workload is
// restarted as its own policy says, whatever its neighbours' policies:
// an "always" instance beside them does not keep an "on-failure" one from
// restarting, and "never" and a clean exit under "on-failure" stay down,
// their exit code and cause recorded.
func TestRestartPoliciesSideBySide(t *testing.T) {
	w := enginetest.NewWorld()
	e := newEngine(t, testHost(t), w)
	ctx := context.Background()
	want := desired("alice")
	base := want[0].Instances[0]
	want[0].Instances = nil
	exits := map[string]int{}
	for _, tc := range []struct {
		name, policy string
		code         int
	}{
		{"always", spec.RestartAlways, 0},
		{"crash", spec.RestartOnFailure, 1},
		{"done", spec.RestartOnFailure, 0},
		{"never", spec.RestartNever, 1},
	} {
		in := base
		in.Name, in.Spec.Restart = tc.name, tc.policy
		want[0].Instances = append(want[0].Instances, in)
		exits["alice/"+tc.name] = tc.code
	}
	if _, err, _ := apply(t, e, want); err != nil {
		t.Fatal(err)
	}
	// Every workload ended an hour ago: no backoff holds a restart back.
	ended := time.Now().Add(-time.Hour)
	w.Mu.Lock()
	w.InspectState = func(key string) sdk.Status {
		return sdk.Status{State: sdk.StateExited, Cause: sdk.CauseExit, ExitCode: exits[key], FinishedAt: ended}
	}
	w.Mu.Unlock()
	p, err := e.Plan(ctx, state.SourceFile, want)
	if err != nil || !slices.Equal(summaryOf(p), []string{"restart instance alice/always", "restart instance alice/crash"}) {
		t.Fatalf("plan %v, %v", summaryOf(p), err)
	}
	if len(p.Drift) != 4 {
		t.Fatalf("drift %+v, want all four", p.Drift)
	}
	w.Mu.Lock()
	w.InspectState = nil
	w.Mu.Unlock()
	if err := e.Apply(ctx, p); err != nil {
		t.Fatal(err)
	}
	for name, restarts := range map[string]int{"always": 1, "crash": 1, "done": 0, "never": 0} {
		r, ok, err := e.store.Instance("alice", name)
		if err != nil || !ok {
			t.Fatalf("%s: %v, %v", name, ok, err)
		}
		if r.Run.Restarts != restarts || r.Run.LastExit == nil || r.Run.LastExit.Code != exits["alice/"+name] || r.Run.LastExit.Cause != state.CauseExit {
			t.Errorf("%s: run %+v, last exit %+v; want %d restarts after exit %d", name, r.Run, r.Run.LastExit, restarts, exits["alice/"+name])
		}
	}
}

// TestExitDuringStartCountsOnce: a workload that ends before the
// runtime's Start even returns (an exit time before the engine heard of
// the start) has its exit recorded once, not again at each refresh, so
// its restart backoff stays at its first step and it restarts.
func TestExitDuringStartCountsOnce(t *testing.T) {
	w := enginetest.NewWorld()
	e := newEngine(t, testHost(t), w)
	ctx := context.Background()
	want := desired("alice")
	var ended time.Time
	w.OnStart = func(string) { ended = time.Now() }
	if _, err, _ := apply(t, e, want); err != nil {
		t.Fatal(err)
	}
	w.Mu.Lock()
	w.InspectState = func(string) sdk.Status {
		return sdk.Status{State: sdk.StateExited, Cause: sdk.CauseExit, ExitCode: 1, FinishedAt: ended}
	}
	w.Mu.Unlock()
	for range 3 {
		p, err := e.Plan(ctx, state.SourceFile, want)
		if err != nil {
			t.Fatal(err)
		}
		r, _, _ := e.store.Instance("alice", "web")
		if r.Run.Failures != 1 {
			t.Fatalf("%d failures recorded of one exit", r.Run.Failures)
		}
		if p.RetryAfter <= 0 || p.RetryAfter > 2*time.Second {
			t.Fatalf("restart after %v, want the first backoff step", p.RetryAfter)
		}
	}
}

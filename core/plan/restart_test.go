package plan

import (
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

func TestDecideRestart(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ok := state.Exit{Cause: state.CauseExit, Code: 0, At: now.Add(-time.Hour)}
	fail := state.Exit{Cause: state.CauseExit, Code: 3, At: now.Add(-time.Hour)}
	oom := state.Exit{Cause: state.CauseOOM, Code: 137, At: now.Add(-time.Hour)}
	recent := state.Exit{Cause: state.CauseSignal, Code: -1, At: now.Add(-time.Second)}
	tests := []struct {
		name     string
		policy   string
		held     bool
		failures int
		exit     state.Exit
		restart  bool
		waits    bool
	}{
		{"never after failure", "never", false, 1, fail, false, false},
		{"on-failure after success", "on-failure", false, 1, ok, false, false},
		{"default is on-failure", "", false, 1, ok, false, false},
		{"on-failure after failure", "on-failure", false, 1, fail, true, false},
		{"on-failure after oom", "on-failure", false, 1, oom, true, false},
		{"always after success", "always", false, 1, ok, true, false},
		{"held by an operator", "always", true, 1, fail, false, false},
		{"backoff not elapsed", "always", false, 3, recent, false, true},
		{"first failure waits a second", "on-failure", false, 1, recent, false, true},
		{"no recorded exit restarts at once", "on-failure", false, 0, state.Exit{Cause: "lost"}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst := state.Instance{Tenant: "a", Name: "w", Held: tt.held, Spec: state.InstanceSpec{Restart: tt.policy},
				Run: state.RunHistory{Failures: tt.failures}}
			d := DecideRestart(inst, tt.exit, now)
			if d.Restart != tt.restart || (d.Wait > 0) != tt.waits || d.Reason == "" {
				t.Fatalf("DecideRestart = %+v, want restart %v, waits %v", d, tt.restart, tt.waits)
			}
		})
	}
}

func TestRestartDelay(t *testing.T) {
	tests := []struct {
		failures int
		min, max time.Duration
	}{
		{0, 0, 0},
		{1, RestartBase, RestartBase * 5 / 4},
		{4, 8 * RestartBase, 10 * RestartBase},
		{40, RestartMax, RestartMax * 5 / 4},
		{1 << 20, RestartMax, RestartMax * 5 / 4},
	}
	for _, tt := range tests {
		got := RestartDelay("t/i", tt.failures)
		if got < tt.min || got > tt.max {
			t.Errorf("RestartDelay(%d) = %v, want within [%v, %v]", tt.failures, got, tt.min, tt.max)
		}
		if again := RestartDelay("t/i", tt.failures); again != got {
			t.Errorf("RestartDelay(%d) is not reproducible: %v then %v", tt.failures, got, again)
		}
	}
}

func TestDiffDrift(t *testing.T) {
	now := time.Now()
	h := &sdk.Handle{Version: 1}
	running := rec("alice", "web", ispec(32<<20), state.PhaseReady)
	running.RuntimeHandle = h
	want := []Tenant{{Name: "alice", Instances: []Instance{{Name: "web", Spec: ispec(32 << 20)}}}}
	have := []state.Tenant{tenantRec("alice", state.PhaseReady, ispec(32<<20).Resources)}
	exited := func(s sdk.State, code int, failures int, at time.Time) *Refresh {
		return &Refresh{Now: now, Workloads: map[string]Workload{"alice/web": {State: s,
			Exit: state.Exit{Cause: state.CauseExit, Code: code, At: at}}}}
	}
	tests := []struct {
		name     string
		refresh  *Refresh
		failures int
		want     []string
		retry    bool
	}{
		{"not refreshed", nil, 0, nil, false},
		{"running", &Refresh{Now: now, Workloads: map[string]Workload{"alice/web": {State: sdk.StateRunning}}}, 0, nil, false},
		{"crashed long ago", exited(sdk.StateExited, 1, 1, now.Add(-time.Hour)), 1, []string{"restart instance alice/web"}, false},
		{"crashed just now: backoff", exited(sdk.StateExited, 1, 2, now), 2, nil, true},
		{"finished cleanly", exited(sdk.StateExited, 0, 1, now.Add(-time.Hour)), 1, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := running
			r.Run.Failures = tt.failures
			p := Diff(want, have, []state.Instance{r}, tt.refresh)
			got := summary(p)
			if len(got) != len(tt.want) || (len(got) > 0 && got[0] != tt.want[0]) {
				t.Fatalf("plan %v, want %v", got, tt.want)
			}
			if (p.RetryAfter > 0) != tt.retry {
				t.Errorf("RetryAfter = %v, want set %v", p.RetryAfter, tt.retry)
			}
		})
	}
}

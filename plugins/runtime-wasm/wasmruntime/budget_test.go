package wasmruntime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// loopWAT's _start loops forever and calls nothing.
const loopWAT = `(module (memory 1) (func (export "_start") (loop $l (br $l))))`

// sleepWAT is a module whose _start sleeps for d, through one poll_oneoff
// on the monotonic clock, then exits with code 7.
func sleepWAT(d time.Duration) string {
	return fmt.Sprintf(`(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory 1)
  ;; The subscription at 0: userdata 0, tag 0 (clock), clock id 1
  ;; (monotonic) at 16, relative timeout at 24. Events go to 64, their
  ;; count to 128.
  (data (i32.const 16) "\01")
  (func (export "_start")
    (i64.store (i32.const 24) (i64.const %d))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (call $exit (i32.const 7))))`, d.Nanoseconds())
}

// watModule writes wat, assembled, to a module file.
func watModule(t *testing.T, wat string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.wasm")
	if err := os.WriteFile(p, wat2wasm(t, wat), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTimeBudget(t *testing.T) {
	overBudget := func(budget string) endCase {
		return endCase{state: sdk.StateExited, cause: sdk.CauseLimit, exitCode: budgetExit, message: "over its time budget of " + budget}
	}
	tests := []struct {
		name string
		// wat is the module, or else module names a built one.
		wat, module string
		// runtime are the plugin's settings; budget is the instance's
		// time_budget, "" for none.
		runtime sdk.Config
		budget  string
		clock   bool
		want    endCase
		// within is how long the instance ran, at least; it must end
		// within a few seconds more.
		within time.Duration
	}{
		{name: "loop forever", wat: loopWAT, budget: "1s", want: overBudget("1s"), within: time.Second},
		{name: "loop forever, interpreter", wat: loopWAT, runtime: sdk.Config{"compiler": "interpreter"}, budget: "1s", want: overBudget("1s"), within: time.Second},
		{name: "sleep forever", wat: sleepWAT(time.Hour), clock: true, budget: "1s", want: overBudget("1s"), within: time.Second},
		{name: "a Go module sleeping", module: "ticker", clock: true, budget: "1s", want: overBudget("1s"), within: time.Second},
		{name: "sleep forever, interpreter", wat: sleepWAT(time.Hour), clock: true, runtime: sdk.Config{"compiler": "interpreter"}, budget: "1s", want: overBudget("1s"), within: time.Second},
		// Without the clock a sleep returns at once: the module exits.
		{name: "sleep without the clock", wat: sleepWAT(time.Hour), budget: "1s",
			want: endCase{state: sdk.StateExited, cause: sdk.CauseExit, exitCode: 7, message: "exited with code 7"}},
		{name: "finish under budget", wat: sleepWAT(200 * time.Millisecond), clock: true, budget: "30s",
			want: endCase{state: sdk.StateExited, cause: sdk.CauseExit, exitCode: 7, message: "exited with code 7"}, within: 200 * time.Millisecond},
		{name: "the runtime's default", wat: loopWAT, runtime: sdk.Config{"time_budget": "1500ms"}, want: overBudget("1.5s"), within: 1500 * time.Millisecond},
		{name: "the runtime's max as the default", wat: loopWAT, runtime: sdk.Config{"max_time_budget": "1s"}, want: overBudget("1s"), within: time.Second},
		{name: "the instance's under the runtime's", wat: loopWAT, runtime: sdk.Config{"time_budget": "1m", "max_time_budget": "1h"}, budget: "1s", want: overBudget("1s"), within: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newRuntime(t, tt.runtime)
			req := request(t, tt.module)
			req.Instance.Tenant = "budget"
			if tt.wat != "" {
				req.Artifact.Module = watModule(t, tt.wat)
			}
			if tt.clock {
				req.Permissions = sdk.Permissions{{Name: sdk.PermClock}}
			}
			if tt.budget != "" {
				req.Settings = sdk.Config{"time_budget": tt.budget}
			}
			h := start(t, r, req)
			started := time.Now()
			st := waitEnded(t, r, h)
			checkEnd(t, r, h, st, tt.want)
			// StartedAt is before the sandbox started; FinishedAt is when
			// the module ended, which the sandbox recorded.
			if ran := st.FinishedAt.Sub(st.StartedAt); ran < tt.within {
				t.Errorf("the instance ran %s, want at least %s", ran, tt.within)
			}
			if waited := time.Since(started); waited > tt.within+10*time.Second {
				t.Errorf("the instance ended %s after Start, want within a few seconds of %s", waited, tt.within)
			}
		})
	}
}

// TestTimeBudgetNeighbour: an instance over its budget is stopped alone;
// another tenant's, started with it and without a budget, goes on.
func TestTimeBudgetNeighbour(t *testing.T) {
	r := newRuntime(t, nil)
	req := request(t, "tiny")
	req.Instance.Tenant = "budget-alice"
	req.Artifact.Module = watModule(t, loopWAT)
	req.Settings = sdk.Config{"time_budget": "1s"}
	neighbour := request(t, "ticker", sdk.PermClock)
	neighbour.Instance.Tenant = "budget-bob"
	neighbour.Args = []string{"-interval=100ms"}

	nh := start(t, r, neighbour)
	h := start(t, r, req)
	checkEnd(t, r, h, waitEnded(t, r, h), endCase{state: sdk.StateExited, cause: sdk.CauseLimit, exitCode: budgetExit, message: "over its time budget of 1s"})

	ticks := func() int { return strings.Count(logs(t, r, nh, sdk.Stdout), "tick ") }
	before := ticks()
	time.Sleep(time.Second)
	st, err := r.Inspect(context.Background(), nh)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != sdk.StateRunning {
		t.Fatalf("neighbour status = %+v, want running", st)
	}
	if after := ticks(); after <= before {
		t.Errorf("the neighbour ticked %d times by the budget's end and %d a second later, want it ticking on", before, after)
	}
}

// TestTimeBudgetValidate: Validate and Start refuse a time_budget that is
// not a positive duration, or over the runtime's max_time_budget, naming
// the setting.
func TestTimeBudgetValidate(t *testing.T) {
	r := newRuntime(t, sdk.Config{"max_time_budget": "1m"})
	tests := []struct {
		name   string
		budget any
		want   string // "" for valid; else a part of the message
	}{
		{"valid", "30s", ""},
		{"at the max", "1m", ""},
		{"over the max", "1m0.001s", "over the runtime's max_time_budget of 1m0s"},
		{"bad duration", "soon", "must be a positive duration"},
		{"zero", "0s", "must be a positive duration"},
		{"negative", "-5s", "must be a positive duration"},
		{"no unit", "30", "must be a positive duration"},
		{"not a string", 30.0, "must be a positive duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(t, "tiny")
			req.Settings = sdk.Config{"time_budget": tt.budget}
			check := func(what string, err error) {
				t.Helper()
				var e *sdk.Error
				switch {
				case tt.want == "" && err != nil:
					t.Errorf("%s = %v, want nil", what, err)
				case tt.want != "" && (!errors.As(err, &e) || e.Code != sdk.CodeInvalid || e.Attribute != "settings.time_budget" || !strings.Contains(e.Message, tt.want)):
					t.Errorf("%s = %v, want invalid settings.time_budget: %q", what, err, tt.want)
				}
			}
			check("Validate", r.Validate(context.Background(), req))
			if tt.want != "" {
				_, err := r.Start(context.Background(), req)
				check("Start", err)
			}
		})
	}
}

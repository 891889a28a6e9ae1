package engine

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/kigumi/kigumi/core/engine/enginetest"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

// takeCalls returns the world's recorded calls and forgets them.
func takeCalls(w *enginetest.World) []string {
	w.Mu.Lock()
	defer w.Mu.Unlock()
	calls := w.Calls
	w.Calls = nil
	return calls
}

// TestRollback: a rollback stops a running workload, swaps the state and
// starts a new workload; when the swap fails, the workload is started again
// on the old state; a held one stays stopped; an unknown checkpoint or
// instance, a bad name, or an instance without state touch nothing.
func TestRollback(t *testing.T) {
	w := enginetest.NewWorld()
	e := newEngine(t, testHost(t), w)
	ctx := context.Background()
	want := desired("alice", "bob")
	want[1].Instances[0].Spec.StateBytes = 0 // bob has no state
	if _, err, _ := apply(t, e, want); err != nil {
		t.Fatal(err)
	}
	w.Mu.Lock()
	w.Checkpoints["alice/web"] = []sdk.Checkpoint{{Name: "c0"}, {Name: "c1"}}
	w.Mu.Unlock()
	takeCalls(w)

	if err := e.Rollback(ctx, "alice", "web", "c1"); err != nil {
		t.Fatal(err)
	}
	if got, want := takeCalls(w), []string{"stop alice/web", "rollback alice/web c1", "start alice/web"}; !slices.Equal(got, want) {
		t.Errorf("rollback of a running instance: calls %q, want %q", got, want)
	}

	full := errors.New("disk full")
	w.Mu.Lock()
	w.FailRollback = full
	w.Mu.Unlock()
	if err := e.Rollback(ctx, "alice", "web", "c0"); !errors.Is(err, full) {
		t.Errorf("failed rollback = %v, want its error", err)
	}
	if got, want := takeCalls(w), []string{"stop alice/web", "rollback alice/web c0", "start alice/web"}; !slices.Equal(got, want) {
		t.Errorf("failed rollback: calls %q, want %q (started again on the old state)", got, want)
	}
	if live, _, _, _ := w.Snapshot(); !slices.Contains(live, "alice/web") {
		t.Errorf("after a failed rollback the workload is not running: %v", live)
	}
	entries, err := e.store.Journal(0)
	if err != nil {
		t.Fatal(err)
	}
	var events []state.Event
	for _, en := range entries {
		if en.Step == "statefs.rollback" {
			events = append(events, en.Event)
		}
	}
	if want := []state.Event{state.EventBegin, state.EventDone, state.EventBegin, state.EventFailed}; !slices.Equal(events, want) {
		t.Errorf("journal of statefs.rollback: %v, want %v", events, want)
	}

	for _, tt := range []struct {
		name, tenant, instance, checkpoint string
		want                               error
	}{
		{"unknown checkpoint", "alice", "web", "c9", sdk.ErrNotFound},
		{"bad name", "alice", "web", "../c1", sdk.ErrInvalid},
		{"unknown tenant", "nobody", "web", "c1", ErrUnknownTenant},
		{"unknown instance", "alice", "db", "c1", ErrUnknownInstance},
		{"no state", "bob", "web", "c1", ErrNoState},
	} {
		if err := e.Rollback(ctx, tt.tenant, tt.instance, tt.checkpoint); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if calls := takeCalls(w); len(calls) != 0 {
			t.Errorf("%s: calls %q, want none", tt.name, calls)
		}
	}

	// A held instance is rolled back and stays stopped.
	if err := e.StopInstance(ctx, "alice", "web"); err != nil {
		t.Fatal(err)
	}
	takeCalls(w)
	w.InspectState = func(string) sdk.Status { return sdk.Status{State: sdk.StateStopped} }
	if err := e.Rollback(ctx, "alice", "web", "c1"); err != nil {
		t.Fatal(err)
	}
	if got, want := takeCalls(w), []string{"rollback alice/web c1"}; !slices.Equal(got, want) {
		t.Errorf("rollback of a held instance: calls %q, want %q", got, want)
	}
}

// TestCheckpointFreezes: the instance is frozen while its state is copied,
// and thawed after; bad input freezes nothing.
func TestCheckpointFreezes(t *testing.T) {
	w := enginetest.NewWorld()
	e := newEngine(t, testHost(t), w)
	ctx := context.Background()
	if _, err, _ := apply(t, e, desired("alice")); err != nil {
		t.Fatal(err)
	}
	takeCalls(w)
	cp, err := e.Checkpoint(ctx, "alice", "web", "c1")
	if err != nil || cp.Name != "c1" {
		t.Fatalf("Checkpoint = %+v, %v", cp, err)
	}
	if got, want := takeCalls(w), []string{"freeze alice/web", "checkpoint alice/web c1", "thaw alice/web"}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	for _, tt := range []struct {
		name, instance, checkpoint string
		want                       error
	}{
		{"bad name", "web", ".c", sdk.ErrInvalid},
		{"unknown instance", "db", "c2", ErrUnknownInstance},
	} {
		if _, err := e.Checkpoint(ctx, "alice", tt.instance, tt.checkpoint); !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if calls := takeCalls(w); len(calls) != 0 {
			t.Errorf("%s: calls %q, want none", tt.name, calls)
		}
	}
}

package engine

import (
	"time"

	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

// Hook observes what the engine does, as Terraform's UI hooks do. The
// engine calls every hook synchronously, in order, from the goroutine doing
// the work; calls for different tenants may come from different goroutines
// at once. A hook must be quick: a slow hook slows the engine (hand events
// to a buffer, as BusHook does). Embed NilHook to implement only some
// methods.
type Hook interface {
	// PreRefresh and PostRefresh frame the refresh of a tenant's
	// recorded workloads before it is planned.
	PreRefresh(tenant string)
	PostRefresh(tenant string, r *plan.Refresh)
	// PostDiff reports the plan made for tenants (empty: the whole host).
	PostDiff(tenants []string, p *plan.Plan)
	// PreApply and PostApply frame one action; err is its error.
	PreApply(a plan.Action)
	PostApply(a plan.Action, elapsed time.Duration, err error)
	// Progress reports, between PreApply and PostApply, how far an
	// instance's start has come, for a runtime that declares
	// sdk.FeatureProgress; a few times a second at most.
	Progress(tenant, instance string, p sdk.Progress)
	// Exited reports a workload found ended, once per end.
	Exited(tenant, instance string, exit state.Exit)
}

// NilHook is a Hook that does nothing, to embed.
type NilHook struct{}

// PreRefresh implements Hook.
func (NilHook) PreRefresh(string) {}

// PostRefresh implements Hook.
func (NilHook) PostRefresh(string, *plan.Refresh) {}

// PostDiff implements Hook.
func (NilHook) PostDiff([]string, *plan.Plan) {}

// PreApply implements Hook.
func (NilHook) PreApply(plan.Action) {}

// PostApply implements Hook.
func (NilHook) PostApply(plan.Action, time.Duration, error) {}

// Progress implements Hook.
func (NilHook) Progress(string, string, sdk.Progress) {}

// Exited implements Hook.
func (NilHook) Exited(string, string, state.Exit) {}

// hooks dispatches to every hook in order.
type hooks []Hook

func (hs hooks) PreRefresh(t string) {
	for _, h := range hs {
		h.PreRefresh(t)
	}
}

func (hs hooks) PostRefresh(t string, r *plan.Refresh) {
	for _, h := range hs {
		h.PostRefresh(t, r)
	}
}

func (hs hooks) PostDiff(t []string, p *plan.Plan) {
	for _, h := range hs {
		h.PostDiff(t, p)
	}
}

func (hs hooks) PreApply(a plan.Action) {
	for _, h := range hs {
		h.PreApply(a)
	}
}

func (hs hooks) PostApply(a plan.Action, d time.Duration, err error) {
	for _, h := range hs {
		h.PostApply(a, d, err)
	}
}

func (hs hooks) Progress(t, i string, p sdk.Progress) {
	for _, h := range hs {
		h.Progress(t, i, p)
	}
}

func (hs hooks) Exited(t, i string, e state.Exit) {
	for _, h := range hs {
		h.Exited(t, i, e)
	}
}

// BusHook publishes the engine's actions and workload exits on an event
// bus, which never blocks.
type BusHook struct {
	NilHook
	Bus *events.Bus
}

// PreApply implements Hook.
func (b BusHook) PreApply(a plan.Action) {
	b.Bus.Publish(events.Event{Type: events.TypeActionBegin, Tenant: a.Tenant, Instance: a.Instance, Op: string(a.Op),
		Cause: a.Reason, Changes: eventChanges(a.Changes)})
}

// PostApply implements Hook.
func (b BusHook) PostApply(a plan.Action, d time.Duration, err error) {
	e := events.Event{Type: events.TypeActionDone, Tenant: a.Tenant, Instance: a.Instance, Op: string(a.Op), Duration: d.Seconds()}
	if err != nil {
		e.Type, e.Error = events.TypeActionFailed, err.Error()
	}
	b.Bus.Publish(e)
	if err == nil && a.Op == plan.Restart {
		b.Bus.Publish(events.Event{Type: events.TypeInstanceRestart, Tenant: a.Tenant, Instance: a.Instance, Cause: a.Reason})
	}
}

// Exited implements Hook.
func (b BusHook) Exited(tenant, instance string, exit state.Exit) {
	b.Bus.Publish(events.Event{Type: events.TypeInstanceExited, Tenant: tenant, Instance: instance, Cause: exit.Cause,
		Message: exit.Message, Op: "exit"})
}

func eventChanges(cs []plan.Change) []events.Change {
	out := make([]events.Change, len(cs))
	for i, c := range cs {
		out[i] = events.Change{Attribute: c.Field, Old: c.Old, New: c.New}
	}
	return out
}

package main

import (
	"context"
	"fmt"

	"github.com/kigumi/kigumi/core/api"
	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

// standIn is an agent for TestThroughAgent: fixed answers, recorded calls.
type standIn struct {
	bus   *events.Bus
	calls []string
}

func (a *standIn) Status(context.Context) ([]engine.TenantStatus, error) {
	return []engine.TenantStatus{{Name: "via-agent", Phase: state.PhaseReady,
		Instances: []engine.InstanceStatus{{Name: "web", State: sdk.StateRunning}}}}, nil
}

func (a *standIn) Tenants(context.Context) ([]api.Tenant, error) { return nil, nil }

func (a *standIn) Plan(context.Context) (*plan.Plan, error) {
	return &plan.Plan{Actions: []plan.Action{{Op: plan.Update, Tenant: "via-agent", Instance: "web"}}}, nil
}

func (a *standIn) Reconcile(ctx context.Context, tenants ...string) ([]api.ReconcileResult, error) {
	a.bus.Publish(events.Event{Type: events.TypeReconcile, Tenant: "via-agent"})
	return []api.ReconcileResult{{Tenant: "via-agent", Updated: 1}}, nil
}

func (a *standIn) act(name, tenant, instance string) error {
	if instance != "web" {
		return fmt.Errorf("instance %s/%s: %w", tenant, instance, engine.ErrUnknownInstance)
	}
	a.calls = append(a.calls, name+" "+tenant+"/"+instance)
	return nil
}

func (a *standIn) Stop(_ context.Context, t, i string) error    { return a.act("stop", t, i) }
func (a *standIn) Start(_ context.Context, t, i string) error   { return a.act("start", t, i) }
func (a *standIn) Restart(_ context.Context, t, i string) error { return a.act("restart", t, i) }

func (a *standIn) Logs(_ context.Context, _, _ string, _ sdk.LogOptions, fn func([]byte) error) error {
	return fn([]byte("agent log\x1b[2J\n"))
}

func (a *standIn) Journal(_ context.Context, n int) ([]state.Entry, error) {
	out := make([]state.Entry, n)
	for i := range out {
		out[i] = state.Entry{Seq: uint64(i + 1), Target: "tenant via-agent", Step: "agent-step", Event: state.EventDone}
	}
	return out, nil
}

func (a *standIn) Events() *events.Bus { return a.bus }

func (a *standIn) StateHash(_ context.Context, t, i string) ([]byte, error) {
	return []byte{0xa9, 0xe1}, a.act("hash", t, i)
}

func (a *standIn) Checkpoint(_ context.Context, t, i, n string) (sdk.Checkpoint, error) {
	return sdk.Checkpoint{Name: n, Root: []byte{0xa9, 0xe1}, Bytes: 2048, Inodes: 2}, a.act("checkpoint "+n, t, i)
}

func (a *standIn) Checkpoints(_ context.Context, t, i string) ([]sdk.Checkpoint, error) {
	return []sdk.Checkpoint{{Name: "agent-cp", Root: []byte{0xa9}, Mount: "/m/agent-cp"}}, a.act("checkpoints", t, i)
}

func (a *standIn) Rollback(_ context.Context, t, i, n string) error {
	return a.act("rollback "+n, t, i)
}

func (a *standIn) MountCheckpoint(_ context.Context, t, i, n string) (sdk.Mount, error) {
	return sdk.Mount{Source: "/m/" + n, ReadOnly: true}, a.act("mount "+n, t, i)
}

func (a *standIn) UnmountCheckpoint(_ context.Context, t, i, n string) error {
	return a.act("unmount "+n, t, i)
}

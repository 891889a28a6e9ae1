package main

import (
	"context"
	"fmt"
	"net"

	"github.com/kigumi/kigumi/core/agent"
	"github.com/kigumi/kigumi/core/api"
	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/metrics"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
)

// apiAgent adapts the agent to the control API.
type apiAgent struct{ *agent.Agent }

var _ api.Agent = apiAgent{}

// Status implements api.Agent.
func (a apiAgent) Status(ctx context.Context) ([]engine.TenantStatus, error) {
	st, err := a.Agent.Status(ctx)
	out := make([]engine.TenantStatus, len(st))
	for i, t := range st {
		out[i] = t.TenantStatus
	}
	return out, err
}

// Tenants implements api.Agent.
func (a apiAgent) Tenants(ctx context.Context) ([]api.Tenant, error) {
	st, err := a.Agent.Status(ctx)
	out := make([]api.Tenant, len(st))
	for i, t := range st {
		out[i] = api.Tenant{Name: t.Name, Source: t.Source, Generation: t.Generation, Phase: t.Phase,
			LastReconcile: t.Reconciled, Error: t.LastError}
	}
	return out, err
}

// Reconcile implements api.Agent.
func (a apiAgent) Reconcile(ctx context.Context, tenants ...string) ([]api.ReconcileResult, error) {
	rs, err := a.Agent.Reconcile(ctx, tenants...)
	out := make([]api.ReconcileResult, len(rs))
	for i, r := range rs {
		out[i] = api.ReconcileResult{Tenant: r.Tenant, Created: r.Created, Updated: r.Updated + r.Restarted,
			Destroyed: r.Destroyed, Duration: r.Duration.Seconds()}
		if r.Err != nil {
			out[i].Error = r.Err.Error()
		}
	}
	return out, err
}

// Events implements api.Agent.
func (a apiAgent) Events() *events.Bus { return a.Bus() }

// serveAgent serves the control API on the host's socket, and the metrics
// when the host spec asks, until ctx ends. It returns once both listen.
func serveAgent(ctx context.Context, c *cli, h *spec.Host, a *agent.Agent, st *state.Store) (func(), error) {
	gid, err := api.EnsureGroup(ctx, api.DefaultGroup)
	if err != nil {
		return nil, err
	}
	ln, err := api.Listen(api.SocketPath(h.StateDir), gid)
	if err != nil {
		return nil, err
	}
	srv := api.NewServer(apiAgent{a}, api.Options{Host: h.Name, Version: version, GID: gid, Logger: c.log.Named("api")})
	done := make(chan struct{}, 2)
	go func() {
		if err := srv.Serve(ctx, ln); err != nil {
			c.log.Error("control API", "error", err)
		}
		done <- struct{}{}
	}()
	n := 1
	if h.Agent.MetricsAddress != "" {
		mln, err := net.Listen("tcp", h.Agent.MetricsAddress)
		if err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		m := metrics.New(apiAgent{a}, st, a.Bus())
		go m.Run(ctx, a.Bus().Subscribe(1024))
		n++
		go func() {
			if err := m.Serve(ctx, mln); err != nil {
				c.log.Error("metrics", "error", err)
			}
			done <- struct{}{}
		}()
	}
	return func() {
		for range n {
			<-done
		}
	}, nil
}

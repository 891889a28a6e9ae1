package main

import (
	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/tenant"
)

// newIsolation returns the host's tenant isolation: a dedicated Linux user
// per tenant, or one shared user when the host spec turns tenant users off.
// Only a command that changes the host checks (and prepares) the cgroups.
func newIsolation(h *spec.Host, mode storeMode) (engine.Isolation, error) {
	if !h.Isolation.TenantUsers {
		return tenant.NewShared(tenant.WithIODevice(h.StateDir)), nil
	}
	m, err := tenant.NewManager(tenant.WithIODevice(h.StateDir))
	if err != nil {
		return nil, err
	}
	if mode != storeWrite {
		return m, nil
	}
	if err := m.Preflight(); err != nil {
		return nil, err
	}
	return m, nil
}

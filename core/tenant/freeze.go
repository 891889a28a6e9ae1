package tenant

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// freezeInstance freezes the processes of the instance cgroup rel, waits
// until all are frozen, and returns the function that thaws them. On
// failure, what was frozen is thawed.
func (c cgroups) freezeInstance(ctx context.Context, rel string) (thaw func() error, err error) {
	var state, frozen, thawed string
	if c.v2 {
		state, frozen, thawed = filepath.Join(c.root, parentCgroup, rel, "cgroup.freeze"), "1", "0"
	} else {
		state, frozen, thawed = filepath.Join(c.root, "freezer", parentCgroup, rel, "freezer.state"), "FROZEN", "THAWED"
	}
	if !exists(state) {
		return nil, fmt.Errorf("freeze %s: no freezer (%s): %w", rel, state, os.ErrNotExist)
	}
	thaw = func() error { return writeFile(state, thawed) }
	if err := writeFile(state, frozen); err != nil {
		return nil, errors.Join(fmt.Errorf("freeze %s: %w", rel, err), thaw())
	}
	// v1 reports FREEZING until every task is frozen; v2 reports it in
	// cgroup.events.
	events := filepath.Join(filepath.Dir(state), "cgroup.events")
	for {
		done := false
		if c.v2 {
			b, err := os.ReadFile(events)
			if err != nil {
				return nil, errors.Join(fmt.Errorf("freeze %s: %w", rel, err), thaw())
			}
			done = strings.Contains(string(b), "frozen 1")
		} else {
			b, err := os.ReadFile(state)
			if err != nil {
				return nil, errors.Join(fmt.Errorf("freeze %s: %w", rel, err), thaw())
			}
			done = strings.TrimSpace(string(b)) == "FROZEN"
		}
		if done {
			return thaw, nil
		}
		if err := sleep(ctx, pollInterval); err != nil {
			return nil, errors.Join(fmt.Errorf("freeze %s: %w", rel, err), thaw())
		}
	}
}

// FreezeInstance freezes every process in the instance's cgroup (the
// cgroup freezer), waits until they are frozen, and returns the function
// that thaws them: for a consistent copy of its state. It gives up, thawed,
// when ctx ends.
func (m *Manager) FreezeInstance(ctx context.Context, tenant, instance string) (func() error, error) {
	rel, err := instanceCgroup(tenant, instance)
	if err != nil {
		return nil, err
	}
	return m.cg.freezeInstance(ctx, rel)
}

// FreezeInstance freezes the instance's cgroup when the engine is root; it
// does nothing otherwise, where instances have no cgroups.
func (s *Shared) FreezeInstance(ctx context.Context, tenant, instance string) (func() error, error) {
	rel, err := instanceCgroup(tenant, instance)
	if err != nil {
		return nil, err
	}
	if s.cg == nil {
		return func() error { return nil }, nil
	}
	return s.cg.freezeInstance(ctx, rel)
}

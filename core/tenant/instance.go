package tenant

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// instanceName is the form of instance names.
var instanceName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// instanceCgroup checks the names and returns the instance cgroup's path
// relative to the parent cgroup: "<tenant>/<instance>".
func instanceCgroup(tenant, instance string) (string, error) {
	if !tenantName.MatchString(tenant) {
		return "", fmt.Errorf("invalid tenant name %q", tenant)
	}
	if !instanceName.MatchString(instance) {
		return "", fmt.Errorf("invalid instance name %q", instance)
	}
	return tenant + "/" + instance, nil
}

// ensureInstance creates or adopts the cgroup rel inside its tenant's cgroup,
// writes l into it, and describes it.
func (c cgroups) ensureInstance(rel string, l Limits) (sdk.Cgroup, error) {
	if _, err := c.create(rel); err != nil {
		return sdk.Cgroup{}, err
	}
	if err := c.setLimits(rel, l); err != nil {
		return sdk.Cgroup{}, err
	}
	cg := sdk.Cgroup{Path: "/" + parentCgroup + "/" + rel}
	for _, d := range c.dirs(rel) {
		cg.ProcsFiles = append(cg.ProcsFiles, filepath.Join(d, "cgroup.procs"))
	}
	return cg, nil
}

// removeInstance kills every process in the cgroup rel, waits until they are
// gone, and removes it.
func (c cgroups) removeInstance(ctx context.Context, rel string) error {
	if err := c.kill(ctx, rel); err != nil {
		return fmt.Errorf("remove cgroup %s: %w", rel, err)
	}
	return c.remove(ctx, rel)
}

// EnsureInstance creates or adopts the cgroup of one instance,
// /kigumi/<tenant>/<instance>, inside the tenant's cgroup (which Ensure
// made), and writes the instance's limits. Processes go into instance
// cgroups, never into the tenant's, so that cgroup v2's rule that only
// leaves hold processes is kept.
func (m *Manager) EnsureInstance(ctx context.Context, tenant, instance string, l Limits) (sdk.Cgroup, error) {
	rel, err := instanceCgroup(tenant, instance)
	if err != nil {
		return sdk.Cgroup{}, err
	}
	return m.cg.ensureInstance(rel, l)
}

// RemoveInstance kills every process in the instance's cgroup, waits until
// they are gone, and removes the cgroup. A missing cgroup is fine.
func (m *Manager) RemoveInstance(ctx context.Context, tenant, instance string) error {
	rel, err := instanceCgroup(tenant, instance)
	if err != nil {
		return err
	}
	return m.cg.removeInstance(ctx, rel)
}

// Allocate returns a new tenant's uid, the first free one at or above
// uidBase, and the start of its subordinate id range, the first free one at
// subBase + k*subCount. takenUID and takenSub report ids already given to
// other tenants.
func (m *Manager) Allocate(uidBase, subBase, subCount uint32, takenUID, takenSub func(uint32) bool) (uid, sub uint32, err error) {
	if uid, err = FreeUID(uidBase, takenUID); err != nil {
		return 0, 0, err
	}
	sub, err = FreeSubIDs(subBase, subCount, func(start uint32) bool {
		return takenSub(start) || (uid >= start && uid-start < subCount)
	})
	return uid, sub, err
}

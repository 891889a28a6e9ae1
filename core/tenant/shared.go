package tenant

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/kigumi/kigumi/core/fstree"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

// nobody is the uid and gid tenants share when tenant users are off and
// the engine runs as root: workloads never run as root.
const nobody = 65534

// Shared isolates tenants without tenant users: every tenant runs as one
// shared user, the engine's own when it is not root, else nobody. Tenants
// still get their own home directories and, when the engine is root, their
// own cgroups. It is weaker than Manager: tenants can reach each other's
// processes and files. It exists for development hosts that lack root.
type Shared struct {
	uid, gid uint32
	cg       *cgroups // nil when not root
}

// NewShared returns a Shared for the running process.
func NewShared(opts ...Option) *Shared {
	if os.Geteuid() != 0 {
		return &Shared{uid: uint32(os.Geteuid()), gid: uint32(os.Getegid())}
	}
	m := &Manager{cg: cgroups{root: "/sys/fs/cgroup"}}
	for _, opt := range opts {
		opt(m)
	}
	cg := detectCgroups(m.cg.root, m.cg.ioPath)
	return &Shared{uid: nobody, gid: nobody, cg: &cg}
}

// Allocate returns the shared uid and no subordinate ids.
func (s *Shared) Allocate(_, _, _ uint32, _, _ func(uint32) bool) (uid, sub uint32, err error) {
	return s.uid, 0, nil
}

// Ensure creates or adopts the tenant's home directory, owned by the shared
// user, and, when root, its cgroup with the tenant's limits.
func (s *Shared) Ensure(ctx context.Context, sp Spec) (_ *Tenant, err error) {
	if !tenantName.MatchString(sp.Tenant) {
		return nil, fmt.Errorf("invalid tenant name %q: it must match %s", sp.Tenant, tenantName)
	}
	if err := validHome(sp.Home); err != nil {
		return nil, err
	}
	var u undo
	defer func() {
		if err != nil {
			err = errors.Join(err, u.run(context.WithoutCancel(ctx)))
		}
	}()
	if err := ensureHomeOwned(sp.Home, s.uid, s.gid, &u); err != nil {
		return nil, fmt.Errorf("tenant %s: %w", sp.Tenant, err)
	}
	t := &Tenant{User: sdk.User{Name: userName(s.uid), UID: s.uid, GID: s.gid, Home: sp.Home}}
	if s.cg == nil {
		return t, nil
	}
	if _, err := s.cg.create(sp.Tenant); err != nil {
		return nil, fmt.Errorf("tenant %s: %w", sp.Tenant, err)
	}
	if err := s.cg.setLimits(sp.Tenant, sp.Limits); err != nil {
		return nil, err
	}
	t.Cgroup = sdk.Cgroup{Path: "/" + parentCgroup + "/" + sp.Tenant}
	return t, nil
}

// userName names the shared user for status output.
func userName(uid uint32) string {
	if uid == nobody {
		return "nobody"
	}
	return fmt.Sprintf("uid-%d", uid)
}

// Remove kills the processes in the tenant's cgroup (when it has one) and
// removes the cgroup and the home directory.
func (s *Shared) Remove(ctx context.Context, tenant, home string) error {
	if !tenantName.MatchString(tenant) {
		return fmt.Errorf("invalid tenant name %q", tenant)
	}
	if err := validHome(home); err != nil {
		return err
	}
	if s.cg != nil {
		if err := s.cg.kill(ctx, tenant); err != nil {
			return fmt.Errorf("remove tenant %s: %w", tenant, err)
		}
		if err := s.cg.remove(ctx, tenant); err != nil {
			return fmt.Errorf("remove tenant %s: %w", tenant, err)
		}
	}
	return fstree.RemoveAll(ctx, home)
}

// EnsureInstance creates the instance's cgroup when the engine is root, and
// otherwise returns no cgroup.
func (s *Shared) EnsureInstance(_ context.Context, tenant, instance string, l Limits) (sdk.Cgroup, error) {
	rel, err := instanceCgroup(tenant, instance)
	if err != nil || s.cg == nil {
		return sdk.Cgroup{}, err
	}
	return s.cg.ensureInstance(rel, l)
}

// RemoveInstance kills the processes in the instance's cgroup and removes
// it, when there is one.
func (s *Shared) RemoveInstance(ctx context.Context, tenant, instance string) error {
	rel, err := instanceCgroup(tenant, instance)
	if err != nil || s.cg == nil {
		return err
	}
	return s.cg.removeInstance(ctx, rel)
}

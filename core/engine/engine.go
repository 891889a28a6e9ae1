// Package engine brings a host to the state its specs describe. It turns specs
// into desired state, plans against the recorded state, and applies the plan
// through the plugins, writing every step down before and after it runs so
// an interrupted apply resumes where it stopped.
package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
	"github.com/kigumi/kigumi/core/tenant"
)

// Plugins launches configured plugins by kind, name and scope.
type Plugins interface {
	Runtime(ctx context.Context, name string, scope pluginhost.Scope) (sdk.Runtime, error)
	StateFS(ctx context.Context, name string, scope pluginhost.Scope) (sdk.StateFS, error)
	Ledger(ctx context.Context, name string, scope pluginhost.Scope) (sdk.Ledger, error)
	// Release stops the plugin processes of a tenant's scope, once the
	// tenant is destroyed. Releasing a released tenant succeeds.
	Release(tenant string) error
}

// Isolation makes and removes the Linux isolation of tenants and instances:
// users, subordinate ids, home directories and cgroups. Every method but
// Allocate is idempotent. *tenant.Manager and *tenant.Shared implement it.
type Isolation interface {
	// Allocate picks a new tenant's uid and the start of its subordinate id
	// range; takenUID and takenSub report ids recorded for other tenants.
	Allocate(uidBase, subBase, subCount uint32, takenUID, takenSub func(uint32) bool) (uid, sub uint32, err error)
	// Ensure creates or adopts a tenant's user, home and cgroup, and sets
	// the cgroup's limits.
	Ensure(ctx context.Context, s tenant.Spec) (*tenant.Tenant, error)
	// Remove kills the tenant's processes and removes its cgroup, user and
	// home.
	Remove(ctx context.Context, name, home string) error
	// EnsureInstance creates or adopts an instance's cgroup inside its
	// tenant's, with the instance's limits.
	EnsureInstance(ctx context.Context, tenantName, instance string, l tenant.Limits) (sdk.Cgroup, error)
	// RemoveInstance kills every process in the instance's cgroup and
	// removes it.
	RemoveInstance(ctx context.Context, tenantName, instance string) error
	// FreezeInstance freezes every process in the instance's cgroup and
	// returns the function that thaws them.
	FreezeInstance(ctx context.Context, tenantName, instance string) (thaw func() error, err error)
}

// Engine applies specs to one host. It is safe for concurrent use across
// tenants: the actions of one tenant must come from one goroutine at a time
// (the agent's queue sees to it), those of different tenants may run at
// once. How many run at once is the caller's choice.
type Engine struct {
	host      *spec.Host
	store     *state.Store
	plugins   Plugins
	isolation Isolation
	log       hclog.Logger
	hooks     hooks

	mu      sync.Mutex // guards configs
	configs map[string]*configured

	// lanes hold each tenant's writes waiting for its next commit
	// (journal.go).
	laneMu sync.Mutex
	lanes  map[string][]state.Op

	// capMu serializes id allocation and capacity checks; reserved holds
	// the usage of tenants being applied, until their records hold it.
	capMu    sync.Mutex
	reserved map[string]plan.Usage
	// held is what each recorded tenant holds, read from the records once
	// (nil until then) and kept up to date as tenants are applied, so that
	// a capacity check reads one tenant's records, not the host's.
	held map[string]plan.Usage
	// uids and subs are the ids recorded for tenants, read once (nil
	// until then) and added to as tenants are allocated ids. A destroyed
	// tenant's ids stay in them: they are retired, never handed out again.
	uids, subs map[uint32]bool
}

// Option configures an Engine.
type Option func(*Engine)

// WithLogger sets the engine's logger.
func WithLogger(l hclog.Logger) Option { return func(e *Engine) { e.log = l } }

// WithHooks adds hooks that observe the engine.
func WithHooks(h ...Hook) Option { return func(e *Engine) { e.hooks = append(e.hooks, h...) } }

// New returns an engine for host, recording into store (nil when nothing
// was applied and the engine only plans or reports), working through
// plugins and isolation.
func New(host *spec.Host, store *state.Store, plugins Plugins, isolation Isolation, opts ...Option) *Engine {
	e := &Engine{host: host, store: store, plugins: plugins, isolation: isolation,
		log: hclog.NewNullLogger(), configs: map[string]*configured{}, lanes: map[string][]state.Op{}, reserved: map[string]plan.Usage{}}
	for _, o := range opts {
		o(e)
	}
	return e
}

// DBPath returns the path of the host's state database.
func DBPath(h *spec.Host) string { return filepath.Join(h.StateDir, "kigumi.db") }

// PluginDataDir returns the data directory of a plugin.
func PluginDataDir(h *spec.Host, kind sdk.Kind, name string) string {
	return filepath.Join(h.StateDir, "plugins", string(kind)+"-"+name)
}

func (e *Engine) runDir(tenant, instance string) string {
	return filepath.Join(e.host.StateDir, "run", tenant, instance)
}

// tenantRunDir is the run directory a runtime gets for a tenant; instance
// names never start with a dot.
func (e *Engine) tenantRunDir(tenant, runtime string) string {
	return filepath.Join(e.host.StateDir, "run", tenant, ".runtime-"+runtime)
}

func (e *Engine) home(tenant string) string {
	return filepath.Join(e.host.StateDir, "tenants", tenant)
}

// stateParent is the root-owned directory that holds a tenant's instance
// state: the tenant can't replace it, or any path leading to its state.
func (e *Engine) stateParent(tenant string) string {
	return filepath.Join(e.host.StateDir, "state", tenant)
}

func (e *Engine) stateDir(tenant, instance string) string {
	return filepath.Join(e.stateParent(tenant), instance)
}

// PrepareStateDir creates the host's state directory layout. Directories
// tenants may traverse (but not list) to their homes are 0711; the rest
// are root-only.
func PrepareStateDir(h *spec.Host) error {
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{h.StateDir, 0o711},
		{filepath.Join(h.StateDir, "tenants"), 0o711},
		{filepath.Join(h.StateDir, "plugins"), 0o700},
		{filepath.Join(h.StateDir, "run"), 0o700},
		{filepath.Join(h.StateDir, "state"), 0o700},
	} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return fmt.Errorf("create state directory: %w", err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return fmt.Errorf("create state directory: %w", err)
		}
	}
	return nil
}

// FileSource returns the source name of a tenant spec file of h:
// "file:" and its path relative to the host spec's directory.
func FileSource(h *spec.Host, file string) string {
	rel, err := filepath.Rel(filepath.Dir(h.File), file)
	if err != nil {
		rel = file
	}
	return state.SourceFile + ":" + filepath.ToSlash(rel)
}

// Desired turns tenant specs decoded from h's spec files into desired state,
// each owned by its file. It pins each module's content digest, read
// through the process's digest cache (moduleDigest).
func Desired(h *spec.Host, tenants []*spec.Tenant) ([]plan.Tenant, error) {
	digests := map[string]string{}
	var out []plan.Tenant
	for _, t := range tenants {
		pt := plan.Tenant{Name: t.Name, Source: FileSource(h, t.File)}
		for _, i := range t.Instances {
			s := state.InstanceSpec{
				Runtime: i.Runtime, Module: i.Module, Image: i.Image, Archive: i.Archive, Digest: i.Digest,
				Args: i.Args, Env: i.Env, Resources: i.Resources, StateBytes: i.StateBytes, Permissions: i.Permissions,
			}
			s.Restart = i.Restart
			s.Stdin, s.StateGuest, s.StateSeed = i.Stdin, i.StateGuest, i.StateSeed
			for _, m := range i.Mounts {
				s.Mounts = append(s.Mounts, sdk.Mount{Source: m.Source, Target: m.Guest, ReadOnly: true, Type: sdk.MountBind})
			}
			if len(i.Settings) > 0 {
				s.Settings = i.Settings
			}
			if i.Module != "" {
				d, ok := digests[i.Module]
				if !ok {
					var err error
					if d, err = moduleDigest(i.Module); err != nil {
						return nil, fmt.Errorf("tenant %q instance %q: %w", t.Name, i.Name, err)
					}
					digests[i.Module] = d
				}
				s.ModuleDigest = d
			}
			pt.Instances = append(pt.Instances, plan.Instance{Name: i.Name, Spec: s})
		}
		out = append(out, pt)
	}
	return out, nil
}

// Plan refreshes the recorded workloads of the tenants that sources of kind
// owner own, and diffs desired (all from such sources) against them.
// Tenants of other sources are neither seen nor touched; a desired tenant
// recorded for another kind of source is an *OwnerError.
func (e *Engine) Plan(ctx context.Context, owner string, desired []plan.Tenant) (*plan.Plan, error) {
	return e.plan(ctx, owner, nil, desired)
}

// PlanTenant plans one tenant of a source of kind owner: towards desired, or
// towards its destruction when desired is nil.
func (e *Engine) PlanTenant(ctx context.Context, owner, name string, desired *plan.Tenant) (*plan.Plan, error) {
	var d []plan.Tenant
	if desired != nil {
		d = []plan.Tenant{*desired}
	}
	return e.plan(ctx, owner, []string{name}, d)
}

// OwnerError is the error of planning a tenant that another kind of source
// owns.
type OwnerError struct {
	Tenant string
	// Owner is the recorded source; Claim the kind that claims the tenant.
	Owner, Claim string
}

// Error implements error.
func (e *OwnerError) Error() string {
	return fmt.Sprintf("tenant %q belongs to source %s, not to a %s source", e.Tenant, e.Owner, e.Claim)
}

// plan plans desired against the records owned by owner, of the tenants
// named in only (all when empty). Only those tenants' records are read.
func (e *Engine) plan(ctx context.Context, owner string, only []string, desired []plan.Tenant) (*plan.Plan, error) {
	tenants, instances, err := e.records(ctx, only...)
	if err != nil {
		return nil, err
	}
	wanted := make(map[string]bool, len(desired))
	for _, d := range desired {
		wanted[d.Name] = true
	}
	var ts []state.Tenant
	owned := make(map[string]bool, len(tenants))
	for _, t := range tenants {
		if state.SourceKind(t.Source) != owner {
			if wanted[t.Name] {
				return nil, &OwnerError{Tenant: t.Name, Owner: t.Source, Claim: owner}
			}
			continue
		}
		ts = append(ts, t)
		owned[t.Name] = true
	}
	var is []state.Instance
	for _, i := range instances {
		if owned[i.Tenant] {
			is = append(is, i)
		}
	}
	r, is, err := e.refresh(ctx, ts, is)
	if err != nil {
		return nil, err
	}
	p := plan.Diff(desired, ts, is, r)
	e.hooks.PostDiff(only, p)
	return p, nil
}

// OwnershipDiagnostics reports each tenant that a spec of a source of kind
// claim declares while owners (tenant name to recorded source) names
// another kind of source: no source takes a tenant over silently.
func OwnershipDiagnostics(owners map[string]string, claim string, tenants []*spec.Tenant) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, t := range tenants {
		if owner, ok := owners[t.Name]; ok && state.SourceKind(owner) != claim {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Tenant owned by another source",
				Detail: fmt.Sprintf("Tenant %q belongs to %s; a %s source cannot take it over. Rename the tenant, or remove it from its source first.",
					t.Name, owner, claim),
				Subject: t.DeclRange.Ptr(),
			})
		}
	}
	return diags
}

// Owners returns the recorded source of every tenant. It reads the
// tenants' records alone, not their instances'.
func (e *Engine) Owners(ctx context.Context) (map[string]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if e.store == nil {
		return map[string]string{}, nil
	}
	if err := e.flushAll(); err != nil {
		return nil, err
	}
	tenants, err := e.store.Tenants()
	out := make(map[string]string, len(tenants))
	for _, t := range tenants {
		out[t.Name] = t.Source
	}
	return out, err
}

// TenantsServedBy returns, sorted, the recorded tenants with instances
// that the plugin kind/name serves: a runtime's workloads, the statefs's
// states. A plugin of another kind serves none.
func (e *Engine) TenantsServedBy(ctx context.Context, kind sdk.Kind, name string) ([]string, error) {
	_, instances, err := e.records(ctx)
	if err != nil {
		return nil, err
	}
	served := map[string]bool{}
	for _, in := range instances {
		if (kind == sdk.KindRuntime && in.Spec.Runtime == name) || (kind == sdk.KindStateFS && in.StateHandle != nil) {
			served[in.Tenant] = true
		}
	}
	return slices.Sorted(maps.Keys(served)), nil
}

// DestroyPlan plans the destruction of the named tenants, or of every
// recorded tenant when names is empty.
func (e *Engine) DestroyPlan(ctx context.Context, names []string) (*plan.Plan, error) {
	tenants, instances, err := e.records(ctx)
	if err != nil {
		return nil, err
	}
	drop := map[string]bool{}
	for _, n := range names {
		drop[n] = true
	}
	known := map[string]bool{}
	var dt []state.Tenant
	for _, t := range tenants {
		known[t.Name] = true
		if len(names) == 0 || drop[t.Name] {
			dt = append(dt, t)
		}
	}
	for _, n := range names {
		if !known[n] {
			return nil, fmt.Errorf("tenant %q: %w", n, ErrUnknownTenant)
		}
	}
	var di []state.Instance
	for _, i := range instances {
		if len(names) == 0 || drop[i.Tenant] {
			di = append(di, i)
		}
	}
	return plan.Diff(nil, dt, di, nil), nil
}

// ErrUnknownTenant is returned for a tenant that has no record.
var ErrUnknownTenant = errors.New("no such tenant on this host")

// ErrUnknownInstance is returned for an instance that has no record.
var ErrUnknownInstance = errors.New("no such instance on this host")

// records returns the recorded tenants and instances of the tenants named
// in only, or of all when only is empty; none when the engine has no store
// because nothing was applied yet.
func (e *Engine) records(ctx context.Context, only ...string) ([]state.Tenant, []state.Instance, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if e.store == nil {
		return nil, nil, nil
	}
	if len(only) == 0 {
		if err := e.flushAll(); err != nil {
			return nil, nil, err
		}
		tenants, err := e.store.Tenants()
		if err != nil {
			return nil, nil, err
		}
		instances, err := e.store.Instances()
		return tenants, instances, err
	}
	var tenants []state.Tenant
	var instances []state.Instance
	for _, name := range slices.Compact(slices.Sorted(slices.Values(only))) {
		t, ok, err := e.tenantRec(name)
		if err != nil {
			return nil, nil, err
		}
		if ok {
			tenants = append(tenants, t)
		}
		is, err := e.store.TenantInstances(name)
		if err != nil {
			return nil, nil, err
		}
		instances = append(instances, is...)
	}
	return tenants, instances, nil
}

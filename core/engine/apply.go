package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/kigumi/kigumi/core/fstree"
	"github.com/kigumi/kigumi/core/fusemount"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
	"github.com/kigumi/kigumi/core/tenant"
)

// rollbackTimeout bounds the cleanup after a failed action. Cleanup runs even
// when the apply's context was cancelled.
const rollbackTimeout = time.Minute

// RollbackError is the error of cleaning up after a failed action: what
// the action made may be left behind, for the next apply to finish.
type RollbackError struct{ Err error }

// Error implements error.
func (e *RollbackError) Error() string { return "rollback: " + e.Err.Error() }

// Unwrap returns the cause.
func (e *RollbackError) Unwrap() error { return e.Err }

// rollback wraps a cleanup's error, if any, in a *RollbackError.
func rollback(err error) error {
	if err == nil {
		return nil
	}
	return &RollbackError{Err: err}
}

// Refused reports whether err is an action refused as invalid (by a plugin,
// for what a spec asks) and cleanly rolled back: nothing was changed.
func Refused(err error) bool {
	var rb *RollbackError
	return errors.Is(err, sdk.ErrInvalid) && !errors.As(err, &rb)
}

// ActionError is the error of a failed action.
type ActionError struct {
	Action plan.Action
	Err    error
}

// Error implements error.
func (e *ActionError) Error() string {
	return fmt.Sprintf("%s %s: %v", e.Action.Op, e.Action.Target(), e.Err)
}

// Unwrap returns the cause.
func (e *ActionError) Unwrap() error { return e.Err }

// Apply executes the plan's actions in order, tenant by tenant. The first
// action of a tenant that fails is rolled back, and the tenant's remaining
// actions are skipped; actions done before stay done, and the other
// tenants' actions go on. A tenant whose plan would take the host past its
// capacity is a *CapacityError, and none of its actions run. The error
// joins every tenant's error.
func (e *Engine) Apply(ctx context.Context, p *plan.Plan) error {
	var errs []error
	failed := map[string]bool{}
	created := map[string]bool{} // tenants this apply created
	checked := map[string]bool{}
	defer func() {
		e.capMu.Lock()
		defer e.capMu.Unlock()
		for t := range checked {
			delete(e.reserved, t)
			if err := e.updateHeld(t); err != nil {
				e.held = nil // read it all again next time
			}
		}
	}()
	for _, a := range p.Actions {
		if failed[a.Tenant] {
			continue
		}
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if !checked[a.Tenant] {
			checked[a.Tenant] = true
			if err := e.reserve(a.Tenant, p); err != nil {
				failed[a.Tenant] = true
				errs = append(errs, err)
				continue
			}
		}
		if err := e.applyAction(ctx, a, created); err != nil {
			failed[a.Tenant] = true
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// applyAction runs one action, framed by the hooks.
func (e *Engine) applyAction(ctx context.Context, a plan.Action, created map[string]bool) error {
	start := time.Now()
	e.hooks.PreApply(a)
	var err error
	switch {
	case a.Instance == "" && a.Op == plan.Create:
		err = e.createTenant(ctx, a)
		if err == nil {
			created[a.Tenant] = true
		}
	case a.Instance == "" && a.Op == plan.Update:
		err = e.updateTenant(ctx, a)
	case a.Instance == "" && a.Op == plan.Destroy:
		err = e.destroyTenant(ctx, a.Tenant)
	case a.Op == plan.Create:
		err = e.createInstance(ctx, a)
		if err != nil && created[a.Tenant] {
			err = errors.Join(err, rollback(e.dropEmptyTenant(a.Tenant)))
		}
	case a.Op == plan.Update:
		err = e.updateInstance(ctx, a)
	case a.Op == plan.Restart:
		err = e.restartInstance(ctx, a.Tenant, a.Instance, true)
	case a.Op == plan.Destroy:
		err = e.destroyInstance(ctx, a.Tenant, a.Instance)
	}
	// What the action left in its tenant's lane is on disk before it is
	// reported done.
	if ferr := e.flush(a.Tenant); ferr != nil {
		err = errors.Join(err, ferr)
	}
	if err != nil {
		err = &ActionError{Action: a, Err: err}
	}
	e.hooks.PostApply(a, time.Since(start), err)
	return err
}

// CapacityError is the error of a tenant whose plan would take the host's
// totals past its capacity.
type CapacityError struct {
	Tenant string
	// Detail names what would exceed the capacity, and by how much.
	Detail string
}

// Error implements error.
func (e *CapacityError) Error() string {
	return fmt.Sprintf("tenant %q does not fit on the host: %s", e.Tenant, e.Detail)
}

// reserve checks that the usage p gives tenant, with what every other tenant
// holds (or is being applied to hold), fits the host's capacity, and
// reserves it until the apply ends. Plans that do not grow the tenant
// always pass: shrinking never needs room.
func (e *Engine) reserve(tenant string, p *plan.Plan) error {
	want := p.Usage[tenant]
	e.capMu.Lock()
	defer e.capMu.Unlock()
	if err := e.loadHeld(); err != nil {
		return err
	}
	if err := e.updateHeld(tenant); err != nil {
		return err
	}
	// What a tenant being applied reserved overrides what it holds.
	usage := func(t string) plan.Usage {
		if u, ok := e.reserved[t]; ok {
			return u
		}
		return e.held[t]
	}
	mine := usage(tenant)
	if want.Limits.MemoryBytes <= mine.Limits.MemoryBytes && want.Limits.MilliCPU <= mine.Limits.MilliCPU && want.Instances <= mine.Instances {
		e.reserved[tenant] = mine
		return nil
	}
	var total plan.Usage
	add := func(t string) {
		if t != tenant {
			u := usage(t)
			total.Limits.MemoryBytes += u.Limits.MemoryBytes
			total.Limits.MilliCPU += u.Limits.MilliCPU
			total.Instances += u.Instances
		}
	}
	for t := range e.held {
		add(t)
	}
	for t := range e.reserved {
		if _, ok := e.held[t]; !ok {
			add(t)
		}
	}
	c := e.host.Capacity
	var over []string
	if m := total.Limits.MemoryBytes + want.Limits.MemoryBytes; c.MemoryBytes > 0 && m > c.MemoryBytes {
		over = append(over, fmt.Sprintf("memory %s of %s", humanize.IBytes(uint64(m)), humanize.IBytes(uint64(c.MemoryBytes))))
	}
	if m := total.Limits.MilliCPU + want.Limits.MilliCPU; c.MilliCPU > 0 && m > c.MilliCPU {
		over = append(over, fmt.Sprintf("cpu %g of %g cores", float64(m)/1000, float64(c.MilliCPU)/1000))
	}
	if n := total.Instances + want.Instances; c.MaxInstances > 0 && int64(n) > c.MaxInstances {
		over = append(over, fmt.Sprintf("%d of %d instances", n, c.MaxInstances))
	}
	if over != nil {
		return &CapacityError{Tenant: tenant, Detail: "all tenants together would hold " + strings.Join(over, ", ")}
	}
	e.reserved[tenant] = plan.Usage{Limits: maxResources(mine.Limits, want.Limits), Instances: max(mine.Instances, want.Instances)}
	return nil
}

// loadHeld reads what every recorded tenant holds, unless it was read
// before. capMu must be held.
func (e *Engine) loadHeld() error {
	if e.held != nil {
		return nil
	}
	tenants, instances, err := e.records(context.Background())
	if err != nil {
		return err
	}
	held := map[string]plan.Usage{}
	for _, t := range tenants {
		u := held[t.Name]
		u.Limits = t.Limits
		held[t.Name] = u
	}
	for _, i := range instances {
		u := held[i.Tenant]
		u.Instances++
		held[i.Tenant] = u
	}
	e.held = held
	return nil
}

// updateHeld reads again what tenant holds, from its records alone. capMu
// must be held.
func (e *Engine) updateHeld(tenant string) error {
	if e.held == nil {
		return nil
	}
	tenants, instances, err := e.records(context.Background(), tenant)
	if err != nil {
		return err
	}
	if len(tenants) == 0 && len(instances) == 0 {
		delete(e.held, tenant)
		return nil
	}
	var u plan.Usage
	if len(tenants) > 0 {
		u.Limits = tenants[0].Limits
	}
	u.Instances = len(instances)
	e.held[tenant] = u
	return nil
}

// maxResources is the larger of a and b, field by field.
func maxResources(a, b sdk.Resources) sdk.Resources {
	return sdk.Resources{MemoryBytes: max(a.MemoryBytes, b.MemoryBytes), MilliCPU: max(a.MilliCPU, b.MilliCPU),
		DiskBytes: max(a.DiskBytes, b.DiskBytes), Pids: max(a.Pids, b.Pids)}
}

// cleanupContext returns a context for rollback that outlives ctx's
// cancellation.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
}

func (e *Engine) createTenant(ctx context.Context, a plan.Action) error {
	target := "tenant " + a.Tenant
	rec, ok, err := e.tenantRec(a.Tenant)
	if err != nil {
		return err
	}
	rec.Phase = state.PhaseCreating
	rec.Limits = a.Limits
	rec.Source = a.Source
	if !ok {
		rec.Name = a.Tenant
		// The allocation is recorded before anything is made, so a resumed
		// create reuses the same ids.
		if err := e.allocate(&rec); err != nil {
			return err
		}
	} else if err := e.putTenant(rec); err != nil {
		return err
	}
	err = e.step(target, "isolation.ensure", func() error {
		t, err := e.isolation.Ensure(ctx, tenantSpec(rec, a.Limits))
		if err == nil {
			rec.User, rec.Cgroup = t.User, t.Cgroup
		}
		return err
	})
	if err == nil {
		err = e.step(target, "state.parent", func() error { return mkdirMode(e.stateParent(rec.Name), 0o700) })
	}
	if err != nil {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		return errors.Join(err, rollback(e.removeTenant(cctx, rec)))
	}
	rec.Phase = state.PhaseReady
	return e.putTenant(rec)
}

// mkdirMode creates dir with mode, or sets the mode of an existing one.
func mkdirMode(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}

// allocate picks a tenant's uid and subordinate id range: the lowest free
// ones not recorded for another tenant and not retired by a destroyed one,
// all while no other tenant allocates.
func (e *Engine) allocate(rec *state.Tenant) error {
	e.capMu.Lock()
	defer e.capMu.Unlock()
	if e.uids == nil {
		tenants, err := e.store.Tenants()
		if err != nil {
			return err
		}
		e.uids, e.subs = map[uint32]bool{}, map[uint32]bool{}
		for _, t := range tenants {
			e.uids[t.User.UID] = true
			e.subs[t.User.SubUID] = true
		}
	}
	retired, err := e.store.RetiredIDs()
	if err != nil {
		return err
	}
	uids, subs := e.uids, e.subs
	iso := e.host.Isolation
	uid, sub, err := e.isolation.Allocate(iso.UIDBase, iso.SubIDBase, iso.SubIDCount,
		func(u uint32) bool { return uids[u] || u < retired.UID },
		func(s uint32) bool { return subs[s] || uint64(s) < retired.SubID })
	if err != nil {
		return fmt.Errorf("allocate ids: %w", err)
	}
	rec.User = sdk.User{UID: uid, GID: uid, SubUID: sub, SubGID: sub, Count: iso.SubIDCount, Home: e.home(rec.Name)}
	if sub == 0 {
		rec.User.Count = 0
	}
	// Committed at once: the next tenant's allocation reads it.
	op, err := state.PutTenantOp(*rec)
	if err == nil {
		err = e.flush(rec.Name, op)
	}
	if err != nil {
		return err
	}
	uids[uid], subs[sub] = true, true
	return nil
}

// tenantSpec is what isolation needs to make a tenant.
func tenantSpec(rec state.Tenant, limits sdk.Resources) tenant.Spec {
	return tenant.Spec{
		Tenant: rec.Name, UID: rec.User.UID, SubIDStart: rec.User.SubUID, SubIDCount: rec.User.Count,
		Home: rec.User.Home, Limits: tenantLimits(limits),
	}
}

func tenantLimits(r sdk.Resources) tenant.Limits {
	return tenant.Limits{MemoryBytes: r.MemoryBytes, MilliCPU: r.MilliCPU, Pids: r.Pids, IO: r.IO}
}

func (e *Engine) updateTenant(ctx context.Context, a plan.Action) error {
	rec, ok, err := e.tenantRec(a.Tenant)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("tenant %q: %w", a.Tenant, ErrUnknownTenant)
	}
	err = e.step("tenant "+a.Tenant, "isolation.limits", func() error {
		_, err := e.isolation.Ensure(ctx, tenantSpec(rec, a.Limits))
		return err
	})
	if err != nil {
		return err
	}
	rec.Limits = a.Limits
	rec.Source = a.Source
	return e.putTenant(rec)
}

func (e *Engine) destroyTenant(ctx context.Context, name string) error {
	rec, ok, err := e.tenantRec(name)
	if err != nil || !ok {
		return err
	}
	rec.Phase = state.PhaseDestroying
	if err := e.putTenant(rec); err != nil {
		return err
	}
	return e.removeTenant(ctx, rec)
}

func (e *Engine) removeTenant(ctx context.Context, rec state.Tenant) error {
	target := "tenant " + rec.Name
	if err := e.releaseTenant(ctx, &rec); err != nil {
		return err
	}
	// The tenant's plugin processes end with it; releasing is idempotent,
	// so a resumed destroy releases again.
	if err := e.plugins.Release(rec.Name); err != nil {
		return fmt.Errorf("release the plugin processes of tenant %s: %w", rec.Name, err)
	}
	// The tenant's run directory, emptied by its instances and runtimes.
	_ = os.Remove(filepath.Join(e.host.StateDir, "run", rec.Name))
	err := e.step(target, "isolation.remove", func() error {
		return e.isolation.Remove(ctx, rec.Name, rec.User.Home)
	})
	if err == nil {
		err = e.step(target, "state.parent.remove", func() error {
			// Mounts left below it (their servers gone) would hang the removal.
			return errors.Join(fusemount.Clear(ctx, e.stateParent(rec.Name)), fstree.RemoveAll(ctx, e.stateParent(rec.Name)))
		})
	}
	if err != nil {
		return err
	}
	if err := e.flush(rec.Name); err != nil {
		return err
	}
	return e.store.DeleteTenant(rec.Name)
}

// dropEmptyTenant removes a tenant this apply created once a failed
// instance create leaves it with no instances.
func (e *Engine) dropEmptyTenant(name string) error {
	if err := e.flush(name); err != nil {
		return err
	}
	instances, err := e.store.TenantInstances(name)
	if err != nil || len(instances) > 0 {
		return err
	}
	return e.destroyTenant(context.Background(), name)
}

func (e *Engine) tenantRecord(name string) (state.Tenant, error) {
	t, ok, err := e.tenantRec(name)
	if err != nil {
		return t, err
	}
	if !ok || t.Phase != state.PhaseReady {
		return t, fmt.Errorf("tenant %q is not ready", name)
	}
	return t, nil
}

// actionRecords returns the records of an instance action's tenant, which
// must be ready, and of the instance, if it has one.
func (e *Engine) actionRecords(a plan.Action) (state.Tenant, state.Instance, bool, error) {
	ten, err := e.tenantRecord(a.Tenant)
	if err != nil {
		return ten, state.Instance{}, false, err
	}
	rec, ok, err := e.instanceRec(a.Tenant, a.Instance)
	return ten, rec, ok, err
}

func (e *Engine) createInstance(ctx context.Context, a plan.Action) error {
	ten, rec, ok, err := e.actionRecords(a)
	if err != nil {
		return err
	}
	if !ok {
		rec = state.Instance{Tenant: a.Tenant, Name: a.Instance, RunDir: e.runDir(a.Tenant, a.Instance)}
	}
	rec.Phase, rec.Spec, rec.SpecHash = state.PhaseCreating, *a.Spec, a.Spec.Hash()
	if err := e.putInstance(rec); err != nil {
		return err
	}
	if err := e.bringUp(ctx, ten, &rec, a.Resume); err != nil {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		return errors.Join(err, rollback(e.tearDown(cctx, &rec, true)))
	}
	rec.Phase = state.PhaseReady
	return e.putInstance(rec)
}

func (e *Engine) updateInstance(ctx context.Context, a plan.Action) error {
	ten, rec, ok, err := e.actionRecords(a)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("instance %s/%s: %w", a.Tenant, a.Instance, ErrUnknownInstance)
	}
	old := rec.Spec
	target := "instance " + rec.Key()
	// The old workload stops; its state stays.
	if rec.RuntimeHandle != nil {
		if err := e.step(target, "runtime.destroy", func() error { return e.runtimeDestroy(ctx, rec) }); err != nil {
			return err
		}
		rec.RuntimeHandle = nil
	}
	rec.Phase, rec.Spec, rec.SpecHash = state.PhaseUpdating, *a.Spec, a.Spec.Hash()
	oldRun := rec.Run
	rec.Run = state.RunHistory{} // a new spec starts a new restart count
	if err := e.putInstance(rec); err != nil {
		return err
	}
	if err := e.bringUp(ctx, ten, &rec, a.Resume); err != nil {
		// Put the old spec back, so the instance keeps running as it was.
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if rerr := e.tearDown(cctx, &rec, false); rerr != nil {
			return errors.Join(err, rollback(rerr))
		}
		if a.Resume {
			// The spec before the interrupted update is not known any more.
			return errors.Join(err, rollback(errors.New("the instance has no workload; the next apply retries the update")))
		}
		rec.Spec, rec.SpecHash, rec.Run = old, old.Hash(), oldRun
		if rerr := e.bringUp(cctx, ten, &rec, false); rerr != nil {
			return errors.Join(err, rollback(fmt.Errorf("restore the previous spec: %w", rerr)))
		}
		rec.Phase = state.PhaseReady
		if rerr := e.putInstance(rec); rerr != nil {
			return errors.Join(err, rollback(rerr))
		}
		return fmt.Errorf("%w (the previous spec was restored)", err)
	}
	rec.Phase = state.PhaseReady
	return e.putInstance(rec)
}

func (e *Engine) destroyInstance(ctx context.Context, tenant, name string) error {
	rec, ok, err := e.instanceRec(tenant, name)
	if err != nil || !ok {
		return err
	}
	rec.Phase = state.PhaseDestroying
	if err := e.putInstance(rec); err != nil {
		return err
	}
	return e.tearDown(ctx, &rec, true)
}

// restartInstance starts an instance's workload again, with its spec and
// state: policy says the restart policy asked (and counts it), rather than
// an operator.
func (e *Engine) restartInstance(ctx context.Context, tenant, name string, policy bool) error {
	ten, rec, ok, err := e.actionRecords(plan.Action{Tenant: tenant, Instance: name})
	if err != nil {
		return err
	}
	if !ok || rec.Phase != state.PhaseReady {
		return fmt.Errorf("instance %s/%s: %w", tenant, name, ErrUnknownInstance)
	}
	if policy {
		rec.Run.Restarts++
	} else {
		rec.Held = false
	}
	return e.freshWorkload(ctx, ten, rec)
}

// freshWorkload destroys the instance's workload, if it has one, and
// brings the instance up again: a new workload on the same state.
func (e *Engine) freshWorkload(ctx context.Context, ten state.Tenant, rec state.Instance) error {
	if rec.RuntimeHandle != nil {
		if err := e.step("instance "+rec.Key(), "runtime.destroy", func() error { return e.runtimeDestroy(ctx, rec) }); err != nil {
			return err
		}
		rec.RuntimeHandle = nil
	}
	if err := e.putInstance(rec); err != nil {
		return err
	}
	return e.bringUp(ctx, ten, &rec, false)
}

// StopInstance stops an instance's workload and holds it stopped: it is not
// restarted until StartInstance or RestartInstance. Its state stays.
func (e *Engine) StopInstance(ctx context.Context, tenant, name string) error {
	return e.committed(tenant, func() error { return e.stopInstance(ctx, tenant, name) })
}

func (e *Engine) stopInstance(ctx context.Context, tenant, name string) error {
	rec, ok, err := e.instanceRec(tenant, name)
	if err != nil {
		return err
	}
	if !ok || rec.Phase != state.PhaseReady {
		return fmt.Errorf("instance %s/%s: %w", tenant, name, ErrUnknownInstance)
	}
	rec.Held = true
	if err := e.putInstance(rec); err != nil {
		return err
	}
	if rec.RuntimeHandle == nil {
		return nil
	}
	return e.step("instance "+rec.Key(), "runtime.stop", func() error {
		rt, err := e.runtime(ctx, rec.Spec.Runtime)
		if err != nil {
			return err
		}
		return ignoreNotFound(rt.Stop(ctx, *rec.RuntimeHandle, StopTimeout))
	})
}

// StopTimeout is how long a stopped workload has to end before it is killed.
const StopTimeout = 10 * time.Second

// StartInstance releases an instance an operator stopped, and starts its
// workload again unless it still runs.
func (e *Engine) StartInstance(ctx context.Context, tenant, name string) error {
	return e.committed(tenant, func() error { return e.startInstance(ctx, tenant, name) })
}

func (e *Engine) startInstance(ctx context.Context, tenant, name string) error {
	ten, rec, ok, err := e.actionRecords(plan.Action{Tenant: tenant, Instance: name})
	if err != nil {
		return err
	}
	if !ok || rec.Phase != state.PhaseReady {
		return fmt.Errorf("instance %s/%s: %w", tenant, name, ErrUnknownInstance)
	}
	rec.Held = false
	if err := e.putInstance(rec); err != nil {
		return err
	}
	return e.bringUp(ctx, ten, &rec, false)
}

// RestartInstance starts an instance's workload afresh, with its spec and
// state, and releases it if an operator had stopped it.
func (e *Engine) RestartInstance(ctx context.Context, tenant, name string) error {
	return e.committed(tenant, func() error { return e.restartInstance(ctx, tenant, name, false) })
}

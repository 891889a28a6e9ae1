package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kigumi/kigumi/core/fstree"
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

// Apply executes the plan's actions in order. It stops at the first action
// that fails, after rolling that action back; actions done before stay done.
func (e *Engine) Apply(ctx context.Context, p *plan.Plan) error {
	created := map[string]bool{} // tenants this apply created
	for _, a := range p.Actions {
		start := time.Now()
		fmt.Fprintf(e.out, "%s %s...\n", verb(a.Op), a.Target())
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
		case a.Op == plan.Destroy:
			err = e.destroyInstance(ctx, a.Tenant, a.Instance)
		}
		if err != nil {
			fmt.Fprintf(e.out, "  failed after %s\n", since(start))
			return &ActionError{Action: a, Err: err}
		}
		fmt.Fprintf(e.out, "  done in %s\n", since(start))
	}
	return nil
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond / 10) }

func verb(op plan.Op) string {
	switch op {
	case plan.Create:
		return "Creating"
	case plan.Update:
		return "Updating"
	}
	return "Destroying"
}

// step runs fn, journaled before and after.
func (e *Engine) step(target, name string, fn func() error) error {
	if err := e.store.Record(target, name, state.EventBegin, nil); err != nil {
		return err
	}
	if err := fn(); err != nil {
		e.log.Debug("step failed", "target", target, "step", name, "error", err)
		if rerr := e.store.Record(target, name, state.EventFailed, err); rerr != nil {
			return errors.Join(fmt.Errorf("%s: %w", name, err), rerr)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return e.store.Record(target, name, state.EventDone, nil)
}

// cleanupContext returns a context for rollback that outlives ctx's
// cancellation.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
}

func (e *Engine) createTenant(ctx context.Context, a plan.Action) error {
	target := "tenant " + a.Tenant
	rec, ok, err := e.store.Tenant(a.Tenant)
	if err != nil {
		return err
	}
	if !ok {
		rec = state.Tenant{Name: a.Tenant}
		if err := e.allocate(&rec); err != nil {
			return err
		}
	}
	rec.Phase = state.PhaseCreating
	rec.Limits = a.Limits
	// The allocation is recorded before anything is made, so a resumed
	// create reuses the same ids.
	if err := e.store.PutTenant(rec); err != nil {
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
	return e.store.PutTenant(rec)
}

// mkdirMode creates dir with mode, or sets the mode of an existing one.
func mkdirMode(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}

// allocate picks a tenant's uid and subordinate id range: the lowest free
// ones not recorded for another tenant and not retired by a destroyed one.
func (e *Engine) allocate(rec *state.Tenant) error {
	tenants, err := e.store.Tenants()
	if err != nil {
		return err
	}
	retired, err := e.store.RetiredIDs()
	if err != nil {
		return err
	}
	uids := map[uint32]bool{}
	subs := map[uint32]bool{}
	for _, t := range tenants {
		uids[t.User.UID] = true
		subs[t.User.SubUID] = true
	}
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
	return tenant.Limits{MemoryBytes: r.MemoryBytes, MilliCPU: r.MilliCPU, Pids: r.Pids}
}

func (e *Engine) updateTenant(ctx context.Context, a plan.Action) error {
	rec, ok, err := e.store.Tenant(a.Tenant)
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
	return e.store.PutTenant(rec)
}

func (e *Engine) destroyTenant(ctx context.Context, name string) error {
	rec, ok, err := e.store.Tenant(name)
	if err != nil || !ok {
		return err
	}
	rec.Phase = state.PhaseDestroying
	if err := e.store.PutTenant(rec); err != nil {
		return err
	}
	return e.removeTenant(ctx, rec)
}

func (e *Engine) removeTenant(ctx context.Context, rec state.Tenant) error {
	target := "tenant " + rec.Name
	if err := e.releaseTenant(ctx, &rec); err != nil {
		return err
	}
	// The tenant's run directory, emptied by its instances and runtimes.
	_ = os.Remove(filepath.Join(e.host.StateDir, "run", rec.Name))
	err := e.step(target, "isolation.remove", func() error {
		return e.isolation.Remove(ctx, rec.Name, rec.User.Home)
	})
	if err == nil {
		err = e.step(target, "state.parent.remove", func() error { return fstree.RemoveAll(ctx, e.stateParent(rec.Name)) })
	}
	if err != nil {
		return err
	}
	return e.store.DeleteTenant(rec.Name)
}

// dropEmptyTenant removes a tenant this apply created once a failed
// instance create leaves it with no instances.
func (e *Engine) dropEmptyTenant(name string) error {
	instances, err := e.store.Instances()
	if err != nil {
		return err
	}
	if slices.ContainsFunc(instances, func(i state.Instance) bool { return i.Tenant == name }) {
		return nil
	}
	return e.destroyTenant(context.Background(), name)
}

func (e *Engine) tenantRecord(name string) (state.Tenant, error) {
	t, ok, err := e.store.Tenant(name)
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
	rec, ok, err := e.store.Instance(a.Tenant, a.Instance)
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
	if err := e.store.PutInstance(rec); err != nil {
		return err
	}
	if err := e.bringUp(ctx, ten, &rec, a.Resume); err != nil {
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		return errors.Join(err, rollback(e.tearDown(cctx, &rec, true)))
	}
	rec.Phase = state.PhaseReady
	return e.store.PutInstance(rec)
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
	if err := e.store.PutInstance(rec); err != nil {
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
		rec.Spec, rec.SpecHash = old, old.Hash()
		if rerr := e.bringUp(cctx, ten, &rec, false); rerr != nil {
			return errors.Join(err, rollback(fmt.Errorf("restore the previous spec: %w", rerr)))
		}
		rec.Phase = state.PhaseReady
		if rerr := e.store.PutInstance(rec); rerr != nil {
			return errors.Join(err, rollback(rerr))
		}
		return fmt.Errorf("%w (the previous spec was restored)", err)
	}
	rec.Phase = state.PhaseReady
	return e.store.PutInstance(rec)
}

func (e *Engine) destroyInstance(ctx context.Context, tenant, name string) error {
	rec, ok, err := e.store.Instance(tenant, name)
	if err != nil || !ok {
		return err
	}
	rec.Phase = state.PhaseDestroying
	if err := e.store.PutInstance(rec); err != nil {
		return err
	}
	return e.tearDown(ctx, &rec, true)
}

package engine

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kigumi/kigumi/core/state"
)

// The engine's durable writes go in one transaction per step. The writes of
// a tenant's action (record updates, and the end of each step in the
// journal) wait in the tenant's lane until the next step begins: they are
// committed with its "begin" entry, before it runs, or when the action
// ends. No side effect happens between a write and its commit, so a crash
// leaves the state database as the same crash would have left it with
// one transaction per write, only with fewer commits: a step is journaled
// before it runs, and a plugin's handle is on disk before anything else is
// done. Reads of a tenant's records commit its lane first.

// lane returns the writes waiting for tenant's next commit.
func (e *Engine) enqueue(tenant string, op state.Op) {
	e.laneMu.Lock()
	e.lanes[tenant] = append(e.lanes[tenant], op)
	e.laneMu.Unlock()
}

// flush commits the writes waiting in tenant's lane, followed by more, in
// one transaction. When it fails, none of them is written: they are
// dropped, and the error is returned.
func (e *Engine) flush(tenant string, more ...state.Op) error {
	e.laneMu.Lock()
	ops := append(e.lanes[tenant], more...)
	delete(e.lanes, tenant)
	e.laneMu.Unlock()
	if len(ops) == 0 {
		return nil
	}
	return e.store.Commit(ops...)
}

// flushAll commits the writes waiting in every lane.
func (e *Engine) flushAll() error {
	e.laneMu.Lock()
	tenants := make([]string, 0, len(e.lanes))
	for t := range e.lanes {
		tenants = append(tenants, t)
	}
	e.laneMu.Unlock()
	var errs []error
	for _, t := range tenants {
		errs = append(errs, e.flush(t))
	}
	return errors.Join(errs...)
}

// putInstance writes rec with its tenant's next commit.
func (e *Engine) putInstance(rec state.Instance) error {
	op, err := state.PutInstanceOp(rec)
	if err != nil {
		return err
	}
	e.enqueue(rec.Tenant, op)
	return nil
}

// putTenant writes rec with its next commit.
func (e *Engine) putTenant(rec state.Tenant) error {
	op, err := state.PutTenantOp(rec)
	if err != nil {
		return err
	}
	e.enqueue(rec.Name, op)
	return nil
}

// deleteInstance removes an instance record with its tenant's next commit.
func (e *Engine) deleteInstance(tenant, name string) {
	e.enqueue(tenant, state.DeleteInstanceOp(tenant, name))
}

// tenantRec reads a tenant's record, once its lane is committed.
func (e *Engine) tenantRec(name string) (state.Tenant, bool, error) {
	if err := e.flush(name); err != nil {
		return state.Tenant{}, false, err
	}
	return e.store.Tenant(name)
}

// instanceRec reads an instance's record, once its tenant's lane is
// committed.
func (e *Engine) instanceRec(tenant, name string) (state.Instance, bool, error) {
	if err := e.flush(tenant); err != nil {
		return state.Instance{}, false, err
	}
	return e.store.Instance(tenant, name)
}

// targetTenant returns the tenant of a step's target, "tenant NAME" or
// "instance TENANT/NAME" (plan.Action.Target).
func targetTenant(target string) string {
	if t, ok := strings.CutPrefix(target, "tenant "); ok {
		return t
	}
	t, _, _ := strings.Cut(strings.TrimPrefix(target, "instance "), "/")
	return t
}

// step runs fn, journaled before and after: the "begin" entry is committed
// with the writes waiting in the tenant's lane before fn runs; the end of
// the step waits in the lane for the next commit.
func (e *Engine) step(target, name string, fn func() error) error {
	tenant := targetTenant(target)
	if err := e.flush(tenant, state.RecordOp(target, name, state.EventBegin, nil)); err != nil {
		return err
	}
	if err := fn(); err != nil {
		_, instance, _ := strings.Cut(strings.TrimPrefix(target, "instance "), "/")
		e.log.Debug("step failed", "tenant", tenant, "instance", instance, "step", name, "error", err)
		e.enqueue(tenant, state.RecordOp(target, name, state.EventFailed, err))
		return fmt.Errorf("%s: %w", name, err)
	}
	e.enqueue(tenant, state.RecordOp(target, name, state.EventDone, nil))
	return nil
}

// committed runs op for tenant and commits what it left in the tenant's
// lane, whether it failed or not.
func (e *Engine) committed(tenant string, op func() error) error {
	err := op()
	if ferr := e.flush(tenant); ferr != nil {
		return errors.Join(err, ferr)
	}
	return err
}

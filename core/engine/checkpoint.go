package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

// ErrNoState is returned for an instance that has no state.
var ErrNoState = errors.New("the instance has no state")

// stateTarget returns the records of an instance with state, whose tenant
// is ready, and the StateFS that serves it.
func (e *Engine) stateTarget(ctx context.Context, tenant, instance string) (state.Tenant, state.Instance, sdk.StateFS, error) {
	if e.store == nil {
		return state.Tenant{}, state.Instance{}, nil, fmt.Errorf("tenant %q: %w", tenant, ErrUnknownTenant)
	}
	ten, ok, err := e.tenantRec(tenant)
	if err != nil {
		return ten, state.Instance{}, nil, err
	}
	if !ok {
		return ten, state.Instance{}, nil, fmt.Errorf("tenant %q: %w", tenant, ErrUnknownTenant)
	}
	rec, ok, err := e.instanceRec(tenant, instance)
	if err != nil {
		return ten, rec, nil, err
	}
	if !ok {
		return ten, rec, nil, fmt.Errorf("instance %s/%s: %w", tenant, instance, ErrUnknownInstance)
	}
	if rec.StateHandle == nil {
		return ten, rec, nil, fmt.Errorf("instance %s/%s (phase %s): %w", tenant, instance, rec.Phase, ErrNoState)
	}
	fs, err := e.stateFS(ctx)
	return ten, rec, fs, err
}

// stateFeature fails with sdk.ErrUnsupported unless the host's StateFS
// declares feature.
func (e *Engine) stateFeature(feature string) error {
	for _, b := range e.host.Plugins {
		if b.Kind != sdk.KindStateFS {
			continue
		}
		e.mu.Lock()
		c, ok := e.configs[key(sdk.KindStateFS, b.Name)]
		e.mu.Unlock()
		if ok && c.info.Capabilities.Has(feature) {
			return nil
		}
		return fmt.Errorf("statefs %q does not implement %s: %w", b.Name, feature, sdk.ErrUnsupported)
	}
	return fmt.Errorf("the host spec declares no statefs plugin: %w", sdk.ErrInvalid)
}

// StateHash returns the Merkle root of an instance's state.
func (e *Engine) StateHash(ctx context.Context, tenant, instance string) ([]byte, error) {
	_, rec, fs, err := e.stateTarget(ctx, tenant, instance)
	if err != nil {
		return nil, err
	}
	return fs.Hash(ctx, *rec.StateHandle)
}

// StateUsage returns an instance's use of its state quotas.
func (e *Engine) StateUsage(ctx context.Context, tenant, instance string) (sdk.Usage, error) {
	_, rec, fs, err := e.stateTarget(ctx, tenant, instance)
	if err != nil {
		return sdk.Usage{}, err
	}
	return fs.Usage(ctx, *rec.StateHandle)
}

// FreezeTimeout bounds the wait for an instance's processes to freeze.
const FreezeTimeout = 10 * time.Second

// Checkpoint snapshots an instance's state under name. The instance's
// processes are frozen (the cgroup freezer) while the StateFS copies the
// state, so that the copy is of one moment, and thawed after, whether the
// checkpoint was made or not.
func (e *Engine) Checkpoint(ctx context.Context, tenant, instance, name string) (sdk.Checkpoint, error) {
	if err := sdk.CheckCheckpointName(name); err != nil {
		return sdk.Checkpoint{}, err
	}
	_, rec, fs, err := e.stateTarget(ctx, tenant, instance)
	if err == nil {
		err = e.stateFeature(sdk.FeatureCheckpoint)
	}
	if err != nil {
		return sdk.Checkpoint{}, err
	}
	thaw := func() error { return nil }
	if rec.Cgroup.Path != "" && e.isolation != nil {
		fctx, cancel := context.WithTimeout(ctx, FreezeTimeout)
		thaw, err = e.isolation.FreezeInstance(fctx, tenant, instance)
		cancel()
		if err != nil {
			return sdk.Checkpoint{}, fmt.Errorf("freeze %s for its checkpoint: %w", rec.Key(), err)
		}
	}
	cp, err := fs.Checkpoint(ctx, *rec.StateHandle, name)
	if terr := thaw(); terr != nil {
		err = errors.Join(err, fmt.Errorf("thaw %s after its checkpoint: %w", rec.Key(), terr))
	}
	return cp, err
}

// Checkpoints lists an instance's checkpoints, oldest first.
func (e *Engine) Checkpoints(ctx context.Context, tenant, instance string) ([]sdk.Checkpoint, error) {
	_, rec, fs, err := e.stateTarget(ctx, tenant, instance)
	if err == nil {
		err = e.stateFeature(sdk.FeatureCheckpoint)
	}
	if err != nil {
		return nil, err
	}
	list, err := fs.Checkpoints(ctx, *rec.StateHandle)
	if list == nil {
		list = []sdk.Checkpoint{}
	}
	return list, err
}

// checkpoint returns the checkpoint name of the state rec, failing with
// sdk.ErrNotFound when there is none.
func checkpoint(ctx context.Context, fs sdk.StateFS, rec state.Instance, name string) (sdk.Checkpoint, error) {
	list, err := fs.Checkpoints(ctx, *rec.StateHandle)
	if err != nil {
		return sdk.Checkpoint{}, err
	}
	for _, c := range list {
		if c.Name == name {
			return c, nil
		}
	}
	return sdk.Checkpoint{}, fmt.Errorf("instance %s has no checkpoint %q: %w", rec.Key(), name, sdk.ErrNotFound)
}

// Rollback returns an instance's state to its checkpoint name. A running
// workload is stopped first (gracefully, up to StopTimeout) and started
// afresh on the rolled-back state; a workload that is not running (held
// by an operator, exited) is left as it is. The checkpoint is looked up
// before anything is stopped. The StateFS swaps the state in whole or not
// at all: when the rollback fails, the workload is started again on the
// old state and the error returned.
func (e *Engine) Rollback(ctx context.Context, tenant, instance, name string) error {
	return e.committed(tenant, func() error { return e.rollback(ctx, tenant, instance, name) })
}

func (e *Engine) rollback(ctx context.Context, tenant, instance, name string) error {
	if err := sdk.CheckCheckpointName(name); err != nil {
		return err
	}
	ten, rec, fs, err := e.stateTarget(ctx, tenant, instance)
	if err == nil {
		err = e.stateFeature(sdk.FeatureCheckpoint)
	}
	if err != nil {
		return err
	}
	if rec.Phase != state.PhaseReady {
		return fmt.Errorf("instance %s is %s, not ready: %w", rec.Key(), rec.Phase, sdk.ErrInvalid)
	}
	if _, err := checkpoint(ctx, fs, rec, name); err != nil {
		return err
	}
	target := "instance " + rec.Key()
	running := false
	if rec.RuntimeHandle != nil {
		rt, err := e.runtime(ctx, rec.Spec.Runtime)
		if err != nil {
			return err
		}
		st, err := rt.Inspect(ctx, *rec.RuntimeHandle)
		if err != nil && !errors.Is(err, sdk.ErrNotFound) {
			return err
		}
		if running = err == nil && st.State == sdk.StateRunning; running {
			if err := e.step(target, "runtime.stop", func() error {
				return ignoreNotFound(rt.Stop(ctx, *rec.RuntimeHandle, StopTimeout))
			}); err != nil {
				return err
			}
		}
	}
	err = e.step(target, "statefs.rollback", func() error { return fs.Rollback(ctx, *rec.StateHandle, name) })
	if running {
		// Started again whether the rollback worked or not: on the
		// checkpoint's state, or on the old one.
		err = errors.Join(err, e.freshWorkload(ctx, ten, rec))
	}
	return err
}

// MountCheckpoint mounts an instance's checkpoint read-only next to its
// state, and returns the mount.
func (e *Engine) MountCheckpoint(ctx context.Context, tenant, instance, name string) (sdk.Mount, error) {
	cm, rec, err := e.checkpointMounter(ctx, tenant, instance, name)
	if err != nil {
		return sdk.Mount{}, err
	}
	return cm.MountCheckpoint(ctx, *rec.StateHandle, name)
}

// UnmountCheckpoint unmounts an instance's checkpoint.
func (e *Engine) UnmountCheckpoint(ctx context.Context, tenant, instance, name string) error {
	cm, rec, err := e.checkpointMounter(ctx, tenant, instance, name)
	if err != nil {
		return err
	}
	return cm.UnmountCheckpoint(ctx, *rec.StateHandle, name)
}

func (e *Engine) checkpointMounter(ctx context.Context, tenant, instance, name string) (sdk.CheckpointMounter, state.Instance, error) {
	if err := sdk.CheckCheckpointName(name); err != nil {
		return nil, state.Instance{}, err
	}
	_, rec, fs, err := e.stateTarget(ctx, tenant, instance)
	if err == nil {
		err = e.stateFeature(sdk.FeatureCheckpointMount)
	}
	if err != nil {
		return nil, rec, err
	}
	cm, ok := fs.(sdk.CheckpointMounter)
	if !ok {
		return nil, rec, fmt.Errorf("the statefs client does not mount checkpoints: %w", sdk.ErrUnsupported)
	}
	return cm, rec, nil
}

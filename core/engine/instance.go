package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kigumi/kigumi/core/fstree"
	"github.com/kigumi/kigumi/core/fusemount"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
	"github.com/kigumi/kigumi/core/stateseed"
)

// bringUp makes whatever the instance record lacks: its cgroup, its state and
// its running workload, recording each handle as soon as it exists. A
// recorded workload is adopted if it still runs the spec being applied.
// When resume is set, a workload an interrupted apply may have started
// without recording it is swept away first, with everything in its cgroup.
func (e *Engine) bringUp(ctx context.Context, ten state.Tenant, rec *state.Instance, resume bool) error {
	target := "instance " + rec.Key()
	rt, err := e.runtime(ctx, rec.Spec.Runtime)
	if err != nil {
		return err
	}
	if rec.RuntimeHandle == nil && resume {
		if err := e.step(target, "isolation.sweep", func() error {
			return e.isolation.RemoveInstance(ctx, rec.Tenant, rec.Name)
		}); err != nil {
			return err
		}
	}
	if err := e.step(target, "isolation.instance", func() error {
		cg, err := e.isolation.EnsureInstance(ctx, rec.Tenant, rec.Name, tenantLimits(rec.Spec.Resources))
		rec.Cgroup = cg
		return err
	}); err != nil {
		return err
	}
	if err := e.putInstance(*rec); err != nil {
		return err
	}
	if rec.Spec.StateBytes > 0 {
		if err := e.bringUpState(ctx, ten, rec); err != nil {
			return err
		}
	}
	tenantHandle, err := e.prepareTenant(ctx, rt, ten.Name, rec.Spec.Runtime)
	if err != nil {
		return err
	}
	if rec.RuntimeHandle != nil {
		adopted, err := e.adopt(ctx, rt, rec)
		if err != nil {
			return err
		}
		if !adopted {
			if err := e.start(ctx, rt, ten, tenantHandle, rec); err != nil {
				return err
			}
		}
	} else if err := e.start(ctx, rt, ten, tenantHandle, rec); err != nil {
		return err
	}
	// An update that dropped the state drops it once the new workload runs.
	if rec.Spec.StateBytes == 0 && rec.StateHandle != nil {
		return e.dropState(ctx, rec)
	}
	return nil
}

// prepareTenant has the runtime name prepare the tenant, when it declares
// the tenant lifecycle, and records the tenant's handle. PrepareTenant is
// idempotent, so it is called before every start: a runtime that lost the
// tenant (its helper died) prepares it again.
func (e *Engine) prepareTenant(ctx context.Context, rt sdk.Runtime, tenantName, runtime string) (sdk.Handle, error) {
	if !e.runtimeInfo(runtime).Capabilities.Has(sdk.FeatureTenantLifecycle) {
		return sdk.Handle{}, nil
	}
	ten, ok, err := e.tenantRec(tenantName)
	if err != nil {
		return sdk.Handle{}, err
	}
	if !ok {
		return sdk.Handle{}, fmt.Errorf("tenant %q: %w", tenantName, ErrUnknownTenant)
	}
	var h sdk.Handle
	err = e.step("tenant "+tenantName, "runtime.prepare_tenant", func() error {
		var err error
		h, err = rt.PrepareTenant(ctx, &sdk.TenantRequest{
			Tenant: tenantName, User: ten.User, Cgroup: ten.Cgroup,
			RunDir: e.tenantRunDir(tenantName, runtime), Resources: ten.Limits,
		})
		return err
	})
	if err != nil {
		return sdk.Handle{}, err
	}
	if old, ok := ten.RuntimeHandles[runtime]; ok && old.Version == h.Version && string(old.Data) == string(h.Data) {
		return h, nil
	}
	if ten.RuntimeHandles == nil {
		ten.RuntimeHandles = map[string]sdk.Handle{}
	}
	ten.RuntimeHandles[runtime] = h
	return h, e.putTenant(ten)
}

// releaseTenant has every runtime that prepared the tenant release it,
// forgetting each handle once released.
func (e *Engine) releaseTenant(ctx context.Context, ten *state.Tenant) error {
	for _, name := range slices.Sorted(maps.Keys(ten.RuntimeHandles)) {
		err := e.step("tenant "+ten.Name, "runtime.release_tenant", func() error {
			rt, err := e.runtime(ctx, name)
			if err != nil {
				return err
			}
			return ignoreNotFound(rt.ReleaseTenant(ctx, ten.RuntimeHandles[name]))
		})
		if err != nil {
			return err
		}
		delete(ten.RuntimeHandles, name)
		if err := e.putTenant(*ten); err != nil {
			return err
		}
	}
	return nil
}

// mounts are the mounts the runtime gets: the instance's state at its
// guest path (sdk.StateTarget in records older than guest paths),
// read-only unless the spec grants state.write, then the spec's read-only
// mounts.
func mounts(rec *state.Instance) []sdk.Mount {
	var out []sdk.Mount
	// State an update dropped is still mounted until the new workload
	// runs, but not in it.
	if rec.Spec.StateBytes > 0 && rec.StateMount.Source != "" {
		m := rec.StateMount
		m.Target, m.State = cmp.Or(rec.Spec.StateGuest, sdk.StateTarget), true
		m.ReadOnly = m.ReadOnly || !rec.Spec.Permissions.Has(sdk.PermStateWrite)
		out = append(out, m)
	}
	return append(out, rec.Spec.Mounts...)
}

// start starts the instance's workload and records its handle.
func (e *Engine) start(ctx context.Context, rt sdk.Runtime, ten state.Tenant, tenantHandle sdk.Handle, rec *state.Instance) error {
	// The records are on disk before the run directory is touched.
	if err := e.flush(rec.Tenant); err != nil {
		return err
	}
	if err := freshDir(ctx, rec.RunDir); err != nil {
		return fmt.Errorf("create run directory: %w", err)
	}
	req := &sdk.StartRequest{
		Instance:    sdk.Instance{Tenant: rec.Tenant, Name: rec.Name},
		User:        ten.User,
		Cgroup:      rec.Cgroup,
		Artifact:    sdk.Artifact{Module: rec.Spec.Module, Image: rec.Spec.Image, Archive: rec.Spec.Archive, Digest: artifactDigest(rec.Spec)},
		Args:        rec.Spec.Args,
		Env:         rec.Spec.Env,
		Resources:   rec.Spec.Resources,
		Permissions: rec.Spec.Permissions,
		Mounts:      mounts(rec),
		Stdin:       rec.Spec.Stdin,
		Settings:    rec.Spec.Settings,
		Tenant:      tenantHandle,
		RunDir:      rec.RunDir,
	}
	if err := e.step("instance "+rec.Key(), "runtime.start", func() error {
		oom := oomKills(rec.Cgroup)
		// The time before Start: a workload that ends before Start
		// returns has an exit time after it, so refresh records that
		// exit once, not again each time.
		started := time.Now().UTC()
		sctx := ctx
		if e.runtimeInfo(rec.Spec.Runtime).Capabilities.Has(sdk.FeatureProgress) {
			sctx = sdk.WithProgress(ctx, func(p sdk.Progress) { e.hooks.Progress(rec.Tenant, rec.Name, p) })
		}
		h, err := rt.Start(sctx, req)
		if err == nil {
			rec.RuntimeHandle, rec.RuntimeSpecHash = &h, rec.SpecHash
			rec.Run.StartedAt, rec.Run.OOMKills = started, oom
			e.markRecovered(rec.Spec.Runtime, rt, rec.Key(), true) // it knows what it started
		}
		return err
	}); err != nil {
		return err
	}
	return e.putInstance(*rec)
}

// artifactDigest is the digest the runtime must verify: the spec's pin, or
// for a module the content digest the plan was made with.
func artifactDigest(s state.InstanceSpec) string {
	if s.Digest != "" {
		return s.Digest
	}
	return s.ModuleDigest
}

// adopt re-attaches to a recorded workload. It reports true when the
// workload is running the spec being applied and is kept; otherwise it
// destroys what is left of it.
func (e *Engine) adopt(ctx context.Context, rt sdk.Runtime, rec *state.Instance) (bool, error) {
	target := "instance " + rec.Key()
	var running bool
	err := e.step(target, "runtime.recover", func() error {
		if rec.RuntimeSpecHash != rec.SpecHash {
			return nil // it runs another spec: replace it
		}
		h, err := rt.Recover(ctx, *rec.RuntimeHandle)
		if errors.Is(err, sdk.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		rec.RuntimeHandle = &h
		st, err := rt.Inspect(ctx, h)
		if err != nil {
			return err
		}
		running = st.State == sdk.StateRunning
		return nil
	})
	if err != nil || running {
		return running, err
	}
	if err := e.step(target, "runtime.destroy", func() error { return e.runtimeDestroy(ctx, *rec) }); err != nil {
		return false, err
	}
	rec.RuntimeHandle = nil
	return false, e.putInstance(*rec)
}

func (e *Engine) bringUpState(ctx context.Context, ten state.Tenant, rec *state.Instance) error {
	target := "instance " + rec.Key()
	// The tenant's create made the state parent; it is made again only if
	// it is not there as made (a root-owned directory of mode 0700 under
	// the root-only state directory, which no tenant can change).
	if parent := e.stateParent(rec.Tenant); !isDirMode(parent, 0o700) {
		if err := e.step(target, "state.parent", func() error { return mkdirMode(parent, 0o700) }); err != nil {
			return err
		}
	}
	fs, err := e.stateFS(ctx)
	if err != nil {
		return err
	}
	if rec.StateHandle != nil {
		if err := e.step(target, "statefs.recover", func() error {
			h, err := fs.Recover(ctx, *rec.StateHandle)
			if errors.Is(err, sdk.ErrNotFound) {
				rec.StateHandle = nil
				return nil
			}
			if err == nil {
				rec.StateHandle = &h
			}
			return err
		}); err != nil {
			return err
		}
	}
	if rec.StateHandle == nil {
		if err := e.step(target, "statefs.provision", func() error {
			h, err := fs.Provision(ctx, &sdk.ProvisionRequest{
				Instance:  sdk.Instance{Tenant: rec.Tenant, Name: rec.Name},
				User:      ten.User,
				SizeBytes: rec.Spec.StateBytes,
				Dir:       e.stateDir(rec.Tenant, rec.Name),
				IO:        rec.Spec.Resources.IO,
			})
			if err == nil {
				rec.StateHandle = &h
				rec.SeedPending = rec.Spec.StateSeed != ""
			}
			return err
		}); err != nil {
			return err
		}
		if err := e.putInstance(*rec); err != nil {
			return err
		}
	}
	if err := e.step(target, "statefs.mount", func() error {
		m, err := fs.Mount(ctx, *rec.StateHandle)
		rec.StateMount = m
		if err == nil {
			err = e.putInstance(*rec)
		}
		return err
	}); err != nil || !rec.SeedPending {
		return err
	}
	// The workload has not run on this state yet: a seed that a crash
	// cut short is made again from scratch.
	return e.step(target, "state.seed", func() error {
		if err := stateseed.Fill(ctx, rec.StateMount.Source, rec.Spec.StateSeed, int(ten.User.UID), int(ten.User.GID), rec.Spec.StateBytes); err != nil {
			return err
		}
		rec.SeedPending = false
		return e.putInstance(*rec)
	})
}

// tearDown removes an instance's workload and, when full, everything else
// of it and its record. Each piece is removed even if another fails; the
// record stays until all are gone, so a later apply finishes the job.
func (e *Engine) tearDown(ctx context.Context, rec *state.Instance, full bool) error {
	target := "instance " + rec.Key()
	var errs []error
	if rec.RuntimeHandle != nil {
		err := e.step(target, "runtime.destroy", func() error { return e.runtimeDestroy(ctx, *rec) })
		if err == nil {
			rec.RuntimeHandle = nil
			err = e.putInstance(*rec)
		}
		errs = append(errs, err)
	}
	if !full {
		return errors.Join(errs...)
	}
	errs = append(errs, e.step(target, "isolation.instance.remove", func() error {
		return e.isolation.RemoveInstance(ctx, rec.Tenant, rec.Name)
	}))
	if rec.StateHandle != nil {
		errs = append(errs, e.dropState(ctx, rec))
	}
	// The records are on disk before anything else is removed.
	if err := e.flush(rec.Tenant); err != nil {
		return errors.Join(append(errs, err)...)
	}
	// The engine chose the state directory: whatever a crash left there
	// before its handle was recorded goes too. A mount left in it (its
	// server gone) is cleared first, without looking into it: removing
	// would hang on it.
	if err := fusemount.Clear(ctx, e.stateDir(rec.Tenant, rec.Name)); err != nil {
		errs = append(errs, fmt.Errorf("clear mounts in the state directory: %w", err))
	}
	if err := fstree.RemoveAll(ctx, e.stateDir(rec.Tenant, rec.Name)); err != nil {
		errs = append(errs, fmt.Errorf("remove state directory: %w", err))
	}
	if err := fstree.RemoveAll(ctx, rec.RunDir); err != nil {
		errs = append(errs, fmt.Errorf("remove run directory: %w", err))
	}
	// The run directory's parent goes with the tenant's last instance.
	_ = os.Remove(filepath.Dir(rec.RunDir))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	e.deleteInstance(rec.Tenant, rec.Name)
	return nil
}

func (e *Engine) runtimeDestroy(ctx context.Context, rec state.Instance) error {
	rt, err := e.runtime(ctx, rec.Spec.Runtime)
	if err != nil {
		return err
	}
	if err := ignoreNotFound(rt.Destroy(ctx, *rec.RuntimeHandle)); err != nil {
		return err
	}
	e.markRecovered(rec.Spec.Runtime, rt, rec.Key(), false)
	return nil
}

// dropState unmounts and deprovisions the instance's state and forgets its
// handle.
func (e *Engine) dropState(ctx context.Context, rec *state.Instance) error {
	fs, err := e.stateFS(ctx)
	if err != nil {
		return err
	}
	target := "instance " + rec.Key()
	err = e.step(target, "statefs.unmount", func() error { return ignoreNotFound(fs.Unmount(ctx, *rec.StateHandle)) })
	if err == nil {
		err = e.step(target, "statefs.deprovision", func() error { return ignoreNotFound(fs.Deprovision(ctx, *rec.StateHandle)) })
	}
	if err != nil {
		return err
	}
	rec.StateHandle, rec.StateMount = nil, sdk.Mount{}
	return e.putInstance(*rec)
}

// ignoreNotFound treats "already gone" as done.
func ignoreNotFound(err error) error {
	if errors.Is(err, sdk.ErrNotFound) {
		return nil
	}
	return err
}

// freshDir makes dir an empty directory of mode 0700, its parents made as
// needed: a new directory when there is none, which is the common case of
// a create and costs one mkdir, else what was there is removed first.
func freshDir(ctx context.Context, dir string) error {
	err := os.Mkdir(dir, 0o700)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
			return err
		}
	case errors.Is(err, fs.ErrExist):
		if err := fstree.RemoveAll(ctx, dir); err != nil {
			return fmt.Errorf("clear %s: %w", dir, err)
		}
	default:
		return err
	}
	return os.Mkdir(dir, 0o700)
}

// isDirMode reports whether path is a directory, not a symlink, with the
// permission bits mode.
func isDirMode(path string, mode os.FileMode) bool {
	fi, err := os.Lstat(path)
	return err == nil && fi.IsDir() && fi.Mode().Perm() == mode
}

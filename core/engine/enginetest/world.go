// Package enginetest provides a fake host for tests and benchmarks of the
// engine and of what drives it: an in-process runtime, StateFS and tenant
// isolation, so that the engine itself is what is exercised and measured.
package enginetest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/tenant"
)

// World is a fake host for the engine: a runtime, a StateFS and tenant
// isolation, all in memory, with fault injection. It implements
// engine.Plugins and engine.Isolation. The fields are guarded by Mu.
type World struct {
	Mu      sync.Mutex
	Live    map[string]int // instance key -> workload generation
	Starts  int
	States  map[string]bool // instance key -> provisioned
	Tenants map[string]bool
	Cgroups map[string]bool
	// Limits are the limits each tenant's and instance's cgroup was
	// given last, by "tenant" or "tenant/instance".
	Limits map[string]tenant.Limits
	// StateIO are the I/O rates each state was provisioned with.
	StateIO      map[string]sdk.IOLimits
	Configs      int
	FailStart    error                       // returned by the next Start
	CrashAt      string                      // "start": the apply goroutine dies after Start, before recording
	OnStart      func(key string)            // called inside Start
	InspectState func(key string) sdk.Status // overrides Inspect's answer for instance key, when set
	rt           *runtimeClient              // the launched runtime plugin
	Dead         map[sdk.Kind]bool           // the plugin of this kind "exited"
	Prepared     map[string]bool             // tenants the runtime prepared
	LastStart    sdk.StartRequest            // the last StartRequest
	FailRemove   map[string]error            // Remove of this tenant fails
	Released     []string                    // tenants whose plugin processes were released
	Recovers     int                         // Recover calls
	// Usage is what the StateFS's Usage reports of an instance's state;
	// without an entry it fails with sdk.ErrUnsupported.
	Usage map[string]sdk.Usage
	// SlowUsage makes Usage of an instance's state block until its
	// context ends.
	SlowUsage map[string]bool
	// Checkpoints are what the StateFS lists of an instance's state.
	Checkpoints map[string][]sdk.Checkpoint
	// FailRollback is returned by the next Rollback.
	FailRollback error
	// Calls records the runtime's Stop and Start, the StateFS's Checkpoint
	// and Rollback, and the isolation's freezes, as "stop KEY", "start KEY",
	// "checkpoint KEY NAME", "rollback KEY NAME", "freeze KEY", "thaw KEY".
	Calls []string
	// StateRoot, when set, holds real state directories: Mount returns
	// StateRoot/<tenant>/<instance>, made if missing.
	StateRoot string
	// Progress are the reports each Start makes (sdk.ReportProgress).
	Progress []sdk.Progress
	// ProgressFeature makes the runtime declare sdk.FeatureProgress; it is
	// read when the engine configures the runtime.
	ProgressFeature bool
}

// NewWorld returns an empty world.
func NewWorld() *World {
	return &World{Live: map[string]int{}, States: map[string]bool{}, Tenants: map[string]bool{}, Cgroups: map[string]bool{},
		Dead: map[sdk.Kind]bool{}, Prepared: map[string]bool{}, Usage: map[string]sdk.Usage{}, SlowUsage: map[string]bool{},
		Checkpoints: map[string][]sdk.Checkpoint{}, Limits: map[string]tenant.Limits{}, StateIO: map[string]sdk.IOLimits{}}
}

type runtimeClient struct{ w *World }

// Runtime returns the runtime "wasm", relaunched if it was marked dead.
func (w *World) Runtime(_ context.Context, name string, _ pluginhost.Scope) (sdk.Runtime, error) {
	if name != "wasm" {
		return nil, fmt.Errorf("runtime %q: %w", name, sdk.ErrNotFound)
	}
	w.Mu.Lock()
	defer w.Mu.Unlock()
	if w.rt == nil || w.Dead[sdk.KindRuntime] { // (re)launch
		w.Dead[sdk.KindRuntime] = false
		w.rt = &runtimeClient{w: w}
	}
	return w.rt, nil
}

// StateFS returns the world's StateFS.
func (w *World) StateFS(context.Context, string, pluginhost.Scope) (sdk.StateFS, error) {
	return &stateClient{w}, nil
}

// Ledger fails: the world has no ledger.
func (w *World) Ledger(context.Context, string, pluginhost.Scope) (sdk.Ledger, error) {
	return nil, fmt.Errorf("no ledger: %w", sdk.ErrNotFound)
}

// Release records that a tenant's plugin processes were released.
func (w *World) Release(tenant string) error {
	w.Mu.Lock()
	defer w.Mu.Unlock()
	w.Released = append(w.Released, tenant)
	return nil
}

func (r *runtimeClient) Info(context.Context) (sdk.Info, error) {
	features := []string{sdk.FeatureTenantLifecycle, sdk.FeatureValidate}
	r.w.Mu.Lock()
	if r.w.ProgressFeature {
		features = append(features, sdk.FeatureProgress)
	}
	r.w.Mu.Unlock()
	return sdk.Info{Name: "wasm", Kind: sdk.KindRuntime, Capabilities: sdk.Capabilities{
		Features:    features,
		Permissions: []sdk.PermissionSpec{{Name: sdk.PermStateRead}, {Name: sdk.PermStateWrite}},
	}}, nil
}
func (r *runtimeClient) PrepareTenant(_ context.Context, req *sdk.TenantRequest) (sdk.Handle, error) {
	r.w.Mu.Lock()
	defer r.w.Mu.Unlock()
	r.w.Prepared[req.Tenant] = true
	return sdk.Handle{Version: 1, Data: []byte(req.Tenant)}, nil
}
func (r *runtimeClient) ReleaseTenant(_ context.Context, h sdk.Handle) error {
	r.w.Mu.Lock()
	defer r.w.Mu.Unlock()
	delete(r.w.Prepared, string(h.Data))
	return nil
}
func (r *runtimeClient) Validate(_ context.Context, req *sdk.StartRequest) error {
	if req.Artifact.Module == "/refused.wasm" {
		return sdk.InvalidAttribute("module", "not a module")
	}
	return nil
}
func (r *runtimeClient) Configure(context.Context, sdk.ConfigureRequest) error {
	r.w.Mu.Lock()
	r.w.Configs++
	r.w.Mu.Unlock()
	return nil
}

type fakeHandle struct {
	Key string
	Gen int
}

func (r *runtimeClient) Start(ctx context.Context, req *sdk.StartRequest) (sdk.Handle, error) {
	w := r.w
	w.Mu.Lock()
	reports := w.Progress
	w.Mu.Unlock()
	for _, p := range reports {
		sdk.ReportProgress(ctx, p)
	}
	w.Mu.Lock()
	if w.FailStart != nil {
		err := w.FailStart
		w.FailStart = nil
		w.Mu.Unlock()
		return sdk.Handle{}, err
	}
	key := req.Instance.String()
	w.LastStart = *req
	if string(req.Tenant.Data) != req.Instance.Tenant || !w.Prepared[req.Instance.Tenant] {
		w.Mu.Unlock()
		return sdk.Handle{}, fmt.Errorf("start %s with tenant handle %q: %w", key, req.Tenant.Data, sdk.ErrInvalid)
	}
	if _, ok := w.Live[key]; ok {
		w.Mu.Unlock()
		return sdk.Handle{}, fmt.Errorf("duplicate workload for %s", key)
	}
	w.Starts++
	w.Live[key] = w.Starts
	w.Calls = append(w.Calls, "start "+key)
	gen := w.Starts
	crash := w.CrashAt == "start"
	w.CrashAt = ""
	onStart := w.OnStart
	w.Mu.Unlock()
	if onStart != nil {
		onStart(key)
	}
	if crash {
		runtime.Goexit() // the process "dies": nothing after this runs
	}
	data, _ := json.Marshal(fakeHandle{Key: key, Gen: gen})
	return sdk.Handle{Version: 1, Data: data}, nil
}

func (r *runtimeClient) handle(h sdk.Handle) (fakeHandle, bool) {
	var fh fakeHandle
	_ = json.Unmarshal(h.Data, &fh)
	r.w.Mu.Lock()
	defer r.w.Mu.Unlock()
	return fh, r.w.Live[fh.Key] == fh.Gen
}

func (r *runtimeClient) Stop(_ context.Context, h sdk.Handle, _ time.Duration) error {
	var fh fakeHandle
	_ = json.Unmarshal(h.Data, &fh)
	r.w.Mu.Lock()
	r.w.Calls = append(r.w.Calls, "stop "+fh.Key)
	r.w.Mu.Unlock()
	return nil
}
func (r *runtimeClient) Destroy(_ context.Context, h sdk.Handle) error {
	fh, ok := r.handle(h)
	if ok {
		r.w.Mu.Lock()
		delete(r.w.Live, fh.Key)
		r.w.Mu.Unlock()
	}
	return nil
}
func (r *runtimeClient) Inspect(_ context.Context, h sdk.Handle) (sdk.Status, error) {
	fh, ok := r.handle(h)
	if !ok {
		return sdk.Status{}, sdk.ErrNotFound
	}
	if r.w.InspectState != nil {
		return r.w.InspectState(fh.Key), nil
	}
	return sdk.Status{State: sdk.StateRunning, Pid: 42}, nil
}
func (r *runtimeClient) Recover(_ context.Context, h sdk.Handle) (sdk.Handle, error) {
	r.w.Mu.Lock()
	r.w.Recovers++
	r.w.Mu.Unlock()
	if _, ok := r.handle(h); !ok {
		return sdk.Handle{}, &sdk.Error{Code: sdk.CodeNotFound, Message: "gone"}
	}
	return h, nil
}
func (r *runtimeClient) Logs(_ context.Context, h sdk.Handle, _ sdk.LogOptions, fn func([]byte) error) error {
	fh, _ := r.handle(h)
	return fn([]byte("log of " + fh.Key))
}

type stateClient struct{ w *World }

func (s *stateClient) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: "fuse", Kind: sdk.KindStateFS,
		Capabilities: sdk.Capabilities{Features: []string{sdk.FeatureUsage, sdk.FeatureCheckpoint}}}, nil
}
func (s *stateClient) Configure(context.Context, sdk.ConfigureRequest) error { return nil }
func (s *stateClient) Provision(_ context.Context, req *sdk.ProvisionRequest) (sdk.Handle, error) {
	s.w.Mu.Lock()
	defer s.w.Mu.Unlock()
	s.w.States[req.Instance.String()] = true
	s.w.StateIO[req.Instance.String()] = req.IO
	return sdk.Handle{Version: 1, Data: []byte(req.Instance.String())}, nil
}
func (s *stateClient) Mount(_ context.Context, h sdk.Handle) (sdk.Mount, error) {
	if s.w.StateRoot != "" {
		dir := filepath.Join(s.w.StateRoot, string(h.Data))
		return sdk.Mount{Source: dir, Type: sdk.MountDir}, os.MkdirAll(dir, 0o755)
	}
	return sdk.Mount{Source: "/state/" + string(h.Data), Type: sdk.MountDir}, nil
}
func (s *stateClient) Usage(ctx context.Context, h sdk.Handle) (sdk.Usage, error) {
	s.w.Mu.Lock()
	u, ok := s.w.Usage[string(h.Data)]
	slow := s.w.SlowUsage[string(h.Data)]
	s.w.Mu.Unlock()
	if slow {
		<-ctx.Done()
		return sdk.Usage{}, ctx.Err()
	}
	if !ok {
		return sdk.Usage{}, sdk.ErrUnsupported
	}
	return u, nil
}
func (s *stateClient) Checkpoint(_ context.Context, h sdk.Handle, name string) (sdk.Checkpoint, error) {
	s.w.Mu.Lock()
	defer s.w.Mu.Unlock()
	s.w.Calls = append(s.w.Calls, "checkpoint "+string(h.Data)+" "+name)
	cp := sdk.Checkpoint{Name: name}
	s.w.Checkpoints[string(h.Data)] = append(s.w.Checkpoints[string(h.Data)], cp)
	return cp, nil
}
func (s *stateClient) Checkpoints(_ context.Context, h sdk.Handle) ([]sdk.Checkpoint, error) {
	s.w.Mu.Lock()
	defer s.w.Mu.Unlock()
	return s.w.Checkpoints[string(h.Data)], nil
}
func (s *stateClient) Rollback(_ context.Context, h sdk.Handle, name string) error {
	s.w.Mu.Lock()
	defer s.w.Mu.Unlock()
	s.w.Calls = append(s.w.Calls, "rollback "+string(h.Data)+" "+name)
	err := s.w.FailRollback
	s.w.FailRollback = nil
	return err
}
func (s *stateClient) Unmount(context.Context, sdk.Handle) error        { return nil }
func (s *stateClient) Hash(context.Context, sdk.Handle) ([]byte, error) { return nil, nil }
func (s *stateClient) Recover(_ context.Context, h sdk.Handle) (sdk.Handle, error) {
	s.w.Mu.Lock()
	defer s.w.Mu.Unlock()
	if !s.w.States[string(h.Data)] {
		return sdk.Handle{}, sdk.ErrNotFound
	}
	return h, nil
}
func (s *stateClient) Deprovision(_ context.Context, h sdk.Handle) error {
	s.w.Mu.Lock()
	defer s.w.Mu.Unlock()
	delete(s.w.States, string(h.Data))
	return nil
}

// Allocate returns the lowest ids not taken.
func (w *World) Allocate(uidBase, subBase, subCount uint32, takenUID, takenSub func(uint32) bool) (uint32, uint32, error) {
	uid, sub := uidBase, subBase
	for takenUID(uid) {
		uid++
	}
	for takenSub(sub) {
		sub += subCount
	}
	return uid, sub, nil
}

// Ensure records the tenant.
func (w *World) Ensure(_ context.Context, s tenant.Spec) (*tenant.Tenant, error) {
	w.Mu.Lock()
	defer w.Mu.Unlock()
	w.Tenants[s.Tenant] = true
	w.Limits[s.Tenant] = s.Limits
	return &tenant.Tenant{
		User:   sdk.User{Name: "kg-" + s.Tenant, UID: s.UID, GID: s.UID, SubUID: s.SubIDStart, SubGID: s.SubIDStart, Count: s.SubIDCount, Home: s.Home},
		Cgroup: sdk.Cgroup{Path: "/kigumi/" + s.Tenant},
	}, nil
}

// Remove forgets the tenant, unless FailRemove says it fails.
func (w *World) Remove(_ context.Context, name, _ string) error {
	w.Mu.Lock()
	defer w.Mu.Unlock()
	if err := w.FailRemove[name]; err != nil {
		return err
	}
	delete(w.Tenants, name)
	return nil
}

// EnsureInstance records the instance's cgroup.
func (w *World) EnsureInstance(_ context.Context, ten, instance string, l tenant.Limits) (sdk.Cgroup, error) {
	w.Mu.Lock()
	defer w.Mu.Unlock()
	w.Cgroups[ten+"/"+instance] = true
	w.Limits[ten+"/"+instance] = l
	return sdk.Cgroup{Path: "/kigumi/" + ten + "/" + instance}, nil
}

// RemoveInstance kills whatever runs in the instance's cgroup, as the real
// isolation does.
func (w *World) RemoveInstance(_ context.Context, tenant, instance string) error {
	w.Mu.Lock()
	defer w.Mu.Unlock()
	delete(w.Cgroups, tenant+"/"+instance)
	delete(w.Live, tenant+"/"+instance)
	return nil
}

// FreezeInstance records the freeze of an instance's cgroup, which must
// exist, and returns the thaw, which records itself.
func (w *World) FreezeInstance(_ context.Context, tenant, instance string) (func() error, error) {
	w.Mu.Lock()
	defer w.Mu.Unlock()
	key := tenant + "/" + instance
	if !w.Cgroups[key] {
		return nil, fmt.Errorf("freeze %s: no cgroup", key)
	}
	w.Calls = append(w.Calls, "freeze "+key)
	return func() error {
		w.Mu.Lock()
		defer w.Mu.Unlock()
		w.Calls = append(w.Calls, "thaw "+key)
		return nil
	}, nil
}

// Snapshot returns the keys of the live workloads, the provisioned states,
// the tenants and the instance cgroups, each sorted.
func (w *World) Snapshot() (live, states, tenants, cgroups []string) {
	w.Mu.Lock()
	defer w.Mu.Unlock()
	keys := func(m map[string]bool) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	for k := range w.Live {
		live = append(live, k)
	}
	slices.Sort(live)
	return live, keys(w.States), keys(w.Tenants), keys(w.Cgroups)
}

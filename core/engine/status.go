package engine

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

// TenantStatus is what `kigumi status` reports of a tenant.
type TenantStatus struct {
	Name  string      `json:"name"`
	Phase state.Phase `json:"phase"`
	// Source is the desired-state source that owns the tenant.
	Source    string           `json:"source"`
	User      string           `json:"user"`
	UID       uint32           `json:"uid"`
	Home      string           `json:"home"`
	Cgroup    string           `json:"cgroup,omitempty"`
	Instances []InstanceStatus `json:"instances"`
}

// InstanceStatus is what `kigumi status` reports of an instance.
type InstanceStatus struct {
	Name     string      `json:"name"`
	Phase    state.Phase `json:"phase"`
	Runtime  string      `json:"runtime"`
	State    sdk.State   `json:"state"`
	Pid      int         `json:"pid,omitempty"`
	ExitCode int         `json:"exit_code"`
	Message  string      `json:"message,omitempty"`
	StateDir string      `json:"state_dir,omitempty"`
	LogDir   string      `json:"log_dir"`
	// Restart is the restart policy; Restarts counts restarts by it.
	Restart  string `json:"restart"`
	Restarts int    `json:"restarts"`
	// Held is set while an operator holds the instance stopped.
	Held bool `json:"held,omitempty"`
	// LastExit is how the last workload ended: exit code, cause (exit,
	// signal, oom, limit, lost) and when.
	LastExit *state.Exit `json:"last_exit,omitempty"`
	// StateUsage is the state's use against its quotas; nil for an
	// instance without state, or when StateError says why it is unknown.
	StateUsage *StateUsage `json:"state_usage,omitempty"`
	StateError string      `json:"state_error,omitempty"`
}

// StateUsage is an instance's use of its state quotas (sdk.Usage); a
// limit of 0 means none.
type StateUsage struct {
	Bytes       int64 `json:"bytes"`
	BytesLimit  int64 `json:"bytes_limit"`
	Inodes      int64 `json:"inodes"`
	InodesLimit int64 `json:"inodes_limit"`
}

// Status reports every recorded tenant and instance, asking the runtimes
// how each instance is doing and the StateFS how much of its quotas each
// state uses: one Inspect and one Usage call per instance, the Usage calls
// usageWorkers at a time, while the Inspect calls run. A plugin's failure
// is reported on its instance.
func (e *Engine) Status(ctx context.Context) ([]TenantStatus, error) {
	tenants, instances, err := e.records(ctx)
	if err != nil {
		return nil, err
	}
	usages := e.stateUsages(ctx, instances)
	statuses := make([]InstanceStatus, len(instances))
	for n, i := range instances {
		statuses[n] = e.instanceStatus(ctx, i)
	}
	usages.wait()
	out := make([]TenantStatus, 0, len(tenants))
	for _, t := range tenants {
		ts := TenantStatus{Name: t.Name, Phase: t.Phase, Source: t.Source, User: t.User.Name, UID: t.User.UID, Home: t.User.Home, Cgroup: t.Cgroup.Path,
			Instances: []InstanceStatus{}}
		for n, i := range instances {
			if i.Tenant == t.Name {
				st := statuses[n]
				st.StateUsage, st.StateError = usages.usage[n], usages.err[n]
				ts.Instances = append(ts.Instances, st)
			}
		}
		out = append(out, ts)
	}
	return out, nil
}

// usageWorkers is how many Usage calls Status makes at once.
const usageWorkers = 8

// usages are the state usages of instances, by index, being asked for.
type usages struct {
	wg    sync.WaitGroup
	usage []*StateUsage
	err   []string
}

func (u *usages) wait() { u.wg.Wait() }

// stateUsages starts asking the StateFS for the usage of each instance
// with state, usageWorkers calls at a time.
func (e *Engine) stateUsages(ctx context.Context, instances []state.Instance) *usages {
	u := &usages{usage: make([]*StateUsage, len(instances)), err: make([]string, len(instances))}
	var todo []int
	for n, i := range instances {
		if i.StateHandle != nil {
			todo = append(todo, n)
		}
	}
	if len(todo) == 0 {
		return u
	}
	fs, fsErr := e.stateFS(ctx)
	next := make(chan int, len(todo))
	for _, n := range todo {
		next <- n
	}
	close(next)
	for range min(usageWorkers, len(todo)) {
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			for n := range next {
				u.usage[n], u.err[n] = stateUsage(ctx, fs, fsErr, *instances[n].StateHandle)
			}
		}()
	}
	return u
}

func (e *Engine) instanceStatus(ctx context.Context, i state.Instance) InstanceStatus {
	st := InstanceStatus{Name: i.Name, Phase: i.Phase, Runtime: i.Spec.Runtime, State: sdk.StateUnknown,
		StateDir: i.StateMount.Source, LogDir: i.RunDir, Restart: i.Spec.Restart, Restarts: i.Run.Restarts, Held: i.Held, LastExit: i.Run.LastExit}
	if i.RuntimeHandle == nil {
		st.Message = "no workload recorded"
		return st
	}
	rt, err := e.runtime(ctx, i.Spec.Runtime)
	if err == nil {
		var s sdk.Status
		if s, err = rt.Inspect(ctx, *i.RuntimeHandle); err == nil {
			st.State, st.Pid, st.ExitCode, st.Message = s.State, s.Pid, s.ExitCode, s.Message
		}
	}
	if err != nil {
		st.Message = err.Error()
	}
	return st
}

// UsageTimeout bounds the Usage call of one instance in Status. A FUSE
// state answers from its helper's counters at once; a plain directory is
// scanned, which a tenant can make slow (a deep tree), so that status stays
// fast and reports the state's use as unknown instead.
const UsageTimeout = 2 * time.Second

// stateUsage asks fs (or reports fsErr, the error of getting it) for the
// usage of the state h, within UsageTimeout.
func stateUsage(ctx context.Context, fs sdk.StateFS, fsErr error, h sdk.Handle) (*StateUsage, string) {
	if fsErr != nil {
		return nil, fsErr.Error()
	}
	uctx, cancel := context.WithTimeout(ctx, UsageTimeout)
	defer cancel()
	u, err := fs.Usage(uctx, h)
	if err != nil && ctx.Err() == nil && uctx.Err() != nil {
		return nil, fmt.Sprintf("counting the state's use took longer than %s", UsageTimeout)
	}
	if err != nil {
		return nil, err.Error()
	}
	return &StateUsage{Bytes: u.Bytes, BytesLimit: u.BytesLimit, Inodes: u.Inodes, InodesLimit: u.InodesLimit}, ""
}

// Logs streams an instance's output into fn.
func (e *Engine) Logs(ctx context.Context, tenant, instance string, opts sdk.LogOptions, fn func([]byte) error) error {
	var rec state.Instance
	ok := false
	if e.store != nil {
		var err error
		if rec, ok, err = e.store.Instance(tenant, instance); err != nil {
			return err
		}
	}
	if !ok {
		return fmt.Errorf("instance %s/%s: %w", tenant, instance, ErrUnknownInstance)
	}
	if rec.RuntimeHandle == nil {
		return fmt.Errorf("instance %s/%s has no workload (phase %s)", tenant, instance, rec.Phase)
	}
	rt, err := e.runtime(ctx, rec.Spec.Runtime)
	if err != nil {
		return err
	}
	return rt.Logs(ctx, *rec.RuntimeHandle, opts, fn)
}

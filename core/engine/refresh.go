package engine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

// CauseLost is the exit cause of a workload its runtime no longer knows
// (the sandbox vanished, or the host rebooted).
const CauseLost = "lost"

// refresh asks the runtimes how each recorded workload of tenants is doing,
// before a diff. A workload found ended for the first time has its exit
// recorded (and reported to the Exited hooks). It returns what it found
// and the instance records, updated. An engine without plugins (one that
// only plans from the records) refreshes nothing: it sees no drift.
func (e *Engine) refresh(ctx context.Context, tenants []state.Tenant, instances []state.Instance) (*plan.Refresh, []state.Instance, error) {
	if e.plugins == nil {
		return nil, instances, ctx.Err()
	}
	r := &plan.Refresh{Now: time.Now(), Workloads: map[string]plan.Workload{}}
	for _, t := range tenants {
		e.hooks.PreRefresh(t.Name)
		for n := range instances {
			rec := &instances[n]
			if rec.Tenant != t.Name || rec.Phase != state.PhaseReady || rec.RuntimeHandle == nil {
				continue
			}
			w, ok := e.inspect(ctx, rec)
			if !ok {
				continue
			}
			r.Workloads[rec.Key()] = w
			if w.State == sdk.StateRunning || w.State == sdk.StateUnknown {
				continue
			}
			if last := rec.Run.LastExit; last == nil || last.At.Before(rec.Run.StartedAt) {
				if err := e.recordExit(rec, w.Exit); err != nil {
					return nil, nil, err
				}
				e.hooks.Exited(rec.Tenant, rec.Name, w.Exit)
			}
			w.Exit = *rec.Run.LastExit
			r.Workloads[rec.Key()] = w
		}
		e.hooks.PostRefresh(t.Name, r)
	}
	return r, instances, ctx.Err()
}

// inspect reports what runs of rec's workload; ok is false when its runtime
// could not say (it is then left as recorded). Each plugin process first
// recovers the instance, once (it then watches it, if it can), and a
// runtime that lost track of the handle is asked to recover it again.
func (e *Engine) inspect(ctx context.Context, rec *state.Instance) (plan.Workload, bool) {
	rt, err := e.runtime(ctx, rec.Spec.Runtime)
	if err != nil {
		e.log.Warn("refresh: runtime unavailable", "tenant", rec.Tenant, "instance", rec.Name, "error", err)
		return plan.Workload{}, false
	}
	if !e.recovered(rec.Spec.Runtime, rt, rec.Key()) {
		h, err := rt.Recover(ctx, *rec.RuntimeHandle)
		switch {
		case err == nil:
			e.markRecovered(rec.Spec.Runtime, rt, rec.Key(), true)
			if h.Version != rec.RuntimeHandle.Version || !bytes.Equal(h.Data, rec.RuntimeHandle.Data) {
				rec.RuntimeHandle = &h
				if err := e.save(*rec); err != nil {
					e.log.Warn("refresh: cannot record the recovered handle", "tenant", rec.Tenant, "instance", rec.Name, "error", err)
					return plan.Workload{}, false
				}
			}
		case errors.Is(err, sdk.ErrNotFound):
			// Inspect says so below.
		default:
			e.log.Warn("refresh: cannot recover", "tenant", rec.Tenant, "instance", rec.Name, "error", err)
		}
	}
	st, err := rt.Inspect(ctx, *rec.RuntimeHandle)
	if err != nil && !errors.Is(err, sdk.ErrNotFound) {
		h, rerr := rt.Recover(ctx, *rec.RuntimeHandle)
		if rerr == nil {
			rec.RuntimeHandle = &h
			if rerr = e.save(*rec); rerr == nil {
				st, err = rt.Inspect(ctx, h)
			}
		}
		if rerr != nil && !errors.Is(rerr, sdk.ErrNotFound) {
			e.log.Warn("refresh: cannot inspect", "tenant", rec.Tenant, "instance", rec.Name, "error", err)
			return plan.Workload{}, false
		}
		if rerr != nil {
			err = rerr
		}
	}
	if errors.Is(err, sdk.ErrNotFound) {
		return plan.Workload{State: sdk.StateExited, Exit: state.Exit{Cause: CauseLost, Message: "the runtime no longer knows the workload", At: time.Now().UTC()}}, true
	}
	if err != nil {
		e.log.Warn("refresh: cannot inspect", "tenant", rec.Tenant, "instance", rec.Name, "error", err)
		return plan.Workload{}, false
	}
	w := plan.Workload{State: st.State}
	if st.State != sdk.StateRunning && st.State != sdk.StateUnknown {
		w.Exit = state.Exit{Code: st.ExitCode, Cause: state.CauseExit, Message: st.Message, At: st.FinishedAt.UTC()}
		if w.Exit.At.IsZero() {
			w.Exit.At = time.Now().UTC()
		}
		switch {
		case st.Cause != "" && st.Cause != sdk.CauseUnknown:
			w.Exit.Cause = string(st.Cause) // the runtime knows
		case oomKills(rec.Cgroup) > rec.Run.OOMKills:
			w.Exit.Cause = state.CauseOOM
		case st.ExitCode < 0 || st.Signal != 0 || strings.Contains(strings.ToLower(st.Message), "signal"):
			// No exit code: the workload was killed.
			w.Exit.Cause = state.CauseSignal
		}
		if w.Exit.Cause == state.CauseSignal && st.Signal != 0 {
			w.Exit.Code = 128 + st.Signal
		}
	}
	return w, true
}

// recordExit writes down how rec's workload ended, and counts it towards
// the restart backoff unless it ran long enough to reset it.
func (e *Engine) recordExit(rec *state.Instance, exit state.Exit) error {
	if !rec.Run.StartedAt.IsZero() && exit.At.Sub(rec.Run.StartedAt) >= plan.RestartReset {
		rec.Run.Failures = 0
	}
	rec.Run.Failures++
	rec.Run.LastExit = &exit
	return e.save(*rec)
}

// oomKills returns how many times the kernel killed a process of cgroup cg
// for memory: "oom_kill" of memory.oom_control (v1) or memory.events (v2).
// It is 0 when the kernel does not say.
func oomKills(cg sdk.Cgroup) int {
	for _, procs := range cg.ProcsFiles {
		dir := filepath.Dir(procs)
		for _, name := range []string{"memory.oom_control", "memory.events"} {
			if n, ok := readCounter(filepath.Join(dir, name), "oom_kill"); ok {
				return n
			}
		}
	}
	return 0
}

// readCounter reads the "KEY N" line of a flat-keyed cgroup file.
func readCounter(path, key string) (int, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			return n, err == nil
		}
	}
	return 0, false
}

// save writes rec, unless the store is read-only (a plan or status that
// refreshes without changing anything on disk).
func (e *Engine) save(rec state.Instance) error {
	if e.store.ReadOnly() {
		return nil
	}
	return e.store.PutInstance(rec)
}

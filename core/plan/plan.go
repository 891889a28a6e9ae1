// Package plan diffs desired state (from specs) against recorded state and
// orders the actions that bring one to the other.
package plan

import (
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

// Tenant is a desired tenant.
type Tenant struct {
	Name string
	// Source names the source that desires the tenant, such as
	// "file:tenants/alice.hcl"; it is recorded as the tenant's owner.
	Source    string
	Instances []Instance
}

// Limits returns the tenant's cgroup limits: the sums over its instances.
// An I/O rate is unlimited (0) when one of its instances' is.
func (t Tenant) Limits() sdk.Resources {
	var r sdk.Resources
	for n, i := range t.Instances {
		r.MemoryBytes += i.Spec.Resources.MemoryBytes
		r.MilliCPU += i.Spec.Resources.MilliCPU
		r.DiskBytes += i.Spec.Resources.DiskBytes
		r.Pids += i.Spec.Resources.Pids
		io := i.Spec.Resources.IO
		for _, f := range []struct {
			sum *int64
			v   int64
		}{
			{&r.IO.ReadBPS, io.ReadBPS}, {&r.IO.WriteBPS, io.WriteBPS}, {&r.IO.ReadIOPS, io.ReadIOPS}, {&r.IO.WriteIOPS, io.WriteIOPS},
		} {
			if n == 0 || *f.sum > 0 && f.v > 0 {
				*f.sum += f.v
			} else {
				*f.sum = 0
			}
		}
	}
	return r
}

// Instance is a desired instance.
type Instance struct {
	Name string
	Spec state.InstanceSpec
}

// Op is what an action does.
type Op string

// The operations.
const (
	Create  Op = "create"
	Update  Op = "update"
	Destroy Op = "destroy"
	// Restart starts an instance's ended or lost workload again, with the
	// same spec and state, as its restart policy says.
	Restart Op = "restart"
)

// Action is one step of a plan.
type Action struct {
	Op Op `json:"op"`
	// Tenant names the tenant; Instance is empty for a tenant action.
	Tenant   string `json:"tenant"`
	Instance string `json:"instance,omitempty"`
	// Spec is the desired instance spec (create and update of instances).
	Spec *state.InstanceSpec `json:"spec,omitempty"`
	// Limits are the desired tenant limits (create and update of tenants).
	Limits sdk.Resources `json:"limits"`
	// Source is the tenant's owning source (create and update of tenants).
	Source string `json:"source,omitempty"`
	// Reason says why an instance restarts.
	Reason string `json:"reason,omitempty"`
	// Changes lists what an update changes.
	Changes []Change `json:"changes,omitempty"`
	// Resume is set when the action finishes one that an earlier apply
	// left half done.
	Resume bool `json:"resume,omitempty"`
}

// Target returns "tenant NAME" or "instance TENANT/NAME".
func (a Action) Target() string {
	if a.Instance == "" {
		return "tenant " + a.Tenant
	}
	return "instance " + a.Tenant + "/" + a.Instance
}

// Change is one changed field of an update.
type Change struct {
	Field string `json:"field"`
	Old   string `json:"old"`
	New   string `json:"new"`
}

// Plan is an ordered list of actions.
type Plan struct {
	Actions []Action `json:"actions"`
	// RetryAfter, when not zero, is when the earliest restart held back by
	// its backoff falls due: plan again then.
	RetryAfter time.Duration `json:"retry_after,omitempty"`
	// Drift lists recorded workloads the refresh found not running, and
	// what is done about each.
	Drift []Drift `json:"drift,omitempty"`
	// Usage is what each desired tenant of the plan will hold of the
	// host's capacity once applied; a tenant being destroyed holds none.
	Usage map[string]Usage `json:"-"`
}

// Usage is what a tenant holds of the host's capacity.
type Usage struct {
	Limits    sdk.Resources `json:"limits"`
	Instances int           `json:"instances"`
}

// Drift is a recorded workload that was found not running.
type Drift struct {
	Tenant   string `json:"tenant"`
	Instance string `json:"instance"`
	// Exit is how the workload ended.
	Exit state.Exit `json:"exit"`
	// Restart is set when the plan restarts it; otherwise Reason says why not.
	Restart bool   `json:"restart"`
	Reason  string `json:"reason"`
}

// Empty reports whether the plan changes nothing.
func (p *Plan) Empty() bool { return len(p.Actions) == 0 }

// Count returns how many actions have op.
func (p *Plan) Count(op Op) int {
	n := 0
	for _, a := range p.Actions {
		if a.Op == op {
			n++
		}
	}
	return n
}

// CountTenants returns how many tenant actions have op.
func (p *Plan) CountTenants(op Op) int {
	n := 0
	for _, a := range p.Actions {
		if a.Op == op && a.Instance == "" {
			n++
		}
	}
	return n
}

// CountInstances returns how many instance actions have op.
func (p *Plan) CountInstances(op Op) int { return p.Count(op) - p.CountTenants(op) }

// Refresh is what a refresh found of the recorded workloads, just before
// planning.
type Refresh struct {
	// Now is when the refresh ran; restart backoffs are measured from it.
	Now time.Time
	// Workloads maps an instance key ("tenant/name") to what its runtime
	// reported. An instance with a workload handle but no entry was not
	// refreshed and is taken to be as recorded.
	Workloads map[string]Workload
}

// Workload is what the runtime reported of a recorded workload.
type Workload struct {
	State sdk.State
	// Exit says how it ended, when State is not running.
	Exit state.Exit
}

// Diff returns the plan that takes the recorded tenants and instances to the
// desired tenants. Destroys come first, so they free capacity; then tenants
// are created or updated before their instances. Records left half done by an
// interrupted apply are resumed: finished if still desired, destroyed if not.
// A workload that refresh (which may be nil) found ended or lost is
// restarted as its instance's restart policy and backoff say.
func Diff(desired []Tenant, tenants []state.Tenant, instances []state.Instance, refresh *Refresh) *Plan {
	want := map[string]Tenant{}
	wantInst := map[string]Instance{}
	for _, t := range desired {
		want[t.Name] = t
		for _, i := range t.Instances {
			wantInst[t.Name+"/"+i.Name] = i
		}
	}
	haveTenant := map[string]state.Tenant{}
	for _, t := range tenants {
		haveTenant[t.Name] = t
	}
	haveInst := map[string]state.Instance{}
	for _, i := range instances {
		haveInst[i.Key()] = i
	}

	p := &Plan{Usage: map[string]Usage{}}
	for _, t := range desired {
		p.Usage[t.Name] = Usage{Limits: t.Limits(), Instances: len(t.Instances)}
	}
	// 1. Instances that are not wanted, or whose destroy was interrupted.
	for _, i := range sorted(instances, state.Instance.Key) {
		_, wanted := wantInst[i.Key()]
		if !wanted || i.Phase == state.PhaseDestroying {
			p.Actions = append(p.Actions, Action{Op: Destroy, Tenant: i.Tenant, Instance: i.Name, Resume: i.Phase == state.PhaseDestroying})
			delete(haveInst, i.Key())
		}
	}
	// 2. Tenants that are not wanted.
	for _, t := range sorted(tenants, func(t state.Tenant) string { return t.Name }) {
		if _, wanted := want[t.Name]; !wanted {
			p.Actions = append(p.Actions, Action{Op: Destroy, Tenant: t.Name, Resume: t.Phase == state.PhaseDestroying})
		}
	}
	// 3. Wanted tenants, each followed by its instances. A tenant's limits
	// are raised before its instances change and lowered after, so that
	// they always hold its instances' limits (cgroup v1 refuses a parent
	// CPU quota below a child's).
	for _, t := range sorted(desired, func(t Tenant) string { return t.Name }) {
		limits := t.Limits()
		var lower *Action
		if have, ok := haveTenant[t.Name]; !ok {
			p.Actions = append(p.Actions, Action{Op: Create, Tenant: t.Name, Limits: limits, Source: t.Source})
		} else if have.Phase != state.PhaseReady {
			p.Actions = append(p.Actions, Action{Op: Create, Tenant: t.Name, Limits: limits, Source: t.Source, Resume: true})
		} else if have.Limits != limits || have.Source != t.Source {
			raised := maxResources(have.Limits, limits)
			var moved []Change
			if have.Source != t.Source {
				moved = []Change{{Field: "source", Old: show(have.Source), New: show(t.Source)}}
			}
			if raised != have.Limits || moved != nil {
				p.Actions = append(p.Actions, Action{Op: Update, Tenant: t.Name, Limits: raised, Source: t.Source,
					Changes: append(moved, resourceChanges("limits.", have.Limits, raised)...)})
			}
			if raised != limits {
				lower = &Action{Op: Update, Tenant: t.Name, Limits: limits, Source: t.Source, Changes: resourceChanges("limits.", raised, limits)}
			}
		}
		for _, i := range sorted(t.Instances, func(i Instance) string { return i.Name }) {
			spec := i.Spec
			have, ok := haveInst[t.Name+"/"+i.Name]
			switch {
			case !ok:
				p.Actions = append(p.Actions, Action{Op: Create, Tenant: t.Name, Instance: i.Name, Spec: &spec})
			case have.Phase == state.PhaseCreating:
				p.Actions = append(p.Actions, Action{Op: Create, Tenant: t.Name, Instance: i.Name, Spec: &spec, Resume: true})
			// The recorded spec's hash, recomputed: a record written by an
			// older version holds a SpecHash of another encoding.
			case have.Phase == state.PhaseUpdating || have.Spec.Hash() != spec.Hash():
				p.Actions = append(p.Actions, Action{Op: Update, Tenant: t.Name, Instance: i.Name, Spec: &spec,
					Changes: SpecChanges(have.Spec, spec), Resume: have.Phase == state.PhaseUpdating})
			default:
				p.drift(have, refresh)
			}
		}
		if lower != nil {
			p.Actions = append(p.Actions, *lower)
		}
	}
	return p
}

// drift plans the restart of have's workload if refresh found it ended and
// its restart policy and backoff allow.
func (p *Plan) drift(have state.Instance, refresh *Refresh) {
	if refresh == nil || have.RuntimeHandle == nil {
		return
	}
	w, ok := refresh.Workloads[have.Key()]
	if !ok || w.State == sdk.StateRunning || w.State == sdk.StateUnknown {
		return
	}
	d := DecideRestart(have, w.Exit, refresh.Now)
	p.Drift = append(p.Drift, Drift{Tenant: have.Tenant, Instance: have.Name, Exit: w.Exit, Restart: d.Restart, Reason: d.Reason})
	switch {
	case d.Restart:
		spec := have.Spec
		p.Actions = append(p.Actions, Action{Op: Restart, Tenant: have.Tenant, Instance: have.Name, Spec: &spec, Reason: d.Reason,
			Changes: []Change{{Field: "workload", Old: describeExit(w.Exit), New: "running"}}})
	case d.Wait > 0 && (p.RetryAfter == 0 || d.Wait < p.RetryAfter):
		p.RetryAfter = d.Wait
	}
}

func describeExit(e state.Exit) string {
	if e.Cause == state.CauseExit {
		return fmt.Sprintf("exited with code %d", e.Code)
	}
	return fmt.Sprintf("ended (%s, code %d)", e.Cause, e.Code)
}

// maxResources returns the larger of a and b, field by field; 0 means
// unlimited, the largest of all.
func maxResources(a, b sdk.Resources) sdk.Resources {
	larger := func(x, y int64) int64 {
		if x == 0 || y == 0 {
			return 0
		}
		return max(x, y)
	}
	return sdk.Resources{
		MemoryBytes: larger(a.MemoryBytes, b.MemoryBytes),
		MilliCPU:    larger(a.MilliCPU, b.MilliCPU),
		DiskBytes:   larger(a.DiskBytes, b.DiskBytes),
		Pids:        larger(a.Pids, b.Pids),
		IO: sdk.IOLimits{
			ReadBPS: larger(a.IO.ReadBPS, b.IO.ReadBPS), WriteBPS: larger(a.IO.WriteBPS, b.IO.WriteBPS),
			ReadIOPS: larger(a.IO.ReadIOPS, b.IO.ReadIOPS), WriteIOPS: larger(a.IO.WriteIOPS, b.IO.WriteIOPS),
		},
	}
}

func sorted[T any](in []T, key func(T) string) []T {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b T) int { return strings.Compare(key(a), key(b)) })
	return out
}

// SpecChanges lists the fields that differ between two instance specs.
func SpecChanges(old, new state.InstanceSpec) []Change {
	var out []Change
	add := func(field string, o, n any) {
		if !reflect.DeepEqual(o, n) {
			out = append(out, Change{Field: field, Old: show(o), New: show(n)})
		}
	}
	add("runtime", old.Runtime, new.Runtime)
	add("module", old.Module, new.Module)
	if old.Module == new.Module {
		add("module content", old.ModuleDigest, new.ModuleDigest)
	}
	add("image", old.Image, new.Image)
	add("archive", old.Archive, new.Archive)
	add("digest", old.Digest, new.Digest)
	add("args", old.Args, new.Args)
	add("env", old.Env, new.Env)
	out = append(out, resourceChanges("resources.", old.Resources, new.Resources)...)
	if old.StateBytes != new.StateBytes {
		out = append(out, Change{Field: "state.size", Old: size(old.StateBytes), New: size(new.StateBytes)})
	}
	add("permissions", old.Permissions, new.Permissions)
	add("settings", old.Settings, new.Settings)
	add("restart", old.Restart, new.Restart)
	add("mounts", old.Mounts, new.Mounts)
	add("stdin", old.Stdin, new.Stdin)
	add("state.guest", old.StateGuest, new.StateGuest)
	add("state.seed", old.StateSeed, new.StateSeed)
	return out
}

func resourceChanges(prefix string, old, new sdk.Resources) []Change {
	var out []Change
	add := func(field, o, n string) {
		if o != n {
			out = append(out, Change{Field: prefix + field, Old: o, New: n})
		}
	}
	add("memory", size(old.MemoryBytes), size(new.MemoryBytes))
	add("cpu", cpu(old.MilliCPU), cpu(new.MilliCPU))
	add("disk", size(old.DiskBytes), size(new.DiskBytes))
	add("pids", fmt.Sprint(old.Pids), fmt.Sprint(new.Pids))
	add("io_read_bps", rate(old.IO.ReadBPS, size), rate(new.IO.ReadBPS, size))
	add("io_write_bps", rate(old.IO.WriteBPS, size), rate(new.IO.WriteBPS, size))
	add("io_read_iops", rate(old.IO.ReadIOPS, count), rate(new.IO.ReadIOPS, count))
	add("io_write_iops", rate(old.IO.WriteIOPS, count), rate(new.IO.WriteIOPS, count))
	return out
}

func size(b int64) string {
	if b < 0 {
		return fmt.Sprint(b)
	}
	return humanize.IBytes(uint64(b))
}

// rate shows an I/O rate, 0 as unlimited.
func rate(n int64, format func(int64) string) string {
	if n == 0 {
		return "unlimited"
	}
	return format(n) + "/s"
}

func count(n int64) string { return fmt.Sprint(n) }

func cpu(milli int64) string { return fmt.Sprintf("%g", float64(milli)/1000) }

func show(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case nil:
		return "null"
	}
	rv := reflect.ValueOf(v)
	if (rv.Kind() == reflect.Slice || rv.Kind() == reflect.Map) && rv.Len() == 0 {
		if rv.Kind() == reflect.Map {
			return "{}"
		}
		return "[]"
	}
	if m, ok := v.(map[string]string); ok {
		keys := slices.Sorted(maps.Keys(m))
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%q", k, m[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	if s, ok := v.([]string); ok {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprint(v)
}

// Render writes the plan for a person to read.
func (p *Plan) Render(w io.Writer) error {
	if p.Empty() {
		_, err := fmt.Fprintln(w, "No changes. The host matches the specs.")
		return err
	}
	var b strings.Builder
	b.WriteString("Kigumi will perform the following actions:\n\n")
	for _, a := range p.Actions {
		sign := map[Op]string{Create: "+", Update: "~", Destroy: "-", Restart: "^"}[a.Op]
		fmt.Fprintf(&b, "  %s %s %s", sign, a.Op, a.Target())
		if a.Resume {
			b.WriteString(" (resuming an interrupted apply)")
		}
		if a.Reason != "" {
			fmt.Fprintf(&b, " (%s)", a.Reason)
		}
		b.WriteString("\n")
		if a.Op == Create && a.Spec != nil {
			for _, c := range SpecChanges(state.InstanceSpec{}, *a.Spec) {
				fmt.Fprintf(&b, "      %s: %s\n", c.Field, c.New)
			}
		}
		for _, c := range a.Changes {
			fmt.Fprintf(&b, "      %s: %s -> %s\n", c.Field, c.Old, c.New)
		}
	}
	fmt.Fprintf(&b, "\nPlan: tenants: %d to create, %d to update, %d to destroy; instances: %d to create, %d to update, %d to destroy",
		p.CountTenants(Create), p.CountTenants(Update), p.CountTenants(Destroy),
		p.CountInstances(Create), p.CountInstances(Update), p.CountInstances(Destroy))
	if n := p.Count(Restart); n > 0 {
		fmt.Fprintf(&b, ", %d to restart", n)
	}
	b.WriteString(".\n")
	_, err := io.WriteString(w, b.String())
	return err
}

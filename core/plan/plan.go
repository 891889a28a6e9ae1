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

	"github.com/dustin/go-humanize"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

// Tenant is a desired tenant.
type Tenant struct {
	Name      string
	Instances []Instance
}

// Limits returns the tenant's cgroup limits: the sums over its instances.
func (t Tenant) Limits() sdk.Resources {
	var r sdk.Resources
	for _, i := range t.Instances {
		r.MemoryBytes += i.Spec.Resources.MemoryBytes
		r.MilliCPU += i.Spec.Resources.MilliCPU
		r.DiskBytes += i.Spec.Resources.DiskBytes
		r.Pids += i.Spec.Resources.Pids
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

// Diff returns the plan that takes the recorded tenants and instances to the
// desired tenants. Destroys come first, so they free capacity; then tenants
// are created or updated before their instances. Records left half done by an
// interrupted apply are resumed: finished if still desired, destroyed if not.
func Diff(desired []Tenant, tenants []state.Tenant, instances []state.Instance) *Plan {
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

	p := &Plan{}
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
			p.Actions = append(p.Actions, Action{Op: Create, Tenant: t.Name, Limits: limits})
		} else if have.Phase != state.PhaseReady {
			p.Actions = append(p.Actions, Action{Op: Create, Tenant: t.Name, Limits: limits, Resume: true})
		} else if have.Limits != limits {
			raised := maxResources(have.Limits, limits)
			if raised != have.Limits {
				p.Actions = append(p.Actions, Action{Op: Update, Tenant: t.Name, Limits: raised, Changes: resourceChanges("limits.", have.Limits, raised)})
			}
			if raised != limits {
				lower = &Action{Op: Update, Tenant: t.Name, Limits: limits, Changes: resourceChanges("limits.", raised, limits)}
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
			}
		}
		if lower != nil {
			p.Actions = append(p.Actions, *lower)
		}
	}
	return p
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
	add("digest", old.Digest, new.Digest)
	add("args", old.Args, new.Args)
	add("env", old.Env, new.Env)
	out = append(out, resourceChanges("resources.", old.Resources, new.Resources)...)
	add("state.size", size(old.StateBytes), size(new.StateBytes))
	add("permissions", old.Permissions, new.Permissions)
	add("settings", old.Settings, new.Settings)
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
	return out
}

func size(b int64) string {
	if b < 0 {
		return fmt.Sprint(b)
	}
	return humanize.IBytes(uint64(b))
}

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
		sign := map[Op]string{Create: "+", Update: "~", Destroy: "-"}[a.Op]
		fmt.Fprintf(&b, "  %s %s %s", sign, a.Op, a.Target())
		if a.Resume {
			b.WriteString(" (resuming an interrupted apply)")
		}
		b.WriteString("\n")
		if a.Op == Create && a.Spec != nil {
			art := a.Spec.Module
			if art == "" {
				art = a.Spec.Image
			}
			fmt.Fprintf(&b, "      runtime %s, %s, memory %s, cpu %s, pids %d\n", a.Spec.Runtime, art,
				size(a.Spec.Resources.MemoryBytes), cpu(a.Spec.Resources.MilliCPU), a.Spec.Resources.Pids)
		}
		for _, c := range a.Changes {
			fmt.Fprintf(&b, "      %s: %s -> %s\n", c.Field, c.Old, c.New)
		}
	}
	fmt.Fprintf(&b, "\nPlan: %d to create, %d to update, %d to destroy.\n", p.Count(Create), p.Count(Update), p.Count(Destroy))
	_, err := io.WriteString(w, b.String())
	return err
}

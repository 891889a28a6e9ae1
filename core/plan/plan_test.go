package plan

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

func ispec(mem int64, args ...string) state.InstanceSpec {
	return state.InstanceSpec{
		Runtime: "wasm", Module: "/m/app.wasm", ModuleDigest: "sha256:aa", Args: args,
		Resources: sdk.Resources{MemoryBytes: mem, MilliCPU: 100, DiskBytes: 1 << 20, Pids: 8},
	}
}

func rec(tenant, name string, s state.InstanceSpec, ph state.Phase) state.Instance {
	return state.Instance{Tenant: tenant, Name: name, Spec: s, SpecHash: s.Hash(), Phase: ph}
}

func tenantRec(name string, ph state.Phase, limits sdk.Resources) state.Tenant {
	return state.Tenant{Name: name, Phase: ph, Limits: limits}
}

// summary renders actions as "op target[!]" where ! marks a resume.
func summary(p *Plan) []string {
	var out []string
	for _, a := range p.Actions {
		s := string(a.Op) + " " + a.Target()
		if a.Resume {
			s += "!"
		}
		out = append(out, s)
	}
	return out
}

func TestDiff(t *testing.T) {
	one := Tenant{Name: "alice", Instances: []Instance{{Name: "web", Spec: ispec(32 << 20)}}}
	oneLimits := one.Limits()
	tests := []struct {
		name      string
		desired   []Tenant
		tenants   []state.Tenant
		instances []state.Instance
		want      []string
		changes   []string // fields changed by the last action
	}{
		{name: "nothing", want: nil},
		{name: "create all", desired: []Tenant{one, {Name: "bob"}},
			want: []string{"create tenant alice", "create instance alice/web", "create tenant bob"}},
		{name: "no change", desired: []Tenant{one},
			tenants:   []state.Tenant{tenantRec("alice", state.PhaseReady, oneLimits)},
			instances: []state.Instance{rec("alice", "web", ispec(32<<20), state.PhaseReady)},
			want:      nil},
		{name: "no change, old hash", desired: []Tenant{one},
			tenants: []state.Tenant{tenantRec("alice", state.PhaseReady, oneLimits)},
			instances: []state.Instance{func() state.Instance {
				r := rec("alice", "web", ispec(32<<20), state.PhaseReady)
				r.SpecHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" // another encoding's
				return r
			}()},
			want: nil},
		{name: "update args",
			desired:   []Tenant{{Name: "alice", Instances: []Instance{{Name: "web", Spec: ispec(32<<20, "-v")}}}},
			tenants:   []state.Tenant{tenantRec("alice", state.PhaseReady, oneLimits)},
			instances: []state.Instance{rec("alice", "web", ispec(32<<20), state.PhaseReady)},
			want:      []string{"update instance alice/web"}, changes: []string{"args"}},
		{name: "update memory updates tenant limits first",
			desired:   []Tenant{{Name: "alice", Instances: []Instance{{Name: "web", Spec: ispec(64 << 20)}}}},
			tenants:   []state.Tenant{tenantRec("alice", state.PhaseReady, oneLimits)},
			instances: []state.Instance{rec("alice", "web", ispec(32<<20), state.PhaseReady)},
			want:      []string{"update tenant alice", "update instance alice/web"}, changes: []string{"resources.memory"}},
		{name: "lower cpu: instance first, then tenant limits",
			desired: []Tenant{{Name: "alice", Instances: []Instance{{Name: "web", Spec: func() state.InstanceSpec {
				s := ispec(32 << 20)
				s.Resources.MilliCPU = 50
				return s
			}()}}}},
			tenants:   []state.Tenant{tenantRec("alice", state.PhaseReady, oneLimits)},
			instances: []state.Instance{rec("alice", "web", ispec(32<<20), state.PhaseReady)},
			want:      []string{"update instance alice/web", "update tenant alice"}, changes: []string{"limits.cpu"}},
		{name: "more memory, less cpu: raise memory first, lower cpu last",
			desired: []Tenant{{Name: "alice", Instances: []Instance{{Name: "web", Spec: func() state.InstanceSpec {
				s := ispec(64 << 20)
				s.Resources.MilliCPU = 50
				return s
			}()}}}},
			tenants:   []state.Tenant{tenantRec("alice", state.PhaseReady, oneLimits)},
			instances: []state.Instance{rec("alice", "web", ispec(32<<20), state.PhaseReady)},
			want:      []string{"update tenant alice", "update instance alice/web", "update tenant alice"}, changes: []string{"limits.cpu"}},
		{name: "destroy tenant and its instances first",
			desired:   []Tenant{{Name: "bob"}},
			tenants:   []state.Tenant{tenantRec("alice", state.PhaseReady, oneLimits)},
			instances: []state.Instance{rec("alice", "web", ispec(32<<20), state.PhaseReady)},
			want:      []string{"destroy instance alice/web", "destroy tenant alice", "create tenant bob"}},
		{name: "resume interrupted create",
			desired:   []Tenant{one},
			tenants:   []state.Tenant{tenantRec("alice", state.PhaseCreating, oneLimits)},
			instances: []state.Instance{rec("alice", "web", ispec(32<<20), state.PhaseCreating)},
			want:      []string{"create tenant alice!", "create instance alice/web!"}},
		{name: "resume interrupted update",
			desired:   []Tenant{one},
			tenants:   []state.Tenant{tenantRec("alice", state.PhaseReady, oneLimits)},
			instances: []state.Instance{rec("alice", "web", ispec(32<<20), state.PhaseUpdating)},
			want:      []string{"update instance alice/web!"}},
		{name: "interrupted destroy of a wanted instance is finished, then recreated",
			desired:   []Tenant{one},
			tenants:   []state.Tenant{tenantRec("alice", state.PhaseReady, oneLimits)},
			instances: []state.Instance{rec("alice", "web", ispec(32<<20), state.PhaseDestroying)},
			want:      []string{"destroy instance alice/web!", "create instance alice/web"}},
		{name: "half-created instance no longer wanted is destroyed",
			tenants:   []state.Tenant{tenantRec("alice", state.PhaseCreating, oneLimits)},
			instances: []state.Instance{rec("alice", "web", ispec(32<<20), state.PhaseCreating)},
			want:      []string{"destroy instance alice/web", "destroy tenant alice"}},
		{name: "rebuilt module is an update",
			desired: []Tenant{{Name: "alice", Instances: []Instance{{Name: "web", Spec: func() state.InstanceSpec {
				s := ispec(32 << 20)
				s.ModuleDigest = "sha256:bb"
				return s
			}()}}}},
			tenants:   []state.Tenant{tenantRec("alice", state.PhaseReady, oneLimits)},
			instances: []state.Instance{rec("alice", "web", ispec(32<<20), state.PhaseReady)},
			want:      []string{"update instance alice/web"}, changes: []string{"module content"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Diff(tt.desired, tt.tenants, tt.instances, nil)
			got := summary(p)
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("actions:\n got %q\nwant %q", got, tt.want)
			}
			if tt.changes != nil {
				var fields []string
				for _, c := range p.Actions[len(p.Actions)-1].Changes {
					fields = append(fields, c.Field)
				}
				if strings.Join(fields, ",") != strings.Join(tt.changes, ",") {
					t.Errorf("changes = %q, want %q", fields, tt.changes)
				}
			}
			if p.Empty() != (len(tt.want) == 0) {
				t.Errorf("Empty() = %v", p.Empty())
			}
		})
	}
}

func TestRender(t *testing.T) {
	tests := []struct {
		name string
		plan *Plan
		want []string
	}{
		{"empty", &Plan{}, []string{"No changes."}},
		{"mixed", Diff(
			[]Tenant{{Name: "alice", Instances: []Instance{{Name: "web", Spec: ispec(64<<20, "-v")}}}},
			[]state.Tenant{tenantRec("alice", state.PhaseReady, sdk.Resources{}), tenantRec("old", state.PhaseReady, sdk.Resources{})},
			[]state.Instance{rec("alice", "web", ispec(32<<20), state.PhaseReady)}, nil),
			[]string{"- destroy tenant old", "~ update instance alice/web", `args: [] -> ["-v"]`,
				"resources.memory: 32 MiB -> 64 MiB",
				"Plan: tenants: 0 to create, 1 to update, 1 to destroy; instances: 0 to create, 1 to update, 0 to destroy."}},
		{"every attribute", Diff(
			[]Tenant{{Name: "alice", Source: "file:tenants/b.hcl", Instances: []Instance{{Name: "web", Spec: func() state.InstanceSpec {
				s := ispec(32<<20, "-v")
				s.Env, s.StateBytes, s.Restart, s.ModuleDigest = map[string]string{"A": "1"}, 1<<20, "always", "sha256:bb"
				s.Permissions = sdk.Permissions{{Name: sdk.PermStateRead}}
				return s
			}()}}}},
			[]state.Tenant{{Name: "alice", Phase: state.PhaseReady, Source: "file:tenants/a.hcl", Limits: ispec(32 << 20).Resources}},
			[]state.Instance{rec("alice", "web", ispec(32<<20), state.PhaseReady)}, nil),
			[]string{`source: "file:tenants/a.hcl" -> "file:tenants/b.hcl"`, `args: [] -> ["-v"]`, `env: {} -> {A="1"}`,
				"state.size: 0 B -> 1.0 MiB", `restart: "" -> "always"`, `module content: "sha256:aa" -> "sha256:bb"`,
				`permissions: [] -> [state.read]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.plan.Render(&b); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}

// BenchmarkDiff plans 1000 tenants of 10 instances each against records
// that match (no change) or that are all stale (all updates).
func BenchmarkDiff(b *testing.B) {
	var desired []Tenant
	var tenants []state.Tenant
	var same, stale []state.Instance
	for i := range 1000 {
		t := Tenant{Name: fmt.Sprintf("t%04d", i)}
		for j := range 10 {
			s := ispec(32<<20, fmt.Sprint(j))
			t.Instances = append(t.Instances, Instance{Name: fmt.Sprintf("i%d", j), Spec: s})
			same = append(same, rec(t.Name, fmt.Sprintf("i%d", j), s, state.PhaseReady))
			stale = append(stale, rec(t.Name, fmt.Sprintf("i%d", j), ispec(16<<20), state.PhaseReady))
		}
		desired = append(desired, t)
		tenants = append(tenants, tenantRec(t.Name, state.PhaseReady, t.Limits()))
	}
	for _, bc := range []struct {
		name    string
		records []state.Instance
	}{{"no-change", same}, {"all-updates", stale}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				Diff(desired, tenants, bc.records, nil)
			}
		})
	}
}

func TestMaxResources(t *testing.T) {
	tests := []struct {
		a, b, want sdk.Resources
	}{
		{sdk.Resources{MemoryBytes: 1, MilliCPU: 5}, sdk.Resources{MemoryBytes: 2, MilliCPU: 3}, sdk.Resources{MemoryBytes: 2, MilliCPU: 5}},
		{sdk.Resources{MemoryBytes: 0, Pids: 4}, sdk.Resources{MemoryBytes: 9, Pids: 0}, sdk.Resources{}}, // 0 is unlimited
	}
	for _, tt := range tests {
		if got := maxResources(tt.a, tt.b); got != tt.want {
			t.Errorf("maxResources(%+v, %+v) = %+v, want %+v", tt.a, tt.b, got, tt.want)
		}
	}
}

package policy

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
)

// at returns a one-character range in file.
func at(file string, line, col int) hcl.Range {
	return hcl.Range{
		Filename: file,
		Start:    hcl.Pos{Line: line, Column: col},
		End:      hcl.Pos{Line: line, Column: col + 1},
	}
}

// fixture returns a 2-core, 2GiB host with tenants alice (instance web) and
// bob (instance api, whose spec ranges are not known).
func fixture() (*spec.Host, []*spec.Tenant) {
	h := &spec.Host{
		Name:      "test",
		Capacity:  spec.Capacity{MilliCPU: 2000, MemoryBytes: 2 << 30, DiskBytes: 10 << 30, MaxInstances: 16},
		Isolation: spec.Isolation{TenantUsers: true, UIDBase: 61000, SubIDBase: 1000000000, SubIDCount: 65536},
		DeclRange: at("host.hcl", 1, 1),
	}
	alice := &spec.Tenant{
		Name:      "alice",
		DeclRange: at("alice.hcl", 1, 1),
		Instances: []spec.Instance{{
			Name:        "web",
			Runtime:     "wasm",
			Module:      "/srv/web.wasm",
			Args:        []string{"--port", "8080"},
			Env:         map[string]string{"MODE": "prod"},
			Resources:   sdk.Resources{MemoryBytes: 64 << 20, MilliCPU: 250, DiskBytes: 64 << 20, Pids: 16},
			StateBytes:  16 << 20,
			Permissions: sdk.Permissions{{Name: sdk.PermClock}},
			DeclRange:   at("alice.hcl", 2, 3),
			Ranges: map[string]hcl.Range{
				"runtime":          at("alice.hcl", 3, 15),
				"resources.memory": at("alice.hcl", 6, 14),
				"state.size":       at("alice.hcl", 11, 14),
			},
		}},
	}
	bob := &spec.Tenant{
		Name:      "bob",
		DeclRange: at("bob.hcl", 1, 1),
		Instances: []spec.Instance{{
			Name:      "api",
			Runtime:   "wasm",
			Image:     "registry.example/api:1",
			Digest:    "sha256:" + strings.Repeat("0", 64),
			Resources: sdk.Resources{MemoryBytes: 1 << 30, MilliCPU: 1500, DiskBytes: 1 << 30, Pids: 32},
			DeclRange: at("bob.hcl", 2, 3),
		}},
	}
	return h, []*spec.Tenant{alice, bob}
}

// outcome is the part of a Result a test checks; target is "host",
// "tenant" or "tenant/instance".
type outcome struct {
	target  string
	allowed bool
	message string
	subject hcl.Range
}

func outcomes(rep Report) []outcome {
	var got []outcome
	for _, r := range rep.Results {
		target := "host"
		switch r.Scope {
		case ScopeTenant:
			target = r.Tenant
		case ScopeInstance:
			target = r.Tenant + "/" + r.Instance
		}
		got = append(got, outcome{target, r.Allowed, r.Message, r.Subject})
	}
	return got
}

// severities renders diagnostics as "error: SUMMARY" or "warning: SUMMARY".
func severities(diags hcl.Diagnostics) []string {
	var got []string
	for _, d := range diags {
		sev := "warning"
		if d.Severity == hcl.DiagError {
			sev = "error"
		}
		got = append(got, sev+": "+d.Summary)
	}
	return got
}

func TestEvaluate(t *testing.T) {
	// block returns a policy "p" of the given scope and enforcement with
	// further attribute lines.
	block := func(scope, enforcement string, lines ...string) string {
		return fmt.Sprintf("policy \"p\" {\n  scope = %q\n  enforcement = %q\n%s\n}\n",
			scope, enforcement, strings.Join(lines, "\n"))
	}
	tests := []struct {
		name       string
		src        string
		edit       func(h *spec.Host, tenants []*spec.Tenant)
		want       []outcome
		wantDenied bool
		wantDiags  []string
	}{{
		name: "allow",
		src:  block("instance", "deny", `rule = "instance.resources.memory <= host.capacity.memory"`, `message = "m"`),
		want: []outcome{
			{"alice/web", true, "", at("alice.hcl", 6, 14)},
			{"bob/api", true, "", at("bob.hcl", 2, 3)},
		},
	}, {
		name: "deny with message_expr",
		src: block("instance", "deny", `rule = "instance.resources.memory <= 512 * 1024 * 1024"`,
			`message_expr = "instance.name + ' asks for ' + string(instance.resources.memory)"`),
		want: []outcome{
			{"alice/web", true, "", at("alice.hcl", 6, 14)},
			{"bob/api", false, "api asks for 1073741824", at("bob.hcl", 2, 3)},
		},
		wantDenied: true,
		wantDiags:  []string{`error: Policy "p" denied tenant "bob" instance "api"`},
	}, {
		name: "deny points at the first attribute set",
		src: block("instance", "deny", `rule = "instance.digest == '' && instance.resources.memory < 1"`,
			`message = "static"`),
		want: []outcome{
			{"alice/web", false, "static", at("alice.hcl", 6, 14)},
			{"bob/api", false, "static", at("bob.hcl", 2, 3)},
		},
		wantDenied: true,
		wantDiags: []string{
			`error: Policy "p" denied tenant "alice" instance "web"`,
			`error: Policy "p" denied tenant "bob" instance "api"`,
		},
	}, {
		name: "warn",
		src:  block("instance", "warn", `rule = "instance.state_size > 0"`, `message = "no state"`),
		want: []outcome{
			{"alice/web", true, "", at("alice.hcl", 11, 14)},
			{"bob/api", false, "no state", at("bob.hcl", 2, 3)},
		},
		wantDiags: []string{`warning: Policy "p" warns about tenant "bob" instance "api"`},
	}, {
		name: "granted files: mounts, stdin, state guest and seed",
		src: block("instance", "deny",
			`rule = "instance.mounts.all(m, m.source.startsWith('/srv/shared/') && m.guest != '/etc') && instance.stdin == '' && instance.state_guest == '/' && !has(instance.state_seed)"`,
			`message_expr = "instance.mounts.map(m, m.guest).join(',')"`),
		edit: func(_ *spec.Host, tenants []*spec.Tenant) {
			tenants[0].Instances[0].Guest = spec.Guest{StateGuest: "/", Mounts: []spec.Mount{{Source: "/srv/shared/data", Guest: "/data"}}}
			tenants[1].Instances[0].Guest = spec.Guest{StateGuest: "/", Mounts: []spec.Mount{{Source: "/srv/private", Guest: "/etc"}}}
		},
		want: []outcome{
			{"alice/web", true, "", at("alice.hcl", 2, 3)},
			{"bob/api", false, "/etc", at("bob.hcl", 2, 3)},
		},
		wantDenied: true,
		wantDiags:  []string{`error: Policy "p" denied tenant "bob" instance "api"`},
	}, {
		name: "match false does not apply",
		src: block("instance", "deny", `match = "instance.image != ''"`,
			`rule = "instance.digest.startsWith('sha256:') && instance.permissions.size() == 0"`, `message = "m"`),
		want: []outcome{{"bob/api", true, "", at("bob.hcl", 2, 3)}},
	}, {
		name: "evaluation error denies even when warning",
		src:  block("instance", "warn", `rule = "100 / (instance.resources.pids - 16) > 1"`, `message = "m"`),
		want: []outcome{
			{"alice/web", false, "evaluation error: rule: division by zero", at("alice.hcl", 2, 3)},
			{"bob/api", true, "", at("bob.hcl", 2, 3)},
		},
		wantDenied: true,
		wantDiags:  []string{`error: Policy "p" denied tenant "alice" instance "web"`},
	}, {
		name: "missing map key in match denies",
		src:  block("instance", "warn", `match = "instance.env['MODE'] == 'prod'"`, `rule = "true"`, `message = "m"`),
		want: []outcome{
			{"alice/web", true, "", at("alice.hcl", 2, 3)},
			{"bob/api", false, "evaluation error: match: no such key: MODE", at("bob.hcl", 2, 3)},
		},
		wantDenied: true,
		wantDiags:  []string{`error: Policy "p" denied tenant "bob" instance "api"`},
	}, {
		name: "evaluation error in message_expr denies",
		src: block("instance", "warn", `rule = "instance.args.size() == 0"`,
			`message_expr = "instance.env['NONE']"`),
		want: []outcome{
			{"alice/web", false, "evaluation error: message_expr: no such key: NONE", at("alice.hcl", 2, 3)},
			{"bob/api", true, "", at("bob.hcl", 2, 3)},
		},
		wantDenied: true,
		wantDiags:  []string{`error: Policy "p" denied tenant "alice" instance "web"`},
	}, {
		name: "cost limit exceeded denies",
		src:  block("instance", "warn", `rule = "instance.args.all(a, !a.contains('x'))"`, `message = "m"`),
		edit: func(_ *spec.Host, tenants []*spec.Tenant) {
			arg := strings.Repeat("a", 10000)
			for range 2000 {
				tenants[1].Instances[0].Args = append(tenants[1].Instances[0].Args, arg)
			}
		},
		want: []outcome{
			{"alice/web", true, "", at("alice.hcl", 2, 3)},
			{"bob/api", false, "evaluation error: rule: operation cancelled: actual cost limit exceeded", at("bob.hcl", 2, 3)},
		},
		wantDenied: true,
		wantDiags:  []string{`error: Policy "p" denied tenant "bob" instance "api"`},
	}, {
		name: "tenant scope",
		src: block("tenant", "deny", `rule = "tenant.user == 'kg-' + tenant.name && tenant.totals.cpu < 1.0"`,
			`message_expr = "tenant.name + ' has ' + string(tenant.instances) + ' instances using ' + string(tenant.totals.cpu) + ' cores'"`),
		want: []outcome{
			{"alice", true, "", at("alice.hcl", 1, 1)},
			{"bob", false, "bob has 1 instances using 1.5 cores", at("bob.hcl", 1, 1)},
		},
		wantDenied: true,
		wantDiags:  []string{`error: Policy "p" denied tenant "bob"`},
	}, {
		name: "tenant users off",
		src:  block("tenant", "deny", `rule = "tenant.user == ''"`, `message = "m"`),
		edit: func(h *spec.Host, _ []*spec.Tenant) { h.Isolation.TenantUsers = false },
		want: []outcome{
			{"alice", true, "", at("alice.hcl", 1, 1)},
			{"bob", true, "", at("bob.hcl", 1, 1)},
		},
	}, {
		name: "host scope sums all tenants",
		src: block("host", "deny", `rule = "host.allocated.memory < host.capacity.memory / 2"`,
			`message_expr = "string(host.tenants) + ' tenants, ' + string(host.allocated.instances) + ' instances, ' + string(host.allocated.cpu) + ' cores, ' + string(host.allocated.memory) + ' bytes, ' + string(host.allocated.state) + ' state'"`),
		want: []outcome{
			{"host", false, "2 tenants, 2 instances, 1.75 cores, 1140850688 bytes, 16777216 state", at("host.hcl", 1, 1)},
		},
		wantDenied: true,
		wantDiags:  []string{`error: Policy "p" denied the host`},
	}, {
		name: "host warning",
		src:  block("host", "warn", `rule = "host.isolation.uid_base > 100000"`, `message = "low uids"`),
		want: []outcome{
			{"host", false, "low uids", at("host.hcl", 1, 1)},
		},
		wantDiags: []string{`warning: Policy "p" warns about the host`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, diags, files := load(t, tt.src)
			if diags.HasErrors() {
				t.Fatal(diags)
			}
			h, tenants := fixture()
			if tt.edit != nil {
				tt.edit(h, tenants)
			}
			rep, err := s.Evaluate(context.Background(), h, tenants)
			if err != nil {
				t.Fatal(err)
			}
			if got := outcomes(rep); !slices.Equal(got, tt.want) {
				t.Errorf("outcomes:\n got %v\nwant %v", got, tt.want)
			}
			if rep.Denied() != tt.wantDenied {
				t.Errorf("Denied() = %v, want %v", rep.Denied(), tt.wantDenied)
			}
			diags = rep.Diagnostics()
			if got := severities(diags); !slices.Equal(got, tt.wantDiags) {
				t.Errorf("diagnostics:\n got %q\nwant %q", got, tt.wantDiags)
			}
			for _, d := range diags {
				where := fmt.Sprintf("(policy defined at %s:1)", files[0])
				if !strings.HasSuffix(d.Detail, where) {
					t.Errorf("diagnostic detail %q does not end with %q", d.Detail, where)
				}
			}
		})
	}
}

func TestEvaluateCancelled(t *testing.T) {
	s, diags, _ := load(t, `policy "p" {
  enforcement = "deny"
  rule        = "true"
  message     = "m"
}`)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h, tenants := fixture()
	rep, err := s.Evaluate(ctx, h, tenants)
	if !errors.Is(err, context.Canceled) || len(rep.Results) != 0 {
		t.Errorf("Evaluate() = %v, %v; want no results and context.Canceled", rep, err)
	}
}

// loadStarter loads the policies shipped in the repository's policies/.
func loadStarter(t testing.TB) *Set {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "policies", "*.hcl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no starter policies found: %v", err)
	}
	s, diags := Load(hclparse.NewParser(), files)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return s
}

func TestStarterPolicies(t *testing.T) {
	s := loadStarter(t)
	tests := []struct {
		name      string
		edit      func(h *spec.Host, tenants []*spec.Tenant)
		wantDiags []string
	}{{
		name: "fits",
		edit: func(h *spec.Host, _ []*spec.Tenant) { h.Capacity.MilliCPU = 4000 },
	}, {
		name: "tenant over half the cpu",
		wantDiags: []string{
			`error: Policy "tenant-cpu-at-most-half" denied tenant "bob"`,
		},
	}, {
		name: "instance over capacity",
		edit: func(h *spec.Host, tenants []*spec.Tenant) {
			h.Capacity.MilliCPU = 4000
			tenants[0].Instances[0].Resources.MemoryBytes = 8 << 30
		},
		wantDiags: []string{
			`error: Policy "host-memory-allocated-within-capacity" denied the host`,
			`error: Policy "tenant-memory-at-most-half" denied tenant "alice"`,
			`error: Policy "instance-memory-within-capacity" denied tenant "alice" instance "web"`,
		},
	}, {
		name: "tenant users off",
		edit: func(h *spec.Host, _ []*spec.Tenant) {
			h.Capacity.MilliCPU = 4000
			h.Isolation.TenantUsers = false
		},
		wantDiags: []string{`warning: Policy "tenant-users-on" warns about the host`},
	}, {
		name: "too many instances",
		edit: func(h *spec.Host, _ []*spec.Tenant) {
			h.Capacity.MilliCPU = 4000
			h.Capacity.MaxInstances = 1
		},
		wantDiags: []string{`error: Policy "host-instances-within-capacity" denied the host`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, tenants := fixture()
			if tt.edit != nil {
				tt.edit(h, tenants)
			}
			rep, err := s.Evaluate(context.Background(), h, tenants)
			if err != nil {
				t.Fatal(err)
			}
			diags := rep.Diagnostics()
			if got := severities(diags); !slices.Equal(got, tt.wantDiags) {
				t.Errorf("diagnostics:\n got %q\nwant %q", got, tt.wantDiags)
			}
			if rep.Denied() != diags.HasErrors() {
				t.Errorf("Denied() = %v, but diagnostics have errors: %v", rep.Denied(), diags.HasErrors())
			}
		})
	}
	// The memory denial points at the instance's memory attribute.
	h, tenants := fixture()
	tenants[0].Instances[0].Resources.MemoryBytes = 8 << 30
	rep, err := s.Evaluate(context.Background(), h, tenants)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Policy == "instance-memory-within-capacity" && !r.Allowed {
			if want := at("alice.hcl", 6, 14); r.Subject != want {
				t.Errorf("memory denial at %s, want %s", r.Subject, want)
			}
			if want := "instance asks for 8589934592 bytes of memory; the host has 2147483648"; r.Message != want {
				t.Errorf("memory denial message %q, want %q", r.Message, want)
			}
		}
	}
}

// BenchmarkEvaluate evaluates the starter policies for 100 tenants with 10
// instances each.
func BenchmarkEvaluate(b *testing.B) {
	s := loadStarter(b)
	h, base := fixture()
	h.Capacity = spec.Capacity{MilliCPU: 1 << 20, MemoryBytes: 1 << 50, DiskBytes: 1 << 50, MaxInstances: 1000}
	var tenants []*spec.Tenant
	for i := range 100 {
		t := &spec.Tenant{Name: fmt.Sprintf("t%d", i), DeclRange: base[0].DeclRange}
		for j := range 10 {
			in := base[0].Instances[0]
			in.Name = fmt.Sprintf("i%d", j)
			t.Instances = append(t.Instances, in)
		}
		tenants = append(tenants, t)
	}
	var decisions int
	for b.Loop() {
		rep, err := s.Evaluate(context.Background(), h, tenants)
		if err != nil || rep.Denied() {
			b.Fatalf("Evaluate() = %v, %v", rep.Diagnostics(), err)
		}
		decisions += len(rep.Results)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(decisions), "ns/decision")
}

// TestContainerPolicies checks policies/containers.hcl and
// policies/opt-in/image-digest.hcl: each refusal names its policy, says
// why, and points at the setting or instance at fault, while a neighbour
// that asks for nothing of the kind is allowed.
func TestContainerPolicies(t *testing.T) {
	files := []string{
		filepath.Join("..", "..", "policies", "containers.hcl"),
		filepath.Join("..", "..", "policies", "opt-in", "image-digest.hcl"),
	}
	s, diags := Load(hclparse.NewParser(), files)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	settings := func(t *testing.T, src string) (hcl.Body, map[string]hcl.Range) {
		t.Helper()
		f, diags := hclparse.NewParser().ParseHCL([]byte(src), "c.hcl")
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		attrs, _ := f.Body.JustAttributes()
		ranges := map[string]hcl.Range{}
		for name, a := range attrs {
			ranges["settings."+name] = a.Expr.Range()
		}
		return f.Body, ranges
	}
	digest := "sha256:" + strings.Repeat("a", 64)
	tests := []struct {
		name     string
		edit     func(t *testing.T, in *spec.Instance)
		denied   []string
		message  string
		subjects map[string]int // policy -> line of the subject in c.hcl (0: the instance block)
	}{
		{name: "pinned, unprivileged", edit: func(t *testing.T, in *spec.Instance) {}},
		{name: "pinned in the reference", edit: func(t *testing.T, in *spec.Instance) {
			in.Digest = ""
			in.Image = "registry.example/app@" + digest
		}},
		{name: "privileged false", edit: func(t *testing.T, in *spec.Instance) {
			in.SettingsBody, in.Ranges = settings(t, "privileged = false\n")
		}},
		{name: "privileged", edit: func(t *testing.T, in *spec.Instance) {
			in.SettingsBody, in.Ranges = settings(t, "workload_uid = 1000\nprivileged = true\n")
		}, denied: []string{"no-privileged"}, message: "privileged mode is refused", subjects: map[string]int{"no-privileged": 2}},
		{name: "host paths setting", edit: func(t *testing.T, in *spec.Instance) {
			in.SettingsBody, in.Ranges = settings(t, "host_paths = [\"/etc\"]\n")
		}, denied: []string{"no-host-paths-in-containers"}, message: "host paths are refused", subjects: map[string]int{"no-host-paths-in-containers": 1}},
		{name: "mount", edit: func(t *testing.T, in *spec.Instance) {
			in.Mounts = []spec.Mount{{Source: "/srv/artifacts/data", Guest: "/data"}}
		}, denied: []string{"no-host-paths-in-containers"}, message: "host paths are refused"},
		{name: "stdin", edit: func(t *testing.T, in *spec.Instance) { in.Stdin = "/srv/artifacts/in.txt" },
			denied: []string{"no-host-paths-in-containers"}, message: "host paths are refused"},
		{name: "unpinned", edit: func(t *testing.T, in *spec.Instance) { in.Digest = "" },
			denied: []string{"image-digest"}, message: "image registry.example/app:1 is not pinned: add digest"},
		{name: "archive pinned", edit: func(t *testing.T, in *spec.Instance) { in.Image, in.Archive = "", "/srv/artifacts/app.tar" }},
		{name: "archive unpinned", edit: func(t *testing.T, in *spec.Instance) {
			in.Image, in.Archive, in.Digest = "", "/srv/artifacts/app.tar", ""
		},
			denied: []string{"image-digest"}, message: "archive /srv/artifacts/app.tar is not pinned: add digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, tenants := fixture()
			h.Capacity.MilliCPU = 4000
			in := spec.Instance{
				Name: "box", Runtime: "containerd", Image: "registry.example/app:1", Digest: digest,
				DeclRange: at("c.hcl", 9, 1),
			}
			tt.edit(t, &in)
			tenants[0].Instances = append(tenants[0].Instances, in)
			rep, err := s.Evaluate(context.Background(), h, tenants)
			if err != nil {
				t.Fatal(err)
			}
			var denied []string
			for _, r := range rep.Results {
				if r.Allowed {
					continue
				}
				if r.Instance != "box" {
					t.Errorf("neighbour %s/%s denied by %s: %s", r.Tenant, r.Instance, r.Policy, r.Message)
					continue
				}
				denied = append(denied, r.Policy)
				if !strings.Contains(r.Message, tt.message) {
					t.Errorf("%s: message %q, want %q", r.Policy, r.Message, tt.message)
				}
				line := 9
				if l, ok := tt.subjects[r.Policy]; ok {
					line = l
				}
				if r.Subject.Filename != "c.hcl" || r.Subject.Start.Line != line {
					t.Errorf("%s: subject %s, want c.hcl line %d", r.Policy, r.Subject, line)
				}
			}
			if !slices.Equal(denied, tt.denied) {
				t.Errorf("denied by %q, want %q", denied, tt.denied)
			}
		})
	}
}

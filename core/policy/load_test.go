package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// load writes each source to its own file in a temporary directory, in
// order, and loads them.
func load(t testing.TB, srcs ...string) (*Set, hcl.Diagnostics, []string) {
	t.Helper()
	dir := t.TempDir()
	var files []string
	for i, src := range srcs {
		name := filepath.Join(dir, fmt.Sprintf("p%d.hcl", i))
		if err := os.WriteFile(name, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, name)
	}
	s, diags := Load(hclparse.NewParser(), files)
	return s, diags, files
}

func TestLoad(t *testing.T) {
	src := `policy "mem" {
  description = "Memory."
  enforcement = "deny"
  rule        = "instance.resources.memory < 1"
  message     = "too much"
}
policy "users" {
  scope        = "host"
  enforcement  = "warn"
  match        = "host.tenants > 0"
  rule         = "host.isolation.tenant_users"
  message_expr = "'host ' + host.name"
}
policy "tenant-env" {
  scope       = "tenant"
  enforcement = "deny"
  rule        = <<-EOT
    tenant.user.startsWith('kg-') &&
      tenant.totals.memory < host.capacity.memory
  EOT
  message     = "no"
}
`
	s, diags, _ := load(t, src)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if got, want := s.Names(), []string{"mem", "users", "tenant-env"}; !slices.Equal(got, want) || s.Len() != 3 {
		t.Errorf("Names() = %v, Len() = %d; want %v", got, s.Len(), want)
	}
	scopes := []Scope{ScopeInstance, ScopeHost, ScopeTenant}
	for i, p := range s.policies {
		if p.scope != scopes[i] {
			t.Errorf("policy %s has scope %s, want %s", p.name, p.scope, scopes[i])
		}
	}
}

func TestLoadErrors(t *testing.T) {
	// block wraps body lines in a policy block, so that body line n is
	// file line n+1.
	block := func(lines ...string) string {
		return "policy \"p\" {\n" + strings.Join(lines, "\n") + "\n}\n"
	}
	tests := []struct {
		name        string
		src         string
		wantSummary string
		wantDetail  string
		line, col   int
	}{{
		name: "unknown field",
		src: block(`  enforcement = "deny"`,
			`  rule        = "instance.resources.memroy > 0"`,
			`  message     = "m"`),
		wantSummary: "Invalid rule expression",
		wantDetail:  "undefined field 'memroy'",
		line:        3, col: 36, // the '.' before memroy
	}, {
		name: "rule not bool",
		src: block(`  enforcement = "deny"`,
			`  rule        = "instance.resources.memory"`,
			`  message     = "m"`),
		wantSummary: "Invalid rule expression",
		wantDetail:  "must have type bool, not int",
		line:        3, col: 17, // the opening quote
	}, {
		name: "variable outside scope",
		src: block(`  scope       = "host"`,
			`  enforcement = "deny"`,
			`  rule        = "host.name == instance.name"`,
			`  message     = "m"`),
		wantSummary: "Invalid rule expression",
		wantDetail:  "undeclared reference to 'instance'",
		line:        4, col: 31,
	}, {
		name: "tenant not declared in host scope",
		src: block(`  scope       = "host"`,
			`  enforcement = "deny"`,
			`  match       = "tenant.instances > 0"`,
			`  rule        = "true"`,
			`  message     = "m"`),
		wantSummary: "Invalid match expression",
		wantDetail:  "undeclared reference to 'tenant'",
		line:        4, col: 18,
	}, {
		name: "syntax error",
		src: block(`  enforcement = "deny"`,
			`  rule        = "instance.name == 'a' &&& true"`,
			`  message     = "m"`),
		wantSummary: "Invalid rule expression",
		wantDetail:  "Syntax error",
		line:        3, col: 41, // the third &
	}, {
		name: "syntax error in heredoc",
		src: block(`  enforcement = "deny"`,
			`  rule        = <<-EOT`,
			`    instance.name == 'a' &&`,
			`      instance.resources.pids >`,
			`  EOT`,
			`  message     = "m"`),
		wantSummary: "Invalid rule expression",
		wantDetail:  "Syntax error",
		line:        5, col: 32, // the end of the text
	}, {
		name: "unknown field in heredoc",
		src: block(`  enforcement = "deny"`,
			`  rule        = <<-EOT`,
			`    instance.name == 'a' &&`,
			`      instance.resources.pid > 1`,
			`  EOT`,
			`  message     = "m"`),
		wantSummary: "Invalid rule expression",
		wantDetail:  "undefined field 'pid'",
		line:        5, col: 25,
	}, {
		name: "escaped string falls back to the attribute",
		src: block(`  enforcement = "deny"`,
			`  rule        = "instance.name == \"a\" && instance.nam == 'b'"`,
			`  message     = "m"`),
		wantSummary: "Invalid rule expression",
		wantDetail:  "undefined field 'nam'",
		line:        3, col: 17,
	}, {
		name: "match not bool",
		src: block(`  enforcement = "deny"`,
			`  match       = "instance.name"`,
			`  rule        = "true"`,
			`  message     = "m"`),
		wantSummary: "Invalid match expression",
		wantDetail:  "must have type bool, not string",
		line:        3, col: 17,
	}, {
		name: "message_expr not string",
		src: block(`  enforcement = "deny"`,
			`  rule         = "true"`,
			`  message_expr = "instance.resources.memory"`),
		wantSummary: "Invalid message_expr expression",
		wantDetail:  "must have type string, not int",
		line:        4, col: 18,
	}, {
		name: "both message and message_expr",
		src: block(`  enforcement  = "deny"`,
			`  rule         = "true"`,
			`  message      = "m"`,
			`  message_expr = "'m'"`),
		wantSummary: "Conflicting message attributes",
		line:        5, col: 3,
	}, {
		name: "no message",
		src: block(`  enforcement = "deny"`,
			`  rule        = "true"`),
		wantSummary: "Missing message",
		line:        1, col: 1,
	}, {
		name: "missing rule",
		src: block(`  enforcement = "deny"`,
			`  message     = "m"`),
		wantSummary: "Missing required argument",
		wantDetail:  `"rule" is required`,
		line:        1, col: 12,
	}, {
		name: "bad enforcement",
		src: block(`  enforcement = "block"`,
			`  rule        = "true"`,
			`  message     = "m"`),
		wantSummary: "Invalid enforcement",
		line:        2, col: 17,
	}, {
		name: "bad scope",
		src: block(`  scope       = "cluster"`,
			`  enforcement = "deny"`,
			`  rule        = "true"`,
			`  message     = "m"`),
		wantSummary: "Invalid scope",
		line:        2, col: 17,
	}, {
		name: "rule not a string",
		src: block(`  enforcement = "deny"`,
			`  rule        = true`,
			`  message     = "m"`),
		wantSummary: "Incorrect attribute value type",
		line:        3, col: 17,
	}, {
		name: "unknown attribute",
		src: block(`  enforcement = "deny"`,
			`  rule        = "true"`,
			`  rules       = "true"`,
			`  message     = "m"`),
		wantSummary: "Unsupported argument",
		line:        4, col: 3,
	}, {
		name:        "bad name",
		src:         "policy \"Too_Big\" {\n  enforcement = \"deny\"\n  rule = \"true\"\n  message = \"m\"\n}\n",
		wantSummary: "Invalid policy name",
		line:        1, col: 8,
	}, {
		name: "cost over the limit",
		src: block(`  enforcement = "deny"`,
			`  rule        = "instance.args.all(a, instance.args.all(b, a.contains(b)))"`,
			`  message     = "m"`),
		wantSummary: "Invalid rule expression",
		wantDetail:  "more than the limit of 1000000",
		line:        3, col: 17,
	}, {
		name:        "HCL syntax error",
		src:         "policy \"p\" {\n  rule = \"true\n}\n",
		wantSummary: "Invalid multi-line string",
		line:        2, col: 15,
	}, {
		name:        "unknown block",
		src:         "rule \"p\" {\n}\n",
		wantSummary: "Unsupported block type",
		line:        1, col: 1,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, diags, files := load(t, tt.src)
			if s != nil || !diags.HasErrors() {
				t.Fatalf("Load() = %v, %v; want errors", s, diags)
			}
			d := diags[0]
			if !strings.Contains(d.Summary, tt.wantSummary) || !strings.Contains(d.Detail, tt.wantDetail) {
				t.Errorf("diagnostic %q: %q; want summary %q, detail containing %q", d.Summary, d.Detail, tt.wantSummary, tt.wantDetail)
			}
			if d.Subject == nil {
				t.Fatalf("diagnostic %q has no subject", d.Summary)
			}
			if d.Subject.Filename != files[0] || d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("diagnostic %q at %s:%d,%d; want %s:%d,%d", d.Summary,
					d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column, files[0], tt.line, tt.col)
			}
		})
	}
}

func TestLoadDuplicateNames(t *testing.T) {
	src := "policy \"p\" {\n  enforcement = \"deny\"\n  rule = \"true\"\n  message = \"m\"\n}\n"
	s, diags, files := load(t, src, "\n"+src)
	if s != nil || len(diags) != 1 {
		t.Fatalf("Load() = %v, %v; want one error", s, diags)
	}
	d := diags[0]
	wantDetail := fmt.Sprintf("already defined at %s:1,1", files[0])
	if d.Summary != "Duplicate policy name" || !strings.Contains(d.Detail, wantDetail) {
		t.Errorf("diagnostic %q: %q; want detail containing %q", d.Summary, d.Detail, wantDetail)
	}
	if d.Subject.Filename != files[1] || d.Subject.Start.Line != 2 || d.Subject.Start.Column != 8 {
		t.Errorf("diagnostic at %s; want %s:2,8", d.Subject, files[1])
	}
}

// TestReadmeExamples loads every HCL example in policies/README.md.
func TestReadmeExamples(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "policies", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(readme), "```hcl\n")[1:]
	if len(blocks) == 0 {
		t.Fatal("no examples in README.md")
	}
	for i, b := range blocks {
		src, _, _ := strings.Cut(b, "```")
		if _, diags, _ := load(t, src); diags.HasErrors() {
			t.Errorf("example %d: %v", i+1, diags)
		}
	}
}

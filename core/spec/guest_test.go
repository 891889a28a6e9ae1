package spec

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// guestHost writes a host spec whose artifacts directory holds a module,
// directories data and seed, files input.txt and seed.tar, and a symlink
// out pointing outside; it returns the host and the directory for tenant
// files (inside the artifacts directory, as a spec's relative paths are).
func guestHost(t *testing.T) (*Host, string) {
	t.Helper()
	dir := t.TempDir()
	host := `host "h" {
  capacity {
    cpu       = 1
    memory    = "512MiB"
    disk      = "1GiB"
    instances = 4
  }
}
runtime "wasm" {}
`
	files := map[string]string{"host.hcl": host, "app.wasm": "\x00asm", "input.txt": "in", "seed.tar": "", "data/a": "a", "seed/b": "b", "tenants/README": ""}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc", filepath.Join(dir, "out")); err != nil {
		t.Fatal(err)
	}
	h, diags := NewParser().LoadHost(filepath.Join(dir, "host.hcl"))
	if diags.HasErrors() {
		t.Fatalf("LoadHost:\n%s", dump(diags))
	}
	return h, dir
}

// guestTenant is a tenant file with one wasm instance whose body holds
// lines.
func guestTenant(lines ...string) string {
	return "tenant \"alice\" {\n  instance \"web\" {\n    runtime = \"wasm\"\n    module  = \"app.wasm\"\n" +
		strings.Join(lines, "\n") + "\n  }\n}\n"
}

func TestGuestDecode(t *testing.T) {
	h, dir := guestHost(t)
	src := guestTenant(
		`    stdin = "input.txt"`,
		`    mount {`,
		`      source = "data"`,
		`      guest  = "/data"`,
		`    }`,
		`    mount {`,
		`      source = "seed"`,
		`      guest  = "/opt/seed"`,
		`    }`,
		`    state {`,
		`      size = "1MiB"`,
		`      seed = "seed.tar"`,
		`    }`,
	)
	file := filepath.Join(dir, "alice.hcl")
	p := NewParser()
	tenants, diags := p.ParseTenant(file, []byte(src))
	if !diags.HasErrors() {
		tenants, diags = CheckTenants(h, tenants)
	}
	if diags.HasErrors() {
		t.Fatalf("diagnostics:\n%s", dump(diags))
	}
	in := tenants[0].Instances[0]
	want := Guest{
		Mounts:     []Mount{{Source: filepath.Join(dir, "data"), Guest: "/data"}, {Source: filepath.Join(dir, "seed"), Guest: "/opt/seed"}},
		Stdin:      filepath.Join(dir, "input.txt"),
		StateGuest: "/",
		StateSeed:  filepath.Join(dir, "seed.tar"),
	}
	if !slices.Equal(in.Mounts, want.Mounts) || in.Stdin != want.Stdin || in.StateGuest != want.StateGuest || in.StateSeed != want.StateSeed {
		t.Errorf("guest = %+v, want %+v", in.Guest, want)
	}
	// Without a state block, there is no state guest path; with guest,
	// the state is there.
	for _, tt := range []struct{ body, want string }{
		{"", ""},
		{"    state {\n      size = \"1MiB\"\n      guest = \"/state\"\n    }", "/state"},
	} {
		ts, diags := p.ParseTenant(file, []byte(guestTenant(tt.body)))
		if diags.HasErrors() {
			t.Fatalf("diagnostics:\n%s", dump(diags))
		}
		if got := ts[0].Instances[0].StateGuest; got != tt.want {
			t.Errorf("state guest = %q, want %q", got, tt.want)
		}
	}
}

func TestGuestErrors(t *testing.T) {
	h, dir := guestHost(t)
	mount := func(src, guest string) string {
		return "    mount {\n      source = \"" + src + "\"\n      guest  = \"" + guest + "\"\n    }"
	}
	state := func(lines ...string) string {
		return "    state {\n      size = \"1MiB\"\n" + strings.Join(lines, "\n") + "\n    }"
	}
	tests := []struct {
		name string
		body []string
		// want: summary, a part of the detail, and the line and column of
		// the subject.
		summary, detail string
		line, col       int
	}{
		{"relative guest", []string{mount("data", "data")}, `Invalid value for "guest"`, `"data" is not a guest path`, 7, 16},
		{"unclean guest", []string{mount("data", "/data/../etc")}, `Invalid value for "guest"`, "absolute, clean path", 7, 16},
		{"duplicate mount", []string{mount("data", "/data"), mount("seed", "/data")}, "Duplicate mount", "Another mount is at /data", 11, 16},
		{"mount over the state", []string{state(), mount("data", "/")}, "Mount over the state", "state is at /", 11, 16},
		{"mount over a moved state", []string{state(`      guest = "/state"`), mount("data", "/state")}, "Mount over the state", "state is at /state", 11, 16},
		{"missing source", []string{"    mount {\n      guest = \"/data\"\n    }"}, "Missing required argument", `"source" is required`, 5, 5},
		{"mount outside artifacts", []string{mount("/etc", "/etc")}, "Outside the artifacts directory", "/etc is not inside", 6, 16},
		{"mount through a symlink out", []string{mount("out", "/etc")}, "Outside the artifacts directory", "is not inside", 6, 16},
		{"mount escaping with ..", []string{mount("../../..", "/up")}, "Outside the artifacts directory", "is not inside", 6, 16},
		{"mount a file", []string{mount("input.txt", "/in")}, "Wrong kind of file", "is not a directory to mount", 6, 16},
		{"mount missing", []string{mount("nothing", "/n")}, "Not found", "nothing", 6, 16},
		{"stdin outside", []string{`    stdin = "/etc/passwd"`}, "Outside the artifacts directory", "/etc/passwd", 5, 13},
		{"stdin a directory", []string{`    stdin = "data"`}, "Wrong kind of file", "a regular file for stdin", 5, 13},
		{"seed outside", []string{state(`      seed = "/etc"`)}, "Outside the artifacts directory", "/etc is not inside", 7, 14},
		{"seed missing", []string{state(`      seed = "none.tar"`)}, "Not found", "none.tar", 7, 14},
		{"state guest relative", []string{state(`      guest = "state"`)}, `Invalid value for "guest"`, "not a guest path", 7, 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, "alice.hcl")
			src := guestTenant(tt.body...)
			tenants, diags := NewParser().ParseTenant(file, []byte(src))
			if !diags.HasErrors() {
				_, diags = CheckTenants(h, tenants)
			}
			errs := diags.Errs()
			if len(errs) != 1 {
				t.Fatalf("%d errors, want 1:\n%s\n%s", len(errs), dump(diags), src)
			}
			d := diags[0]
			if d.Summary != tt.summary || !strings.Contains(d.Detail, tt.detail) {
				t.Errorf("error %q: %q; want %q containing %q", d.Summary, d.Detail, tt.summary, tt.detail)
			}
			if d.Subject == nil || d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("error at %v, want line %d column %d\n%s", d.Subject, tt.line, tt.col, src)
			}
		})
	}
}

// TestExampleSpecs: the examples' tenant specs decode (without a host).
func TestExampleSpecs(t *testing.T) {
	for _, f := range []string{"../../examples/wasm-drop/tenants/dropper.hcl", "../../examples/quickstart/tenants/alice.hcl"} {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		abs, _ := filepath.Abs(f)
		tenants, diags := NewParser().ParseTenant(abs, src)
		if diags.HasErrors() || len(tenants) != 1 {
			t.Fatalf("%s:\n%s", f, dump(diags))
		}
		if in := tenants[0].Instances[0]; in.StateGuest != "/" {
			t.Errorf("%s: state at %q, want /", f, in.StateGuest)
		}
	}
}

package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/engine/enginetest"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
)

// TestFileSourceCache scans a tenant directory again and again through one
// FileSource: a file is decoded again only when its content changed, and
// the checks against the host run on every scan, on kept decodings too.
func TestFileSourceCache(t *testing.T) {
	dir := t.TempDir()
	policies, err := filepath.Abs("../../policies")
	if err != nil {
		t.Fatal(err)
	}
	hostFile, err := enginetest.WriteHost(dir, policies, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	h, diags := spec.NewParser().LoadHost(hostFile)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	src := &FileSource{Host: h}
	module := filepath.Join(dir, "artifacts", "app.wasm")
	file := func(i int) string { return filepath.Join(h.TenantDir, enginetest.TenantName(i)+".hcl") }
	// scan returns each file's first tenant (nil when invalid) and the
	// summary of its first diagnostic.
	scan := func() (tenants []*spec.Tenant, summaries []string) {
		snap := src.Scan(context.Background())
		for i := range 3 {
			f := snap.Files[engine.FileSource(h, file(i))]
			if f == nil {
				t.Fatalf("no file %s in the snapshot", file(i))
			}
			var tn *spec.Tenant
			if !f.Invalid() {
				tn = f.Tenants[0]
			}
			s := ""
			if len(f.Diags) > 0 {
				s = f.Diags[0].Summary
			}
			tenants, summaries = append(tenants, tn), append(summaries, s)
		}
		return tenants, summaries
	}
	first, _ := scan()
	for i, tn := range first {
		if tn == nil {
			t.Fatalf("file %d invalid on the first scan", i)
		}
	}
	steps := []struct {
		name  string
		do    func(t *testing.T)
		fresh []bool   // which files' tenants must be new decodings
		diags []string // each file's first diagnostic's summary
	}{
		{name: "unchanged", do: func(*testing.T) {}, fresh: []bool{false, false, false}, diags: []string{"", "", ""}},
		{name: "one file rewritten", do: func(t *testing.T) {
			if err := enginetest.WriteTenant(h.TenantDir, enginetest.TenantName(1), 2, "Changed"); err != nil {
				t.Fatal(err)
			}
		}, fresh: []bool{false, true, false}, diags: []string{"", "", ""}},
		{name: "same content written again", do: func(t *testing.T) {
			if err := enginetest.WriteTenant(h.TenantDir, enginetest.TenantName(1), 2, "Changed"); err != nil {
				t.Fatal(err)
			}
		}, fresh: []bool{false, false, false}, diags: []string{"", "", ""}},
		{name: "module gone: kept decodings are checked again", do: func(t *testing.T) {
			if err := os.Rename(module, module+".away"); err != nil {
				t.Fatal(err)
			}
		}, diags: []string{"Module not found", "Module not found", "Module not found"}},
		{name: "module back", do: func(t *testing.T) {
			if err := os.Rename(module+".away", module); err != nil {
				t.Fatal(err)
			}
		}, fresh: []bool{false, false, false}, diags: []string{"", "", ""}},
		{name: "a file replaced by a FIFO", do: func(t *testing.T) {
			if err := os.Remove(file(2)); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mkfifo(file(2), 0o644); err != nil {
				t.Fatal(err)
			}
		}, fresh: []bool{false, false, true}, diags: []string{"", "", "Failed to read file"}},
	}
	prev := first
	for _, st := range steps {
		st.do(t)
		got, summaries := scan()
		for i := range 3 {
			if summaries[i] != st.diags[i] {
				t.Errorf("%s: file %d: diagnostic %q, want %q", st.name, i, summaries[i], st.diags[i])
			}
			if st.diags[i] != "" {
				if got[i] != nil {
					t.Errorf("%s: file %d has tenants despite %q", st.name, i, st.diags[i])
				}
				continue
			}
			if fresh := got[i] != prev[i]; st.fresh != nil && fresh != st.fresh[i] {
				t.Errorf("%s: file %d decoded afresh: %v, want %v", st.name, i, fresh, st.fresh[i])
			}
		}
		if st.name == "one file rewritten" && !strings.Contains(got[1].Instances[0].Env["GREETING"], "Changed") {
			t.Errorf("%s: the new content is not decoded: %v", st.name, got[1].Instances[0].Env)
		}
		if !strings.HasPrefix(st.name, "module gone") {
			prev = got
		}
	}
}

// checker is a PluginChecker that refuses instances named "refused", fails
// to be asked while down is set, and decodes settings by marking them.
type checker struct {
	calls int
	down  bool
}

func (c *checker) CheckTenants(_ context.Context, tenants []*spec.Tenant) (hcl.Diagnostics, error) {
	c.calls++
	if c.down {
		return nil, errors.New("runtime \"wasm\": plugin exited")
	}
	var diags hcl.Diagnostics
	for _, t := range tenants {
		for i := range t.Instances {
			in := &t.Instances[i]
			in.Settings = sdk.Config{"checked": true}
			if in.Name == "refused" {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Unsupported setting", Subject: in.DeclRange.Ptr()})
			}
		}
	}
	return diags, nil
}

// TestFileSourcePluginChecks: each new decoding of a file is checked by the
// plugins once; what they refuse makes the file invalid; a plugin that can't
// be asked holds the file and is asked again at the next scan.
func TestFileSourcePluginChecks(t *testing.T) {
	dir := t.TempDir()
	policies, err := filepath.Abs("../../policies")
	if err != nil {
		t.Fatal(err)
	}
	hostFile, err := enginetest.WriteHost(dir, policies, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	h, diags := spec.NewParser().LoadHost(hostFile)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	c := &checker{}
	src := &FileSource{Host: h, Plugins: c}
	file := filepath.Join(h.TenantDir, enginetest.TenantName(0)+".hcl")
	scan := func() *FileSpec {
		return src.Scan(context.Background()).Files[engine.FileSource(h, file)]
	}
	steps := []struct {
		name    string
		do      func(t *testing.T)
		calls   int // checks so far
		invalid string
	}{
		{name: "first scan", calls: 1},
		{name: "unchanged: not checked again", calls: 1},
		{name: "plugin down", do: func(t *testing.T) {
			c.down = true
			if err := enginetest.WriteTenant(h.TenantDir, enginetest.TenantName(0), 1, "Changed"); err != nil {
				t.Fatal(err)
			}
		}, calls: 2, invalid: "Cannot check the spec with its plugins"},
		{name: "still down: asked again", calls: 3, invalid: "Cannot check the spec with its plugins"},
		{name: "back up", do: func(*testing.T) { c.down = false }, calls: 4},
		{name: "refused instance", do: func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(strings.Replace(string(data), `instance "`, `instance "refused" {
    runtime = "wasm"
    module  = "../artifacts/app.wasm"
  }
  instance "`, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
		}, calls: 5, invalid: "Unsupported setting"},
	}
	for _, st := range steps {
		if st.do != nil {
			st.do(t)
		}
		f := scan()
		if c.calls != st.calls {
			t.Errorf("%s: %d checks, want %d", st.name, c.calls, st.calls)
		}
		switch {
		case st.invalid == "" && f.Invalid():
			t.Errorf("%s: file invalid: %v", st.name, f.Diags)
		case st.invalid == "" && f.Tenants[0].Instances[0].Settings["checked"] != true:
			t.Errorf("%s: settings not decoded by the check", st.name)
		case st.invalid != "" && (!f.Invalid() || f.Tenants != nil):
			t.Errorf("%s: file valid, want %q", st.name, st.invalid)
		case st.invalid != "" && !strings.Contains(f.Diags.Error(), st.invalid):
			t.Errorf("%s: diagnostics %v, want %q", st.name, f.Diags, st.invalid)
		}
	}
}

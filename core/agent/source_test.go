package agent

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/engine/enginetest"
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
		snap := src.Scan()
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

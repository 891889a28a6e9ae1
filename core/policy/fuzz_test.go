package policy

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/kigumi/kigumi/core/spec"
)

// FuzzLoad loads arbitrary bytes as a policy file and evaluates what loads
// on a fixed host. It must never panic or hang, and must return a set
// exactly when there is no error.
func FuzzLoad(f *testing.F) {
	seeds, err := filepath.Glob("../../policies/*.hcl")
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seed policies: %v", err)
	}
	for _, s := range seeds {
		src, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	for _, expr := range []string{
		"instance.name.replace('-', '_') != ''",
		"instance.args.join(' ').size() < 100",
		"'%.3f'.format([1.5]) != ''",
		"tenant.totals.memory < host.capacity.memory",
	} {
		f.Add([]byte(rule(expr)))
	}
	file := filepath.Join(f.TempDir(), "p.hcl")
	f.Fuzz(func(t *testing.T, src []byte) {
		if err := os.WriteFile(file, src, 0o644); err != nil {
			t.Fatal(err)
		}
		p := spec.NewParser()
		s, diags := Load(p, []string{file})
		if (s == nil) != diags.HasErrors() {
			t.Fatalf("set %v with diagnostics %s", s, diags)
		}
		if err := spec.WriteDiagnostics(io.Discard, p.Files(), diags, true); err != nil {
			t.Fatal(err)
		}
		if s == nil {
			return
		}
		h, tenants := fixture()
		rep, err := s.Evaluate(context.Background(), h, tenants)
		if err != nil {
			t.Fatal(err)
		}
		_ = rep.Diagnostics()
	})
}

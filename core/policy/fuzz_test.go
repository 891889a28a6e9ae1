package policy

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

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
	// One seed per policy block, not per file: the fuzzer minimizes every
	// input that finds new coverage, at a cost that grows with the square
	// of its size, and a whole file's worth of policies kept the workers
	// minimizing for the whole run instead of fuzzing.
	for _, s := range seeds {
		src, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		file, diags := hclsyntax.ParseConfig(src, s, hcl.InitialPos)
		if diags.HasErrors() {
			f.Fatal(diags)
		}
		for _, b := range file.Body.(*hclsyntax.Body).Blocks {
			f.Add(b.Range().SliceBytes(src))
		}
	}
	// Two policies of one name: the checks across a file's blocks.
	f.Add([]byte(rule("true") + rule("false")))
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

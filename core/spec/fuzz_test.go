package spec

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// addSeeds adds every *.hcl file under testdata, outside testdata/fuzz
// (the corpus, which go test reads itself), as a seed of f.
func addSeeds(f *testing.F) {
	f.Helper()
	err := filepath.WalkDir("testdata", func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && path == filepath.Join("testdata", "fuzz") {
			return filepath.SkipDir
		}
		if !e.Type().IsRegular() || !strings.HasSuffix(path, ".hcl") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f.Add(src)
		return nil
	})
	if err != nil {
		f.Fatal(err)
	}
	// The shapes that used to overflow the stack, small.
	for _, s := range []string{
		"x = " + strings.Repeat("[", 70), "x = " + strings.Repeat("(", 70) + "1",
		strings.Repeat("a {\n", 70), "x = " + strings.Repeat("!", 70) + "true",
		"x = " + strings.Repeat(`"${`, 40), "x = \"" + strings.Repeat("%{if true}", 70) + "\"",
		"x = " + strings.Repeat("true ? 1 : ", 70) + "2",
	} {
		f.Add([]byte(s))
	}
}

// FuzzLoadHost decodes arbitrary bytes as a host spec. It must never panic
// or hang, and must return a host exactly when there is no error.
func FuzzLoadHost(f *testing.F) {
	addSeeds(f)
	dir := f.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "tenants"), 0o755); err != nil {
		f.Fatal(err)
	}
	file := filepath.Join(dir, "host.hcl")
	f.Fuzz(func(t *testing.T, src []byte) {
		p := NewParser()
		h, diags := p.parseHost(file, src)
		if (h == nil) != diags.HasErrors() {
			t.Fatalf("host %v with diagnostics %s", h, dump(diags))
		}
		if err := WriteDiagnostics(io.Discard, p.Files(), diags, true); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzParseTenant decodes arbitrary bytes as a tenant spec, and checks what
// it decodes against a host. It must never panic or hang.
func FuzzParseTenant(f *testing.F) {
	addSeeds(f)
	h, diags := NewParser().LoadHost("testdata/good/host.hcl")
	if diags.HasErrors() {
		f.Fatal(dump(diags))
	}
	file := filepath.Join(h.TenantDir, "fuzz.hcl")
	f.Fuzz(func(t *testing.T, src []byte) {
		p := NewParser()
		tenants, diags := p.ParseTenant(file, src)
		if (tenants == nil && len(diags) == 0) || (tenants != nil && diags.HasErrors()) {
			t.Fatalf("tenants %v with diagnostics %s", tenants, dump(diags))
		}
		if tenants != nil {
			checked, ds := CheckTenants(h, tenants)
			if (checked == nil) != ds.HasErrors() {
				t.Fatalf("checked tenants %v with diagnostics %s", checked, dump(ds))
			}
			diags = append(diags, ds...)
		}
		if err := WriteDiagnostics(io.Discard, p.Files(), diags, true); err != nil {
			t.Fatal(err)
		}
	})
}

package spec

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

// hostileHost writes a host spec with an empty tenants directory to a
// temporary directory and loads it.
func hostileHost(t *testing.T, p *Parser) *Host {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "tenants"), 0o755); err != nil {
		t.Fatal(err)
	}
	src := `host "h" {
  capacity {
    cpu       = 1
    memory    = "1GiB"
    disk      = "1GiB"
    instances = 100000
  }
}
runtime "wasm" {}
`
	if err := os.WriteFile(filepath.Join(dir, "host.hcl"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	h, diags := p.LoadHost(filepath.Join(dir, "host.hcl"))
	if diags.HasErrors() {
		t.Fatalf("host: %s", dump(diags))
	}
	return h
}

// writeTenant writes src as the tenant spec name of h.
func writeTenant(t *testing.T, h *Host, name string, src []byte) string {
	t.Helper()
	path := filepath.Join(h.TenantDir, name)
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadTenantsRefusesBadFiles(t *testing.T) {
	secret := "kigumi-secret-line"
	outside := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(outside, []byte(secret+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		make   func(t *testing.T, path string)
		detail string
	}{
		{"fifo", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "is not a regular file (a FIFO)"},
		{"dev-zero", func(t *testing.T, path string) {
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		}, "resolves to a file outside"},
		{"etc-passwd", func(t *testing.T, path string) {
			if err := os.Symlink("/etc/passwd", path); err != nil {
				t.Fatal(err)
			}
		}, "resolves to a file outside"},
		{"file-outside", func(t *testing.T, path string) {
			if err := os.Symlink(outside, path); err != nil {
				t.Fatal(err)
			}
		}, "resolves to a file outside"},
		{"fifo-inside", func(t *testing.T, path string) {
			fifo := filepath.Join(filepath.Dir(path), ".fifo")
			if err := syscall.Mkfifo(fifo, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(fifo, path); err != nil {
				t.Fatal(err)
			}
		}, "is not a regular file (a FIFO)"},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(path, "a.hcl"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}, ""}, // a directory is not listed
		{"too-large", func(t *testing.T, path string) {
			src := append([]byte("# "), bytes.Repeat([]byte("x"), MaxFileSize)...)
			if err := os.WriteFile(path, src, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "larger than the limit of 256 KiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewParser()
			h := hostileHost(t, p)
			path := filepath.Join(h.TenantDir, "x.hcl")
			tt.make(t, path)
			tenants, diags := p.LoadTenants(h)
			if tt.detail == "" {
				if diags.HasErrors() || len(tenants) != 0 {
					t.Fatalf("LoadTenants = %v, %s; want no tenants and no errors", tenants, dump(diags))
				}
				return
			}
			if tenants != nil {
				t.Errorf("LoadTenants returned tenants despite errors")
			}
			checkDiags(t, diags, wantDiag{"Failed to read file", tt.detail, path, 1, 1})
			var out bytes.Buffer
			if err := WriteDiagnostics(&out, p.Files(), diags, false); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(out.String(), secret) || strings.Contains(out.String(), "root:") {
				t.Errorf("the diagnostics show the target's content:\n%s", out.String())
			}
		})
	}
}

func TestLoadTenantsFollowsSymlinkInside(t *testing.T) {
	p := NewParser()
	h := hostileHost(t, p)
	writeTenant(t, h, ".real", []byte("tenant \"sym\" {}\n"))
	if err := os.Symlink(".real", filepath.Join(h.TenantDir, "sym.hcl")); err != nil {
		t.Fatal(err)
	}
	tenants, diags := p.LoadTenants(h)
	if diags.HasErrors() || len(tenants) != 1 || tenants[0].Name != "sym" {
		t.Fatalf("LoadTenants = %v, %s; want tenant sym", tenants, dump(diags))
	}
}

func TestHostSpecMustBeRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "host.hcl")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	h, diags := NewParser().LoadHost(fifo)
	if h != nil {
		t.Errorf("LoadHost returned a host")
	}
	checkDiags(t, diags, wantDiag{"Failed to read file", "not a regular file (a FIFO)", fifo, 1, 1})
	_, diags = NewParser().LoadHost("/dev/zero")
	checkDiags(t, diags, wantDiag{"Failed to read file", "not a regular file (a character device)", "/dev/zero", 1, 1})
}

// nested returns n copies of open, then body, then n copies of close.
func nested(n int, open, body, close string) []byte {
	return []byte(strings.Repeat(open, n) + body + strings.Repeat(close, n))
}

func TestNestingLimit(t *testing.T) {
	attr := func(expr []byte) []byte { return append([]byte("x = "), expr...) }
	tests := []struct {
		name string
		src  []byte
		// line and column where the limit is crossed; 0 when within it.
		line, col int
	}{
		{"lists", attr(nested(60000, "[", "", "]")), 1, 5 + MaxNesting},
		{"parens", attr(nested(100000, "(", "1", ")")), 1, 5 + MaxNesting},
		{"blocks", nested(200000, "a {\n", "", "}\n"), MaxNesting + 1, 3},
		{"objects", attr(nested(1000, "{a=", "1", "}")), 1, 5 + 3*MaxNesting},
		{"bangs", attr(nested(100000, "!", "true", "")), 1, 5 + MaxNesting},
		{"minuses", attr(nested(100000, "-", "1", "")), 1, 5 + MaxNesting},
		{"conditionals", attr(nested(1000, "true ? 1 : ", "2", "")), 1, 5 + 11*MaxNesting + 5},
		{"templates", attr(nested(1000, `"${`, "1", `}"`)), 1, 5 + 3*(MaxNesting/2)},
		{"directives", attr([]byte(`"` + strings.Repeat("%{if true}", 1000) + strings.Repeat("%{endif}", 1000) + `"`)), 1, 6 + 10*(MaxNesting-2)},
		{"heredocs", attr(nested(1000, "<<EOT\n${", "1", "}\nEOT\n")), MaxNesting/2 + 1, 3},
		{"at-limit", attr(nested(MaxNesting, "[", "", "]")), 0, 0},
		{"brackets-in-string", attr([]byte(`"` + strings.Repeat("[(", 100000) + `"`)), 0, 0},
		{"brackets-in-heredoc", attr([]byte("<<EOT\n" + strings.Repeat("{", 100000) + "\nEOT\n")), 0, 0},
		{"brackets-in-comment", []byte("# " + strings.Repeat("[", 100000) + "\n"), 0, 0},
		{"binary-minus", attr(nested(1000, "1 - ", "1", "")), 0, 0},
		{"many-lists", attr([]byte("[" + strings.Repeat("[!true ? 1 : 2], ", 1000) + "]")), 0, 0},
		{"many-attributes", []byte(strings.Repeat("x = !true ? -1 : 2\n", 1000)), 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const file = "/lease/nested.hcl"
			p := NewParser()
			_, diags := p.ParseTenant(file, tt.src)
			if tt.line == 0 {
				for _, d := range diags {
					if d.Summary == "Nesting too deep" || d.Summary == "Spec too large" {
						t.Fatalf("unexpected %s", dump(diags))
					}
				}
				return
			}
			checkDiags(t, diags, wantDiag{"Nesting too deep", fmt.Sprintf("more than %d levels", MaxNesting), file, tt.line, tt.col})
		})
	}
}

func TestTokenLimit(t *testing.T) {
	src := []byte("x = [" + strings.Repeat("1,", MaxTokens/2) + "]\n")
	_, diags := NewParser().ParseTenant("/lease/many.hcl", src)
	checkDiags(t, diags, wantDiag{"Spec too large", fmt.Sprintf("more than %d tokens", MaxTokens), "/lease/many.hcl", 1, 3 + MaxTokens})
}

func TestWriteDiagnosticsCapped(t *testing.T) {
	// Each character not used by the language is an error.
	src := "tenant \"many\" {}\n" + strings.Repeat("$", 80000) + "\n"
	p := NewParser()
	_, diags := p.ParseTenant("/lease/many.hcl", []byte(src))
	if len(diags) < 80000 {
		t.Fatalf("got %d diagnostics, want at least 80000", len(diags))
	}
	var out bytes.Buffer
	if err := WriteDiagnostics(&out, p.Files(), diags, false); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), ": Error: "); n != MaxPrintedDiagnostics {
		t.Errorf("printed %d diagnostics, want %d", n, MaxPrintedDiagnostics)
	}
	if !strings.HasSuffix(out.String(), fmt.Sprintf("... and %d more errors, not shown.\n", len(diags)-MaxPrintedDiagnostics)) {
		t.Errorf("output does not end with the count of the rest:\n%s", out.String()[max(0, out.Len()-300):])
	}
	if !strings.Contains(out.String(), "/lease/many.hcl:2,1: Error: Invalid character") || !strings.Contains(out.String(), "   2: $$$") {
		t.Errorf("the first diagnostic lacks its location or snippet:\n%s", out.String()[:500])
	}
}

func TestWriteDiagnosticsSanitizes(t *testing.T) {
	const esc = "\x1b]0;owned\x07\x1b[2J\r\u009b31m\xff"
	src := "tenant \"evil\" {\n  instance \"a\" {\n    runtime = \"wasm\"\n    image = \"" + esc + "x y\" # " + esc + "\n  }\n  " + esc + "\n}\n"
	p := NewParser()
	file := "evil\x1b[31m.hcl"
	_, diags := p.ParseTenant(file, []byte(src))
	if !diags.HasErrors() {
		t.Fatal("no errors")
	}
	diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "sum" + esc, Detail: "line one\n" + esc})
	var out bytes.Buffer
	if err := WriteDiagnostics(&out, p.Files(), diags, false); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for i := 0; i < len(got); i++ {
		if c := got[i]; (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f || c == 0xff {
			t.Fatalf("output holds control byte %#x at %d:\n%q", c, i, got)
		}
	}
	if strings.Contains(got, "\u009b") {
		t.Fatalf("output holds a C1 control:\n%q", got)
	}
	// Same length: the snippet marks the same place.
	want := `   4:     image = "?]0;owned??[2J?¿31m?x y" # ?]0;owned??[2J?¿31m?`
	if !strings.Contains(got, want) {
		t.Errorf("output lacks the sanitized snippet %q:\n%s", want, got)
	}
	if !strings.Contains(got, "evil?[31m.hcl:4,") {
		t.Errorf("output lacks the sanitized location:\n%s", got)
	}
}

func TestSanitizeKeepsLength(t *testing.T) {
	for _, s := range []string{"plain", "a\x1bb", "\u009b", "\xff\xfe", "tab\there", "é ∑ 🙂", "nl\n"} {
		if got := sanitize(s, true); len(got) != len(s) {
			t.Errorf("sanitize(%q) = %q, length %d, want %d", s, got, len(got), len(s))
		}
	}
}

func TestParseTenantNeedsNoHost(t *testing.T) {
	// Each of these is refused only by CheckTenants, against the host.
	for _, file := range []string{"missing-module.hcl", "unknown-runtime.hcl", "module-outside.hcl", "over-capacity.hcl"} {
		t.Run(file, func(t *testing.T) {
			path := testdata(t, "tenants/"+file)
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tenants, diags := NewParser().ParseTenant(path, src)
			if diags.HasErrors() || len(tenants) != 1 {
				t.Fatalf("ParseTenant = %v, %s; want one tenant", tenants, dump(diags))
			}
			if m := tenants[0].Instances[0].Module; m != "" && !filepath.IsAbs(m) {
				t.Errorf("module %q is not resolved against the spec's directory", m)
			}
			h := loadHost(t, NewParser(), "good/host.hcl")
			if tenants, diags := CheckTenants(h, tenants); tenants != nil || !diags.HasErrors() {
				t.Errorf("CheckTenants = %v, %s; want errors", tenants, dump(diags))
			}
		})
	}
}

func TestWriteDiagnosticsCutsLongLines(t *testing.T) {
	src := []byte("x = " + strings.Repeat("[", 1000) + strings.Repeat("]", 1000) + "\n")
	for _, color := range []bool{false, true} {
		p := NewParser()
		_, diags := p.ParseTenant("/lease/long.hcl", src)
		var out bytes.Buffer
		if err := WriteDiagnostics(&out, p.Files(), diags, color); err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(out.String(), "\n") {
			if len(line) > maxLineWidth+len("…\x1b[0m") {
				t.Errorf("color=%v: line of %d bytes: %.80q...", color, len(line), line)
			}
			if color && strings.Contains(line, "…") && !strings.HasSuffix(line, "…\x1b[0m") {
				t.Errorf("color=%v: cut line does not reset attributes: ...%q", color, line[len(line)-20:])
			}
		}
		if !strings.Contains(out.String(), "…") {
			t.Errorf("color=%v: no line was cut:\n%.300s", color, out.String())
		}
	}
}

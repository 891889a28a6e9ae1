package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestBadInput checks that bad input stops before anything changes, with
// exit code 1 and a diagnostic that names the file, line and column.
func TestBadInput(t *testing.T) {
	tests := []struct {
		name string
		// edit breaks the workspace.
		edit func(t *testing.T, w *workspace)
		args []string
		// want are regular expressions the output (stdout+stderr) must match.
		want []string
		// reject are regular expressions it must not match.
		reject []string
	}{
		{name: "negative memory",
			edit: func(t *testing.T, w *workspace) {
				replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), `memory = "64MiB"`, `memory = "-64MiB"`)
			},
			args: []string{"validate"},
			want: []string{`tenants/e2e\w+\.hcl:8,16: Error: Invalid value for "memory"`}},
		{name: "unknown attribute",
			edit: func(t *testing.T, w *workspace) {
				replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), `runtime     = "wasm"`, "runtime = \"wasm\"\n    colour = \"red\"")
			},
			args: []string{"plan"},
			want: []string{`\.hcl:4,5: Error: Unsupported argument`}},
		{name: "duplicate tenant",
			edit: func(t *testing.T, w *workspace) {
				data, _ := os.ReadFile(filepath.Join(w.tenants, w.names[0]+".hcl"))
				writeFile(t, filepath.Join(w.tenants, "zz-copy.hcl"), string(data))
			},
			args: []string{"apply", "--auto-approve"},
			want: []string{`zz-copy\.hcl:1,1: Error: Duplicate tenant`, `e2e\w+\.hcl:1,1`}},
		{name: "more memory than the host",
			edit: func(t *testing.T, w *workspace) {
				replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), `memory = "64MiB"`, `memory = "3GiB"`)
			},
			args: []string{"plan"},
			want: []string{`\.hcl:8,16: Error: Exceeds host capacity`}},
		{name: "missing module",
			edit: func(t *testing.T, w *workspace) {
				replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), appWasm, filepath.Join(filepath.Dir(appWasm), "missing.wasm"))
			},
			args: []string{"validate"},
			want: []string{`\.hcl:4,19: Error: Module not found`, `missing\.wasm`}},
		{name: "module outside the artifacts directory",
			edit: func(t *testing.T, w *workspace) {
				replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), appWasm, "/etc/hostname")
			},
			args: []string{"plan"},
			want: []string{`\.hcl:4,19: Error: Module outside the artifacts directory`}},
		{name: "module that is not wasm",
			edit: func(t *testing.T, w *workspace) {
				bad := filepath.Join(filepath.Dir(appWasm), w.names[0]+"-garbage.wasm")
				writeFile(t, bad, "#!/bin/sh\necho not wasm\n")
				replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), appWasm, bad)
			},
			args: []string{"validate"},
			want: []string{`\.hcl:4,19: Error: Invalid "module" of instance "app"`, `not a WebAssembly module`}},
		{name: "module importing what the runtime lacks",
			edit: func(t *testing.T, w *workspace) {
				bad := filepath.Join(filepath.Dir(appWasm), w.names[0]+"-import.wasm")
				writeFile(t, bad, "\x00asm\x01\x00\x00\x00\x02\x0b\x01\x03env\x03foo\x00\x00")
				replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), appWasm, bad)
			},
			args: []string{"plan"},
			want: []string{`\.hcl:4,19: Error: Invalid "module" of instance "app"`, `imports the function "env"\."foo"`}},
		{name: "mount outside the artifacts directory",
			edit: func(t *testing.T, w *workspace) {
				replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), `runtime     = "wasm"`, "runtime     = \"wasm\"\n    mount {\n      source = \"/etc\"\n      guest  = \"/etc\"\n    }")
			},
			args: []string{"validate"},
			want: []string{`\.hcl:5,16: Error: Outside the artifacts directory`}},
		{name: "random seed with the host's random",
			edit: func(t *testing.T, w *workspace) {
				f := filepath.Join(w.tenants, w.names[0]+".hcl")
				replaceIn(t, f, `runtime     = "wasm"`, "runtime     = \"wasm\"\n    settings {\n      random_seed = \"x\"\n    }")
				replaceIn(t, f, `permissions = ["state.write", "clock"]`, `permissions = ["state.write", "clock", "random"]`)
			},
			args: []string{"validate"},
			want: []string{`\.hcl:5,21: Error: Invalid setting "random_seed" of instance "app"`, `this one has the host's`}},
		{name: "time budget over the runtime's max",
			edit: func(t *testing.T, w *workspace) {
				replaceIn(t, w.host, `runtime "wasm" {}`, "runtime \"wasm\" {\n  max_time_budget = \"1m\"\n}")
				replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), `runtime     = "wasm"`, "runtime     = \"wasm\"\n    settings {\n      time_budget = \"2m\"\n    }")
			},
			args: []string{"plan"},
			want: []string{`\.hcl:5,21: Error: Invalid setting "time_budget" of instance "app"`, `over the runtime's max_time_budget of 1m0s`}},
		{name: "policy denial",
			edit: func(t *testing.T, w *workspace) {
				replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), `memory = "64MiB"`, `memory = "1536MiB"`)
			},
			args: []string{"apply", "--auto-approve"},
			want: []string{`Policy "[a-z-]+" denied tenant "e2e\w+"`, `policy defined at .*policies/tenant-totals\.hcl:\d+`, `e2e\w+\.hcl:1,1: Error: Policy`}},
		{name: "privileged setting",
			edit: func(t *testing.T, w *workspace) {
				replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), `runtime     = "wasm"`, "runtime     = \"wasm\"\n    settings {\n      privileged = true\n    }")
			},
			args: []string{"validate"},
			want: []string{`\.hcl:5,20: Error: Policy "no-privileged" denied tenant "e2e\w+" instance "app"`, `privileged mode is refused`, `policy defined at .*policies/containers\.hcl:\d+`}},
		{name: "unpinned image with the image-digest policy",
			edit: func(t *testing.T, w *workspace) {
				optIn, _ := filepath.Abs("../../policies/opt-in/image-digest.hcl")
				replaceIn(t, w.host, `policies      = [`, `policies      = [`+strconv.Quote(optIn)+`, `)
				replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), `module      = "`+appWasm+`"`, `image       = "127.0.0.1:1/app:1"`)
			},
			args: []string{"plan"},
			want: []string{`\.hcl:4,19: Error: Policy "image-digest" denied tenant "e2e\w+" instance "app"`, `image 127\.0\.0\.1:1/app:1 is not pinned`, `policy defined at .*policies/opt-in/image-digest\.hcl:\d+`}},
		{name: "archive outside the artifacts directory",
			edit: func(t *testing.T, w *workspace) {
				replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), `module      = "`+appWasm+`"`, `archive     = "/etc/hostname"`)
			},
			args: []string{"validate"},
			want: []string{`\.hcl:4,19: Error: Archive outside the artifacts directory`, `/etc/hostname is not inside the host's artifacts directory`}},
		{name: "plugin setting",
			edit: func(t *testing.T, w *workspace) {
				replaceIn(t, w.host, `runtime "wasm" {}`, "runtime \"wasm\" {\n  compiler = \"jit\"\n}")
			},
			args: []string{"validate"},
			want: []string{`host\.hcl:17,14: Error: Invalid runtime "wasm" setting "compiler"`}},
		{name: "unknown plugin setting",
			edit: func(t *testing.T, w *workspace) {
				replaceIn(t, w.host, `runtime "wasm" {}`, "runtime \"wasm\" {\n  turbo = true\n}")
			},
			args: []string{"validate"},
			want: []string{`host\.hcl:17,3: Error: Unsupported argument`, `turbo`}},
		{name: "unknown plugin",
			edit: func(t *testing.T, w *workspace) {
				replaceIn(t, w.host, `statefs "fuse" {}`, "statefs \"fuse\" {}\nledger \"nope\" {}")
			},
			args: []string{"validate"},
			want: []string{`host\.hcl:18,1: Error: Cannot use ledger plugin "nope"`}},
		{name: "FIFO as a tenant spec",
			edit: func(t *testing.T, w *workspace) {
				if err := syscall.Mkfifo(filepath.Join(w.tenants, "x.hcl"), 0o644); err != nil {
					t.Fatal(err)
				}
			},
			args: []string{"validate"},
			want: []string{`tenants/x\.hcl:1,1: Error: Failed to read file`, `x\.hcl is not a regular file \(a FIFO\)`}},
		{name: "tenant spec linked to /dev/zero",
			edit: func(t *testing.T, w *workspace) { symlink(t, "/dev/zero", filepath.Join(w.tenants, "x.hcl")) },
			args: []string{"plan"},
			want: []string{`tenants/x\.hcl:1,1: Error: Failed to read file`, `x\.hcl resolves to a file outside`}},
		{name: "tenant spec linked to /etc/passwd",
			edit:   func(t *testing.T, w *workspace) { symlink(t, "/etc/passwd", filepath.Join(w.tenants, "x.hcl")) },
			args:   []string{"validate"},
			want:   []string{`tenants/x\.hcl:1,1: Error: Failed to read file`, `x\.hcl resolves to a file outside`},
			reject: []string{`root:`, `nologin`}},
		{name: "60,000 nested lists",
			edit: func(t *testing.T, w *workspace) {
				writeFile(t, filepath.Join(w.tenants, "x.hcl"), "tenant \"x\" {\n  a = "+strings.Repeat("[", 60000)+strings.Repeat("]", 60000)+"\n}\n")
			},
			args: []string{"validate"},
			want: []string{`tenants/x\.hcl:2,70: Error: Nesting too deep`, `more than 64 levels`, `(?m)^ +2:   a = \[{100,}…$`}},
		{name: "100,000 nested parentheses",
			edit: func(t *testing.T, w *workspace) {
				writeFile(t, filepath.Join(w.tenants, "x.hcl"), "a = "+strings.Repeat("(", 100000)+"1"+strings.Repeat(")", 100000)+"\n")
			},
			args: []string{"validate"},
			want: []string{`tenants/x\.hcl:1,69: Error: Nesting too deep`}},
		{name: "50,000 nested blocks",
			edit: func(t *testing.T, w *workspace) {
				writeFile(t, filepath.Join(w.tenants, "x.hcl"), strings.Repeat("a{\n", 50000)+strings.Repeat("}\n", 50000))
			},
			args: []string{"validate"},
			want: []string{`tenants/x\.hcl:65,2: Error: Nesting too deep`}},
		{name: "200,000 nested blocks",
			edit: func(t *testing.T, w *workspace) {
				writeFile(t, filepath.Join(w.tenants, "x.hcl"), strings.Repeat("a {\n", 200000)+strings.Repeat("}\n", 200000))
			},
			args: []string{"validate"},
			want: []string{`tenants/x\.hcl:1,1: Error: Failed to read file`, `larger than the limit of 256 KiB`}},
		{name: "80,000 diagnostics of escape sequences",
			edit: func(t *testing.T, w *workspace) {
				writeFile(t, filepath.Join(w.tenants, "x.hcl"), strings.Repeat("\x1b", 80000))
			},
			args:   []string{"validate"},
			want:   []string{`tenants/x\.hcl:1,1: Error: Invalid character`, `(?m)^\.\.\. and 79981 more errors, not shown\.$`},
			reject: []string{`\x1b`}},
		{name: "escape sequences in a snippet",
			edit: func(t *testing.T, w *workspace) {
				writeFile(t, filepath.Join(w.tenants, "x.hcl"), "tenant \"x\" {\n  colour = \"\x1b]0;owned\x07\x1b[2J\u009b1m\"\n}\n")
			},
			args:   []string{"validate"},
			want:   []string{`tenants/x\.hcl:2,3: Error: Unsupported argument`, `colour = "\?\]0;owned\?\?\[2J¿1m"`},
			reject: []string{`[\x00-\x08\x0b-\x1f\x7f]`, `\x{9b}`}},
		{name: "apply without a terminal",
			args: []string{"apply"},
			want: []string{`pass --auto-approve`}},
		{name: "logs of an unknown instance",
			args: []string{"logs", "nobody/nothing"},
			want: []string{`no such instance`}},
		{name: "destroy of an unknown tenant",
			args: []string{"destroy", "--auto-approve", "ghost"},
			want: []string{`tenant "ghost": no such tenant`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorkspace(t, 1)
			if tt.edit != nil {
				tt.edit(t, w)
			}
			args := append([]string{tt.args[0], "-c", w.host}, tt.args[1:]...)
			code, out, errOut := kigumi(t, args...)
			all := out + errOut
			if code != exitInvalid {
				t.Errorf("exit %d, want %d\n%s", code, exitInvalid, all)
			}
			for _, re := range tt.want {
				if !regexp.MustCompile(re).MatchString(all) {
					t.Errorf("output does not match %q:\n%s", re, all)
				}
			}
			for _, re := range tt.reject {
				if regexp.MustCompile(re).MatchString(all) {
					t.Errorf("output matches %q:\n%q", re, all)
				}
			}
			// Nothing was applied.
			if _, err := os.Stat(filepath.Join(w.state, "tenants", w.names[0])); err == nil {
				t.Errorf("tenant home was created despite bad input")
			}
		})
	}
}

// TestUsage checks help and usage errors.
func TestUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, exitOK, "Usage: kigumi COMMAND"},
		{[]string{"apply", "--help"}, exitOK, "-auto-approve"},
		{[]string{"status", "-h"}, exitOK, "-json"},
		{[]string{"frobnicate"}, exitInvalid, `unknown command "frobnicate"`},
		{[]string{"plan", "--bogus"}, exitInvalid, "flag provided but not defined"},
		{[]string{"logs"}, exitInvalid, "wrong number of arguments"},
		{[]string{"plan", "-c", "/nonexistent/host.hcl"}, exitInvalid, "/nonexistent/host.hcl"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := kigumi(t, tt.args...)
			if code != tt.code || !strings.Contains(out+errOut, tt.want) {
				t.Errorf("exit %d (want %d), output lacks %q:\n%s%s", code, tt.code, tt.want, out, errOut)
			}
		})
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func replaceIn(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%s lacks %q", path, old)
	}
	writeFile(t, path, strings.Replace(string(data), old, new, 1))
}

package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nobody is the unprivileged user the non-root tests run kigumi as.
const nobody = 65534

// asNobody runs kigumi as nobody and returns its exit code and output.
func asNobody(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(kigumiBin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

// TestNonRoot: without root, kigumi refuses tenant users with a clear
// message; with tenant users off it runs every tenant as its own user, and
// the starter policy warns.
func TestNonRoot(t *testing.T) {
	w := newWorkspace(t, 1)
	// Everything nobody needs: its own state dir and a copy of the policies
	// (the repository may sit under a directory it can't enter).
	if err := os.Mkdir(w.state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(w.state, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	policies := filepath.Join(w.dir, "policies")
	if err := os.Mkdir(policies, 0o755); err != nil {
		t.Fatal(err)
	}
	src, _ := filepath.Glob("../../policies/*.hcl")
	for _, f := range src {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(policies, filepath.Base(f)), string(data))
	}
	repoPolicies, _ := filepath.Abs("../../policies")
	replaceIn(t, w.host, repoPolicies, policies)

	code, out := asNobody(t, "validate", "-c", w.host)
	if code != exitInvalid || !strings.Contains(out, "tenant users are on, and they need root") || !strings.Contains(out, "tenant_users = false") {
		t.Fatalf("validate as nobody with tenant users: exit %d\n%s", code, out)
	}

	replaceIn(t, w.host, "isolation {", "isolation {\n    tenant_users = false")
	tenant := w.names[0]
	steps := []struct {
		args []string
		want []string
	}{
		{[]string{"validate"}, []string{`Policy "tenant-users-on" warns`, "Valid:"}},
		{[]string{"apply", "--auto-approve"}, []string{"Apply complete: 2 created"}},
		{[]string{"status"}, []string{"running"}},
		{[]string{"destroy", "--auto-approve"}, []string{"Apply complete: 0 created, 0 updated, 2 destroyed, 0 restarted."}},
	}
	for _, st := range steps {
		args := append([]string{st.args[0], "-c", w.host}, st.args[1:]...)
		code, out := asNobody(t, args...)
		if code != exitOK {
			t.Fatalf("kigumi %s as nobody: exit %d\n%s", strings.Join(args, " "), code, out)
		}
		for _, want := range st.want {
			if !strings.Contains(out, want) {
				t.Errorf("kigumi %s as nobody: output lacks %q:\n%s", st.args[0], want, out)
			}
		}
		if st.args[0] == "status" {
			eventually(t, "the greeting in the logs", func() bool {
				_, out := asNobody(t, "logs", "-c", w.host, tenant+"/app")
				return strings.Contains(out, "Hello from "+tenant)
			})
		}
	}
}

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestApplyContainerdDown: an apply while containerd is down fails with
// an error naming its socket, and leaves nothing half-made: no tenant
// cgroup, and the next plan is the same create again.
func TestApplyContainerdDown(t *testing.T) {
	w := newWorkspace(t, 1)
	sock := filepath.Join(t.TempDir(), "containerd.sock")
	replaceIn(t, w.host, `runtime "wasm" {}`, fmt.Sprintf("runtime \"wasm\" {}\nruntime \"containerd\" {\n  address = %q\n}", sock))
	writeFile(t, filepath.Join(w.tenants, w.names[0]+".hcl"), fmt.Sprintf(`tenant %q {
  instance "box" {
    runtime = "containerd"
    image   = "127.0.0.1:1/kigumi/busybox:1"
    resources {
      memory = "64MiB"
      cpu    = 0.2
    }
  }
}
`, w.names[0]))
	plan := mustKigumi(t, "plan", "-c", w.host)
	code, out, errOut := kigumi(t, "apply", "-c", w.host, "--auto-approve")
	if code == 0 || !strings.Contains(out+errOut, "containerd at "+sock+" is not reachable") {
		t.Fatalf("apply: exit %d, want an error naming %s\nstdout:\n%s\nstderr:\n%s", code, sock, out, errOut)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory/kigumi", w.names[0])); err == nil {
		t.Error("the failed apply left the tenant's cgroup")
	}
	if again := mustKigumi(t, "plan", "-c", w.host); again != plan {
		t.Errorf("plan after the failed apply:\n%s\nwant the first plan:\n%s", again, plan)
	}
}

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSeededState: a seed in the artifacts directory fills a new
// instance's state once, owned by the tenant: the quickstart app finds the
// counter the seed holds and counts on from it; an update keeps what the
// workload wrote.
func TestSeededState(t *testing.T) {
	w := newWorkspace(t, 1)
	seed := filepath.Join(filepath.Dir(appWasm), w.names[0]+"-seed")
	if err := os.Mkdir(seed, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(seed) })
	writeFile(t, filepath.Join(seed, "counter"), "41\n")
	file := filepath.Join(w.tenants, w.names[0]+".hcl")
	replaceIn(t, file, `size = "4MiB"`, "size = \"4MiB\"\n      seed = \""+seed+"\"")
	mustKigumi(t, "validate", "-c", w.host)
	mustKigumi(t, "apply", "-c", w.host, "--auto-approve")
	in := status(t, w.host).Tenants[0].Instances[0]
	eventually(t, "the app counting on from the seed", func() bool {
		_, out, _ := kigumi(t, "logs", "-c", w.host, w.names[0]+"/app")
		return strings.Contains(out, "run 42\n")
	})
	fi, err := os.Stat(filepath.Join(in.StateDir, "counter"))
	if err != nil || ownerUID(fi) != status(t, w.host).Tenants[0].UID {
		t.Errorf("counter not owned by the tenant: %v", err)
	}
	// An update restarts the workload on the same state, not on the seed.
	w.writeTenant(t, w.names[0], "Bonjour")
	replaceIn(t, file, `size = "4MiB"`, "size = \"4MiB\"\n      seed = \""+seed+"\"")
	mustKigumi(t, "apply", "-c", w.host, "--auto-approve")
	eventually(t, "the updated app", func() bool {
		_, out, _ := kigumi(t, "logs", "-c", w.host, w.names[0]+"/app")
		return strings.Contains(out, "Bonjour")
	})
	_, out, _ := kigumi(t, "logs", "-c", w.host, w.names[0]+"/app")
	after := out[strings.LastIndex(out, "Bonjour"):]
	if strings.Contains(after, "run 42\n") {
		t.Errorf("the update seeded the state again:\n%s", out)
	}
}

package engine

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/kigumi/kigumi/core/engine/enginetest"
)

// TestStateSeededOnce: a seed fills a new instance's state once: not again
// on an update, nor by a new engine over the same records (an agent
// restart); a new instance of the same name is seeded afresh.
func TestStateSeededOnce(t *testing.T) {
	h := testHost(t)
	w := enginetest.NewWorld()
	w.StateRoot = t.TempDir()
	seed := t.TempDir()
	if err := os.WriteFile(filepath.Join(seed, "config.txt"), []byte("seeded"), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEngine(t, h, w)
	want := desired("alice")
	want[0].Instances[0].Spec.StateSeed = seed
	if _, err, _ := apply(t, e, want); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(w.StateRoot, "alice", "web", "config.txt")
	if b, err := os.ReadFile(config); err != nil || string(b) != "seeded" {
		t.Fatalf("config = %q, %v; want the seed's", b, err)
	}
	recs, err := e.store.TenantInstances("alice")
	if err != nil || len(recs) != 1 || recs[0].SeedPending {
		t.Fatalf("records %+v, %v: want the seed done", recs, err)
	}
	// The workload changes its state; an update and a restarted engine
	// keep it.
	if err := os.WriteFile(config, []byte("changed by the workload"), 0o644); err != nil {
		t.Fatal(err)
	}
	want[0].Instances[0].Spec.Args = []string{"--v2"}
	if _, err, _ := apply(t, e, want); err != nil {
		t.Fatal(err)
	}
	e.store.Close()
	e = newEngine(t, h, w)
	want[0].Instances[0].Spec.Args = []string{"--v3"}
	if _, err, _ := apply(t, e, want); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(config); string(b) != "changed by the workload" {
		t.Errorf("config = %q after an update and a restart: the state was seeded again", b)
	}
	// Destroyed and made again, the instance has a new state, seeded.
	if _, err, _ := apply(t, e, nil); err != nil {
		t.Fatal(err)
	}
	if _, err, _ := apply(t, e, want); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(config); string(b) != "seeded" {
		t.Errorf("config = %q in a new instance's state, want the seed's", b)
	}
}

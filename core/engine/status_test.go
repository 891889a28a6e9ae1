package engine

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/engine/enginetest"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

// TestStatusStateUsage: status reports each state's use; a StateFS that
// fails or hangs on one instance costs that instance its figure, at most
// UsageTimeout, and nothing else.
func TestStatusStateUsage(t *testing.T) {
	w := enginetest.NewWorld()
	e := newEngine(t, testHost(t), w)
	if _, err, _ := apply(t, e, desired("alice", "bob", "carol")); err != nil {
		t.Fatal(err)
	}
	w.Mu.Lock()
	w.Usage["alice/web"] = sdk.Usage{Bytes: 5, Inodes: 2, BytesLimit: 1 << 20, InodesLimit: 256}
	w.SlowUsage["bob/web"] = true
	w.Mu.Unlock()
	start := time.Now()
	st, err := e.Status(context.Background())
	if err != nil || len(st) != 3 {
		t.Fatalf("status = %+v, %v", st, err)
	}
	if took := time.Since(start); took > 3*UsageTimeout {
		t.Errorf("status took %s with a hanging Usage, want about %s", took, UsageTimeout)
	}
	got := map[string]InstanceStatus{}
	for _, ts := range st {
		got[ts.Name] = ts.Instances[0]
	}
	if a := got["alice"]; a.StateUsage == nil || *a.StateUsage != (StateUsage{Bytes: 5, BytesLimit: 1 << 20, Inodes: 2, InodesLimit: 256}) || a.StateError != "" {
		t.Errorf("alice: usage %+v, error %q", a.StateUsage, a.StateError)
	}
	if b := got["bob"]; b.StateUsage != nil || !strings.Contains(b.StateError, "longer than") || b.State != sdk.StateRunning {
		t.Errorf("bob (hanging Usage): usage %+v, error %q, state %s", b.StateUsage, b.StateError, b.State)
	}
	if c := got["carol"]; c.StateUsage != nil || !strings.Contains(c.StateError, "unsupported") || c.State != sdk.StateRunning {
		t.Errorf("carol (failing Usage): usage %+v, error %q, state %s", c.StateUsage, c.StateError, c.State)
	}
}

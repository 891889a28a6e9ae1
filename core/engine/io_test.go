package engine

import (
	"testing"

	"github.com/kigumi/kigumi/core/engine/enginetest"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

// TestIOLimitsApplied checks that an instance's I/O rates reach its
// cgroup and its state, and that its tenant's cgroup gets the sum over its
// instances, unlimited where one instance is.
func TestIOLimitsApplied(t *testing.T) {
	w := enginetest.NewWorld()
	e := newEngine(t, testHost(t), w)
	want := desired("alice")
	web := want[0].Instances[0]
	web.Spec.Resources.IO = sdk.IOLimits{ReadBPS: 4 << 20, WriteBPS: 1 << 20, WriteIOPS: 100}
	db := web
	db.Name = "db"
	db.Spec.Resources.IO = sdk.IOLimits{ReadBPS: 2 << 20, WriteBPS: 3 << 20, ReadIOPS: 50, WriteIOPS: 10}
	want[0].Instances = []plan.Instance{web, db}
	if _, err, _ := apply(t, e, want); err != nil {
		t.Fatal(err)
	}
	w.Mu.Lock()
	defer w.Mu.Unlock()
	if got := w.Limits["alice/web"].IO; got != web.Spec.Resources.IO {
		t.Errorf("instance cgroup rates %+v, want %+v", got, web.Spec.Resources.IO)
	}
	if got := w.StateIO["alice/db"]; got != db.Spec.Resources.IO {
		t.Errorf("state rates %+v, want %+v", got, db.Spec.Resources.IO)
	}
	wantTenant := sdk.IOLimits{ReadBPS: 6 << 20, WriteBPS: 4 << 20, ReadIOPS: 0, WriteIOPS: 110}
	if got := w.Limits["alice"]; got.IO != wantTenant {
		t.Errorf("tenant cgroup rates %+v, want %+v", got.IO, wantTenant)
	}
}

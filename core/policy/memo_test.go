package policy

import (
	"context"
	"slices"
	"testing"

	"github.com/kigumi/kigumi/core/spec"
)

// TestMemo evaluates a sequence of snapshots with one Memo and checks each
// report against a fresh Set.Evaluate: a tenant's kept decisions must be
// exactly those a full evaluation makes, also when another tenant's change
// moves the host totals that a tenant-scope rule reads.
func TestMemo(t *testing.T) {
	set, diags, _ := load(t, `policy "share" {
  scope       = "tenant"
  enforcement = "deny"
  rule        = "tenant.totals.memory * 2 <= host.allocated.memory"
  message     = "more than half"
}
policy "total" {
  scope       = "host"
  enforcement = "deny"
  rule        = "host.allocated.memory <= host.capacity.memory"
  message     = "over capacity"
}
policy "small" {
  scope       = "instance"
  enforcement = "warn"
  rule        = "instance.resources.memory <= 512 * 1024 * 1024"
  message     = "large"
}`)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	h, tenants := fixture()
	alice, bob := tenants[0], tenants[1]
	// grown is bob asking for memory as he did, times n: a new decoding.
	grown := func(n int64) *spec.Tenant {
		b := *bob
		b.Instances = slices.Clone(bob.Instances)
		b.Instances[0].Resources.MemoryBytes *= n
		return &b
	}
	bigBob, smallBob := grown(2), grown(0)
	memo := set.NewMemo()
	for _, step := range []struct {
		name    string
		tenants []*spec.Tenant
	}{
		{"first", []*spec.Tenant{alice, bob}},
		{"unchanged", []*spec.Tenant{alice, bob}},
		{"bob grows past the capacity", []*spec.Tenant{alice, bigBob}},
		{"bob shrinks: alice's share moves", []*spec.Tenant{alice, smallBob}},
		{"bob gone", []*spec.Tenant{alice}},
		{"bob back", []*spec.Tenant{alice, bob}},
	} {
		got, err := memo.Evaluate(context.Background(), h, step.tenants)
		if err != nil {
			t.Fatal(err)
		}
		want, err := set.Evaluate(context.Background(), h, step.tenants)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := outcomes(got), outcomes(want); !slices.Equal(g, w) {
			t.Errorf("%s: memo gives %v, want %v", step.name, g, w)
		}
		if got.Denied() != want.Denied() {
			t.Errorf("%s: memo denies %v, want %v", step.name, got.Denied(), want.Denied())
		}
	}
	// The steps above must have exercised both kinds of change.
	rep, _ := set.Evaluate(context.Background(), h, []*spec.Tenant{alice, smallBob})
	if !rep.Denied() {
		t.Error("alice alone holding the memory is not denied: the test shows no host-driven change")
	}
}

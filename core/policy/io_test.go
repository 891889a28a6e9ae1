package policy

import (
	"context"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// TestIORatesInput checks that policies see an instance's I/O rates, 0
// when unlimited.
func TestIORatesInput(t *testing.T) {
	s, diags, _ := load(t, `policy "rate" {
  scope       = "instance"
  enforcement = "deny"
  rule        = "instance.resources.io_write_bps > 0 && instance.resources.io_write_bps <= 50 * 1024 * 1024 && instance.resources.io_read_iops == 100 && instance.resources.io_read_bps + instance.resources.io_write_iops == 0"
  message     = "rate"
}`)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	h, tenants := fixture()
	tenants[0].Instances[0].Resources.IO = sdk.IOLimits{WriteBPS: 10 << 20, ReadIOPS: 100}
	rep, err := s.Evaluate(context.Background(), h, tenants)
	if err != nil {
		t.Fatal(err)
	}
	got := outcomes(rep)
	if len(got) != 2 || !got[0].allowed || got[1].allowed || got[1].target != "bob/api" {
		t.Errorf("outcomes %v: want alice/web allowed (10 MiB/s), bob/api denied (unlimited)", got)
	}
}

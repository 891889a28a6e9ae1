package plan

import (
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

// TestIOLimits checks a tenant's I/O rates: the sum of its instances',
// unlimited when one instance's is; raising keeps unlimited; an update
// shows the change.
func TestIOLimits(t *testing.T) {
	inst := func(io sdk.IOLimits) Instance {
		return Instance{Spec: state.InstanceSpec{Resources: sdk.Resources{MemoryBytes: 1, IO: io}}}
	}
	ten := Tenant{Instances: []Instance{
		inst(sdk.IOLimits{ReadBPS: 1 << 20, WriteBPS: 2 << 20, ReadIOPS: 10, WriteIOPS: 20}),
		inst(sdk.IOLimits{ReadBPS: 3 << 20, WriteBPS: 4 << 20, WriteIOPS: 5}),
	}}
	want := sdk.IOLimits{ReadBPS: 4 << 20, WriteBPS: 6 << 20, ReadIOPS: 0, WriteIOPS: 25}
	if got := ten.Limits().IO; got != want {
		t.Errorf("tenant rates %+v, want %+v", got, want)
	}
	if got := (Tenant{Instances: []Instance{inst(sdk.IOLimits{}), inst(sdk.IOLimits{ReadBPS: 1})}}).Limits().IO; got != (sdk.IOLimits{}) {
		t.Errorf("with an unlimited instance: %+v", got)
	}
	if got := maxResources(sdk.Resources{IO: sdk.IOLimits{ReadBPS: 1, WriteBPS: 5}}, sdk.Resources{IO: sdk.IOLimits{ReadBPS: 2}}).IO; got != (sdk.IOLimits{ReadBPS: 2}) {
		t.Errorf("raised rates %+v", got)
	}
	ch := resourceChanges("resources.", sdk.Resources{}, sdk.Resources{IO: sdk.IOLimits{WriteBPS: 1 << 20, ReadIOPS: 7}})
	if len(ch) != 2 || ch[0] != (Change{Field: "resources.io_write_bps", Old: "unlimited", New: "1.0 MiB/s"}) || ch[1] != (Change{Field: "resources.io_read_iops", Old: "unlimited", New: "7/s"}) {
		t.Errorf("changes %+v", ch)
	}
}

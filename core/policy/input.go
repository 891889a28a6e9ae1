package policy

import (
	"github.com/hashicorp/hcl/v2"
	ctyjson "github.com/zclconf/go-cty/cty/json"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/kigumi/kigumi/core/spec"
)

// The types below are what policies see as the variables host, tenant and
// instance. They are exposed to CEL as typed objects (policy.host, ...), so a
// misspelled field is a type error when a policy is loaded. Field names come
// from the cel tags; policies/README.md documents them.

type host struct {
	Name      string    `cel:"name"`
	Capacity  capacity  `cel:"capacity"`
	Isolation isolation `cel:"isolation"`
	Allocated allocated `cel:"allocated"`
	Tenants   int64     `cel:"tenants"`
}

type capacity struct {
	CPU       float64 `cel:"cpu"`
	Memory    int64   `cel:"memory"`
	Disk      int64   `cel:"disk"`
	Instances int64   `cel:"instances"`
}

type isolation struct {
	TenantUsers bool  `cel:"tenant_users"`
	UIDBase     int64 `cel:"uid_base"`
	SubIDBase   int64 `cel:"subid_base"`
	SubIDCount  int64 `cel:"subid_count"`
}

type allocated struct {
	CPU       float64 `cel:"cpu"`
	Memory    int64   `cel:"memory"`
	Disk      int64   `cel:"disk"`
	Pids      int64   `cel:"pids"`
	Instances int64   `cel:"instances"`
	State     int64   `cel:"state"`
}

type tenant struct {
	Name      string `cel:"name"`
	User      string `cel:"user"`
	Instances int64  `cel:"instances"`
	Totals    totals `cel:"totals"`
}

type totals struct {
	CPU    float64 `cel:"cpu"`
	Memory int64   `cel:"memory"`
	Disk   int64   `cel:"disk"`
	Pids   int64   `cel:"pids"`
	State  int64   `cel:"state"`
}

type instance struct {
	Name    string `cel:"name"`
	Tenant  string `cel:"tenant"`
	Runtime string `cel:"runtime"`
	Module  string `cel:"module"`
	Image   string `cel:"image"`
	Archive string `cel:"archive"`
	// Artifact is the kind of artifact the instance runs: "module",
	// "image" or "archive".
	Artifact    string            `cel:"artifact"`
	Digest      string            `cel:"digest"`
	Args        []string          `cel:"args"`
	Env         map[string]string `cel:"env"`
	Resources   resources         `cel:"resources"`
	StateSize   int64             `cel:"state_size"`
	Permissions []string          `cel:"permissions"`
	// What the workload sees of the host's files (spec.Guest).
	Mounts     []mount `cel:"mounts"`
	Stdin      string  `cel:"stdin"`
	StateGuest string  `cel:"state_guest"`
	StateSeed  string  `cel:"state_seed"`
	// Settings are the attributes of the settings block as written, a
	// map(string, dyn).
	Settings *structpb.Struct `cel:"settings"`
}

// mount is a read-only directory of the artifacts directory that the
// workload sees at guest.
type mount struct {
	Source string `cel:"source"`
	Guest  string `cel:"guest"`
}

type resources struct {
	CPU    float64 `cel:"cpu"`
	Memory int64   `cel:"memory"`
	Disk   int64   `cel:"disk"`
	Pids   int64   `cel:"pids"`
	// The disk I/O rates; 0 is unlimited.
	IOReadBPS   int64 `cel:"io_read_bps"`
	IOWriteBPS  int64 `cel:"io_write_bps"`
	IOReadIOPS  int64 `cel:"io_read_iops"`
	IOWriteIOPS int64 `cel:"io_write_iops"`
}

// artifactKind names the kind of artifact in runs.
func artifactKind(in *spec.Instance) string {
	switch {
	case in.Image != "":
		return "image"
	case in.Archive != "":
		return "archive"
	}
	return "module"
}

// cores converts thousandths of a core to cores.
func cores(milli int64) float64 { return float64(milli) / 1000 }

func newInstance(t *spec.Tenant, in *spec.Instance) *instance {
	perms := in.Permissions.Names()
	mounts := make([]mount, len(in.Mounts))
	for i, m := range in.Mounts {
		mounts[i] = mount{Source: m.Source, Guest: m.Guest}
	}
	return &instance{
		Name:     in.Name,
		Tenant:   t.Name,
		Runtime:  in.Runtime,
		Module:   in.Module,
		Image:    in.Image,
		Archive:  in.Archive,
		Artifact: artifactKind(in),
		Digest:   in.Digest,
		Args:     in.Args,
		Env:      in.Env,
		Resources: resources{
			CPU:    cores(in.Resources.MilliCPU),
			Memory: in.Resources.MemoryBytes,
			Disk:   in.Resources.DiskBytes,
			Pids:   in.Resources.Pids,

			IOReadBPS:   in.Resources.IO.ReadBPS,
			IOWriteBPS:  in.Resources.IO.WriteBPS,
			IOReadIOPS:  in.Resources.IO.ReadIOPS,
			IOWriteIOPS: in.Resources.IO.WriteIOPS,
		},
		StateSize:   in.StateBytes,
		Permissions: perms,
		Mounts:      mounts,
		Stdin:       in.Stdin,
		StateGuest:  in.StateGuest,
		StateSeed:   in.StateSeed,
		Settings:    settingsOf(in.SettingsBody),
	}
}

// settingsOf returns the attributes of a settings block as written, before
// the runtime's schema decodes them. An attribute whose value needs more
// than literals (or a nested block) is left out: the runtime's schema
// refuses it later.
func settingsOf(body hcl.Body) *structpb.Struct {
	out := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	if body == nil {
		return out
	}
	attrs, _ := body.JustAttributes()
	for name, a := range attrs {
		v, diags := a.Expr.Value(nil)
		if diags.HasErrors() || !v.IsWhollyKnown() {
			continue
		}
		b, err := ctyjson.Marshal(v, v.Type())
		if err != nil {
			continue
		}
		pv := &structpb.Value{}
		if protojson.Unmarshal(b, pv) == nil {
			out.Fields[name] = pv
		}
	}
	return out
}

// usage sums the resources of instances; CPU stays in thousandths of a core
// so that sums are exact.
type usage struct {
	milliCPU, memory, disk, pids, state, instances int64
}

func (u *usage) add(ins []spec.Instance) {
	for _, in := range ins {
		u.milliCPU += in.Resources.MilliCPU
		u.memory += in.Resources.MemoryBytes
		u.disk += in.Resources.DiskBytes
		u.pids += in.Resources.Pids
		u.state += in.StateBytes
		u.instances++
	}
}

func newTenant(h *spec.Host, t *spec.Tenant) *tenant {
	var u usage
	u.add(t.Instances)
	tv := &tenant{
		Name:      t.Name,
		Instances: u.instances,
		Totals: totals{
			CPU:    cores(u.milliCPU),
			Memory: u.memory,
			Disk:   u.disk,
			Pids:   u.pids,
			State:  u.state,
		},
	}
	if h.Isolation.TenantUsers {
		tv.User = "kg-" + t.Name
	}
	return tv
}

// newHost builds the host variable; allocated sums over every tenant's
// instances.
func newHost(h *spec.Host, tenants []*spec.Tenant) *host {
	var u usage
	for _, t := range tenants {
		u.add(t.Instances)
	}
	return &host{
		Name: h.Name,
		Capacity: capacity{
			CPU:       cores(h.Capacity.MilliCPU),
			Memory:    h.Capacity.MemoryBytes,
			Disk:      h.Capacity.DiskBytes,
			Instances: h.Capacity.MaxInstances,
		},
		Isolation: isolation{
			TenantUsers: h.Isolation.TenantUsers,
			UIDBase:     int64(h.Isolation.UIDBase),
			SubIDBase:   int64(h.Isolation.SubIDBase),
			SubIDCount:  int64(h.Isolation.SubIDCount),
		},
		Allocated: allocated{
			CPU:       cores(u.milliCPU),
			Memory:    u.memory,
			Disk:      u.disk,
			Pids:      u.pids,
			Instances: u.instances,
			State:     u.state,
		},
		Tenants: int64(len(tenants)),
	}
}

package sdk

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/kigumi/kigumi/core/sdk/v2/proto"
)

// This file converts between the SDK's Go types and their wire messages.
// Times cross in UTC; the zero time crosses as an absent timestamp. Empty
// slices and maps cross as nil, except inside Config, where they keep their
// type.

func schemaToPB(s Schema) *pb.Schema {
	m := &pb.Schema{}
	for _, a := range s.Attributes {
		m.Attributes = append(m.Attributes, &pb.Attribute{Name: a.Name, Type: string(a.Type), Required: a.Required, Description: a.Description})
	}
	for _, b := range s.Blocks {
		m.Blocks = append(m.Blocks, &pb.Block{Name: b.Name, Nesting: string(b.Nesting), Required: b.Required, Description: b.Description, Schema: schemaToPB(b.Schema)})
	}
	return m
}

func schemaFromPB(m *pb.Schema) Schema {
	var s Schema
	for _, a := range m.GetAttributes() {
		s.Attributes = append(s.Attributes, Attribute{Name: a.Name, Type: AttrType(a.Type), Required: a.Required, Description: a.Description})
	}
	for _, b := range m.GetBlocks() {
		s.Blocks = append(s.Blocks, Block{Name: b.Name, Nesting: Nesting(b.Nesting), Required: b.Required, Description: b.Description, Schema: schemaFromPB(b.Schema)})
	}
	return s
}

func capabilitiesToPB(c Capabilities) *pb.Capabilities {
	m := &pb.Capabilities{Scope: string(c.Scope), Artifacts: c.Artifacts, Isolation: c.Isolation, Features: c.Features}
	for _, p := range c.Permissions {
		ps := &pb.PermissionSpec{Name: p.Name, Description: p.Description}
		for _, a := range p.Params {
			ps.Params = append(ps.Params, &pb.PermissionParam{Name: a.Name, Required: a.Required, Description: a.Description})
		}
		m.Permissions = append(m.Permissions, ps)
	}
	return m
}

func capabilitiesFromPB(m *pb.Capabilities) Capabilities {
	c := Capabilities{Scope: Scope(m.GetScope()), Artifacts: m.GetArtifacts(), Isolation: m.GetIsolation(), Features: m.GetFeatures()}
	for _, p := range m.GetPermissions() {
		ps := PermissionSpec{Name: p.Name, Description: p.Description}
		for _, a := range p.Params {
			ps.Params = append(ps.Params, PermissionParam{Name: a.Name, Required: a.Required, Description: a.Description})
		}
		c.Permissions = append(c.Permissions, ps)
	}
	return c
}

func infoToPB(i Info) *pb.PluginInfo {
	return &pb.PluginInfo{
		Name: i.Name, Kind: string(i.Kind), Version: i.Version,
		Schema: schemaToPB(i.Schema), InstanceSchema: schemaToPB(i.InstanceSchema),
		Capabilities: capabilitiesToPB(i.Capabilities),
	}
}

func infoFromPB(m *pb.PluginInfo) Info {
	return Info{
		Name: m.Name, Kind: Kind(m.Kind), Version: m.Version,
		Schema: schemaFromPB(m.Schema), InstanceSchema: schemaFromPB(m.InstanceSchema),
		Capabilities: capabilitiesFromPB(m.Capabilities),
	}
}

// configToPB converts c; path prefixes the attribute named in an error.
func configToPB(c Config, path string) (*pb.Config, error) {
	if c == nil {
		return nil, nil
	}
	m := &pb.Config{Values: make(map[string]*pb.Value, len(c))}
	for k, v := range c {
		attr := path + k
		var val pb.Value
		switch v := v.(type) {
		case string:
			val.Kind = &pb.Value_StringValue{StringValue: v}
		case float64:
			val.Kind = &pb.Value_NumberValue{NumberValue: v}
		case bool:
			val.Kind = &pb.Value_BoolValue{BoolValue: v}
		case []string:
			val.Kind = &pb.Value_ListValue{ListValue: &pb.StringList{Values: v}}
		case map[string]string:
			val.Kind = &pb.Value_MapValue{MapValue: &pb.StringMap{Values: v}}
		case Config:
			b, err := configToPB(v, attr+".")
			if err != nil {
				return nil, err
			}
			if b == nil {
				return nil, InvalidAttribute(attr, "nil block")
			}
			val.Kind = &pb.Value_BlockValue{BlockValue: b}
		case []Config:
			list := &pb.ConfigList{Items: make([]*pb.Config, len(v))}
			for i, item := range v {
				b, err := configToPB(item, fmt.Sprintf("%s[%d].", attr, i))
				if err != nil {
					return nil, err
				}
				if b == nil {
					return nil, InvalidAttribute(fmt.Sprintf("%s[%d]", attr, i), "nil block")
				}
				list.Items[i] = b
			}
			val.Kind = &pb.Value_BlockList{BlockList: list}
		case map[string]Config:
			bm := &pb.ConfigMap{Items: make(map[string]*pb.Config, len(v))}
			for key, item := range v {
				b, err := configToPB(item, fmt.Sprintf("%s[%q].", attr, key))
				if err != nil {
					return nil, err
				}
				if b == nil {
					return nil, InvalidAttribute(fmt.Sprintf("%s[%q]", attr, key), "nil block")
				}
				bm.Items[key] = b
			}
			val.Kind = &pb.Value_BlockMap{BlockMap: bm}
		default:
			return nil, InvalidAttribute(attr, "unsupported setting value type %T", v)
		}
		m.Values[k] = &val
	}
	return m, nil
}

// configFromPB converts m; path prefixes the attribute named in an error.
func configFromPB(m *pb.Config, path string) (Config, error) {
	if m == nil {
		return nil, nil
	}
	c := make(Config, len(m.Values))
	for k, v := range m.Values {
		attr := path + k
		switch v := v.GetKind().(type) {
		case *pb.Value_StringValue:
			c[k] = v.StringValue
		case *pb.Value_NumberValue:
			c[k] = v.NumberValue
		case *pb.Value_BoolValue:
			c[k] = v.BoolValue
		case *pb.Value_ListValue:
			c[k] = append([]string{}, v.ListValue.GetValues()...)
		case *pb.Value_MapValue:
			mv := make(map[string]string, len(v.MapValue.GetValues()))
			for mk, s := range v.MapValue.GetValues() {
				mv[mk] = s
			}
			c[k] = mv
		case *pb.Value_BlockValue:
			b, err := configFromPB(v.BlockValue, attr+".")
			if err != nil {
				return nil, err
			}
			c[k] = nonNil(b)
		case *pb.Value_BlockList:
			list := make([]Config, len(v.BlockList.GetItems()))
			for i, item := range v.BlockList.GetItems() {
				b, err := configFromPB(item, fmt.Sprintf("%s[%d].", attr, i))
				if err != nil {
					return nil, err
				}
				list[i] = nonNil(b)
			}
			c[k] = list
		case *pb.Value_BlockMap:
			bm := make(map[string]Config, len(v.BlockMap.GetItems()))
			for key, item := range v.BlockMap.GetItems() {
				b, err := configFromPB(item, fmt.Sprintf("%s[%q].", attr, key))
				if err != nil {
					return nil, err
				}
				bm[key] = nonNil(b)
			}
			c[k] = bm
		default:
			return nil, InvalidAttribute(attr, "setting has no value of a known type")
		}
	}
	return c, nil
}

func nonNil(c Config) Config {
	if c == nil {
		return Config{}
	}
	return c
}

func configureToPB(r ConfigureRequest) (*pb.ConfigureRequest, error) {
	settings, err := configToPB(nonNil(r.Settings), "")
	if err != nil {
		return nil, err
	}
	return &pb.ConfigureRequest{
		Host: r.Host, Settings: settings, DataDir: r.DataDir,
		HostCapabilities: &pb.HostCapabilities{ProtocolMinor: r.HostCapabilities.ProtocolMinor, Features: r.HostCapabilities.Features},
	}, nil
}

func configureFromPB(m *pb.ConfigureRequest) (ConfigureRequest, error) {
	settings, err := configFromPB(m.Settings, "")
	if err != nil {
		return ConfigureRequest{}, err
	}
	return ConfigureRequest{
		Host: m.Host, Settings: nonNil(settings), DataDir: m.DataDir,
		HostCapabilities: HostCapabilities{ProtocolMinor: m.GetHostCapabilities().GetProtocolMinor(), Features: m.GetHostCapabilities().GetFeatures()},
	}, nil
}

func handleToPB(h Handle) *pb.Handle { return &pb.Handle{Version: h.Version, Data: h.Data} }

func handleFromPB(m *pb.Handle) Handle { return Handle{Version: m.GetVersion(), Data: m.GetData()} }

func timeToPB(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func timeFromPB(m *timestamppb.Timestamp) time.Time {
	if m == nil {
		return time.Time{}
	}
	return m.AsTime()
}

func instanceToPB(i Instance) *pb.Instance { return &pb.Instance{Tenant: i.Tenant, Name: i.Name} }

func instanceFromPB(m *pb.Instance) Instance {
	return Instance{Tenant: m.GetTenant(), Name: m.GetName()}
}

func userToPB(u User) *pb.User {
	return &pb.User{Name: u.Name, Uid: u.UID, Gid: u.GID, SubUid: u.SubUID, SubGid: u.SubGID, Count: u.Count, Home: u.Home}
}

func userFromPB(m *pb.User) User {
	return User{Name: m.GetName(), UID: m.GetUid(), GID: m.GetGid(), SubUID: m.GetSubUid(), SubGID: m.GetSubGid(), Count: m.GetCount(), Home: m.GetHome()}
}

func cgroupToPB(c Cgroup) *pb.Cgroup { return &pb.Cgroup{Path: c.Path, ProcsFiles: c.ProcsFiles} }

func cgroupFromPB(m *pb.Cgroup) Cgroup {
	return Cgroup{Path: m.GetPath(), ProcsFiles: m.GetProcsFiles()}
}

func resourcesToPB(r Resources) *pb.Resources {
	return &pb.Resources{MemoryBytes: r.MemoryBytes, MilliCpu: r.MilliCPU, DiskBytes: r.DiskBytes, Pids: r.Pids, Io: ioToPB(r.IO)}
}

func ioToPB(l IOLimits) *pb.IOLimits {
	if l == (IOLimits{}) {
		return nil
	}
	return &pb.IOLimits{ReadBps: l.ReadBPS, WriteBps: l.WriteBPS, ReadIops: l.ReadIOPS, WriteIops: l.WriteIOPS}
}

func ioFromPB(m *pb.IOLimits) IOLimits {
	return IOLimits{ReadBPS: m.GetReadBps(), WriteBPS: m.GetWriteBps(), ReadIOPS: m.GetReadIops(), WriteIOPS: m.GetWriteIops()}
}

func resourcesFromPB(m *pb.Resources) Resources {
	return Resources{MemoryBytes: m.GetMemoryBytes(), MilliCPU: m.GetMilliCpu(), DiskBytes: m.GetDiskBytes(), Pids: m.GetPids(), IO: ioFromPB(m.GetIo())}
}

func mountToPB(m Mount) *pb.MountPoint {
	return &pb.MountPoint{Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly, Type: m.Type, Options: m.Options, State: m.State}
}

func mountFromPB(m *pb.MountPoint) Mount {
	return Mount{Source: m.GetSource(), Target: m.GetTarget(), ReadOnly: m.GetReadOnly(), Type: m.GetType(), Options: m.GetOptions(), State: m.GetState()}
}

func tenantToPB(r *TenantRequest) *pb.TenantRequest {
	return &pb.TenantRequest{Tenant: r.Tenant, User: userToPB(r.User), Cgroup: cgroupToPB(r.Cgroup), RunDir: r.RunDir, Resources: resourcesToPB(r.Resources)}
}

func tenantFromPB(m *pb.TenantRequest) *TenantRequest {
	return &TenantRequest{Tenant: m.Tenant, User: userFromPB(m.User), Cgroup: cgroupFromPB(m.Cgroup), RunDir: m.RunDir, Resources: resourcesFromPB(m.Resources)}
}

func startToPB(r *StartRequest) (*pb.StartRequest, error) {
	settings, err := configToPB(r.Settings, "settings.")
	if err != nil {
		return nil, err
	}
	m := &pb.StartRequest{
		Instance:  instanceToPB(r.Instance),
		User:      userToPB(r.User),
		Cgroup:    cgroupToPB(r.Cgroup),
		Artifact:  &pb.Artifact{Module: r.Artifact.Module, Image: r.Artifact.Image, Archive: r.Artifact.Archive, Digest: r.Artifact.Digest},
		Args:      r.Args,
		Env:       r.Env,
		Resources: resourcesToPB(r.Resources),
		Settings:  settings,
		Tenant:    handleToPB(r.Tenant),
		RunDir:    r.RunDir,
		Stdin:     r.Stdin,
	}
	for _, p := range r.Permissions {
		m.Permissions = append(m.Permissions, &pb.Permission{Name: p.Name, Params: p.Params})
	}
	for _, mt := range r.Mounts {
		m.Mounts = append(m.Mounts, mountToPB(mt))
	}
	return m, nil
}

func startFromPB(m *pb.StartRequest) (*StartRequest, error) {
	settings, err := configFromPB(m.Settings, "settings.")
	if err != nil {
		return nil, err
	}
	r := &StartRequest{
		Instance:  instanceFromPB(m.Instance),
		User:      userFromPB(m.User),
		Cgroup:    cgroupFromPB(m.Cgroup),
		Artifact:  Artifact{Module: m.GetArtifact().GetModule(), Image: m.GetArtifact().GetImage(), Archive: m.GetArtifact().GetArchive(), Digest: m.GetArtifact().GetDigest()},
		Args:      m.Args,
		Env:       m.Env,
		Resources: resourcesFromPB(m.Resources),
		Settings:  settings,
		Tenant:    handleFromPB(m.Tenant),
		RunDir:    m.RunDir,
		Stdin:     m.GetStdin(),
	}
	for _, p := range m.Permissions {
		r.Permissions = append(r.Permissions, Permission{Name: p.Name, Params: p.Params})
	}
	for _, mt := range m.Mounts {
		r.Mounts = append(r.Mounts, mountFromPB(mt))
	}
	return r, nil
}

func durationFromPB(m *durationpb.Duration) (time.Duration, error) {
	if m == nil {
		return 0, nil
	}
	if err := m.CheckValid(); err != nil {
		return 0, InvalidAttribute("timeout", "%v", err)
	}
	return m.AsDuration(), nil
}

func statusToPB(s Status) *pb.Status {
	return &pb.Status{
		State:      string(s.State),
		Cause:      string(s.Cause),
		ExitCode:   int64(s.ExitCode),
		Signal:     int64(s.Signal),
		Pid:        int64(s.Pid),
		StartedAt:  timeToPB(s.StartedAt),
		FinishedAt: timeToPB(s.FinishedAt),
		Message:    s.Message,
	}
}

func statusFromPB(m *pb.Status) Status {
	return Status{
		State:      State(m.State),
		Cause:      Cause(m.Cause),
		ExitCode:   int(m.ExitCode),
		Signal:     int(m.Signal),
		Pid:        int(m.Pid),
		StartedAt:  timeFromPB(m.StartedAt),
		FinishedAt: timeFromPB(m.FinishedAt),
		Message:    m.Message,
	}
}

func exitToPB(e ExitEvent) *pb.ExitEvent {
	return &pb.ExitEvent{Instance: instanceToPB(e.Instance), Handle: handleToPB(e.Handle), Status: statusToPB(e.Status)}
}

func exitFromPB(m *pb.ExitEvent) ExitEvent {
	return ExitEvent{Instance: instanceFromPB(m.GetInstance()), Handle: handleFromPB(m.GetHandle()), Status: statusFromPB(m.GetStatus())}
}

func provisionToPB(r *ProvisionRequest) *pb.ProvisionRequest {
	return &pb.ProvisionRequest{Instance: instanceToPB(r.Instance), User: userToPB(r.User), SizeBytes: r.SizeBytes, InodeLimit: r.InodeLimit, Dir: r.Dir, Io: ioToPB(r.IO)}
}

func provisionFromPB(m *pb.ProvisionRequest) *ProvisionRequest {
	return &ProvisionRequest{Instance: instanceFromPB(m.Instance), User: userFromPB(m.User), SizeBytes: m.SizeBytes, InodeLimit: m.InodeLimit, Dir: m.Dir, IO: ioFromPB(m.GetIo())}
}

func usageToPB(u Usage) *pb.StateUsage {
	return &pb.StateUsage{Bytes: u.Bytes, Inodes: u.Inodes, BytesLimit: u.BytesLimit, InodesLimit: u.InodesLimit}
}

func usageFromPB(m *pb.StateUsage) Usage {
	return Usage{Bytes: m.Bytes, Inodes: m.Inodes, BytesLimit: m.BytesLimit, InodesLimit: m.InodesLimit}
}

func checkpointToPB(c Checkpoint) *pb.CheckpointInfo {
	return &pb.CheckpointInfo{Name: c.Name, CreatedAt: timeToPB(c.CreatedAt), Root: c.Root, Bytes: c.Bytes, Inodes: c.Inodes, Mount: c.Mount}
}

func checkpointFromPB(m *pb.CheckpointInfo) Checkpoint {
	return Checkpoint{Name: m.GetName(), CreatedAt: timeFromPB(m.GetCreatedAt()), Root: m.GetRoot(),
		Bytes: m.GetBytes(), Inodes: m.GetInodes(), Mount: m.GetMount()}
}

func leaseEventToPB(e LeaseEvent) *pb.LeaseEvent {
	return &pb.LeaseEvent{
		Id:            e.ID,
		Cursor:        e.Cursor,
		Kind:          string(e.Kind),
		Lease:         e.Lease,
		Tenant:        e.Tenant,
		Spec:          e.Spec,
		ExpiresAt:     timeToPB(e.ExpiresAt),
		Ledger:        e.Ledger,
		LedgerTime:    timeToPB(e.LedgerTime),
		ExpiresLedger: e.ExpiresLedger,
	}
}

func leaseEventFromPB(m *pb.LeaseEvent) LeaseEvent {
	return LeaseEvent{
		ID:            m.Id,
		Cursor:        m.Cursor,
		Kind:          LeaseEventKind(m.Kind),
		Lease:         m.Lease,
		Tenant:        m.Tenant,
		Spec:          m.Spec,
		ExpiresAt:     timeFromPB(m.ExpiresAt),
		Ledger:        m.Ledger,
		LedgerTime:    timeFromPB(m.LedgerTime),
		ExpiresLedger: m.ExpiresLedger,
	}
}

func replyToPB(r LeaseReply) *pb.LeaseReply {
	return &pb.LeaseReply{EventId: r.EventID, IdempotencyKey: r.IdempotencyKey, Lease: r.Lease, Ok: r.OK, Message: r.Message, Payload: r.Payload}
}

func replyFromPB(m *pb.LeaseReply) LeaseReply {
	return LeaseReply{EventID: m.EventId, IdempotencyKey: m.IdempotencyKey, Lease: m.Lease, OK: m.Ok, Message: m.Message, Payload: m.Payload}
}

// errNilRequest reports a nil request pointer passed to a client method.
func errNilRequest(method string) error {
	return &Error{Code: CodeInvalid, Message: fmt.Sprintf("%s: nil request", method)}
}

func progressToPB(p Progress) *pb.Progress {
	return &pb.Progress{Step: p.Step, Subject: p.Subject, PartsDone: p.PartsDone, Parts: p.Parts,
		Unit: p.Unit, BytesDone: p.BytesDone, BytesTotal: p.BytesTotal}
}

func progressFromPB(m *pb.Progress) Progress {
	return Progress{Step: m.GetStep(), Subject: m.GetSubject(), PartsDone: m.GetPartsDone(), Parts: m.GetParts(),
		Unit: m.GetUnit(), BytesDone: m.GetBytesDone(), BytesTotal: m.GetBytesTotal()}
}

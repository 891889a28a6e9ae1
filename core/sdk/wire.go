package sdk

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/kigumi/kigumi/core/sdk/v2/proto"
)

// This file converts between the SDK's Go types and their wire messages.
// Times cross in UTC; the zero time crosses as an absent timestamp.

func infoToPB(i Info) *pb.PluginInfo {
	attrs := make([]*pb.Attribute, len(i.Schema.Attributes))
	for n, a := range i.Schema.Attributes {
		attrs[n] = &pb.Attribute{Name: a.Name, Type: string(a.Type), Required: a.Required, Description: a.Description}
	}
	return &pb.PluginInfo{Name: i.Name, Kind: string(i.Kind), Version: i.Version, Schema: &pb.Schema{Attributes: attrs}}
}

func infoFromPB(m *pb.PluginInfo) Info {
	var attrs []Attribute
	for _, a := range m.GetSchema().GetAttributes() {
		attrs = append(attrs, Attribute{Name: a.Name, Type: AttrType(a.Type), Required: a.Required, Description: a.Description})
	}
	return Info{Name: m.Name, Kind: Kind(m.Kind), Version: m.Version, Schema: Schema{Attributes: attrs}}
}

func configureToPB(r ConfigureRequest) (*pb.ConfigureRequest, error) {
	settings := make(map[string]*pb.Value, len(r.Settings))
	for k, v := range r.Settings {
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
		default:
			return nil, InvalidAttribute(k, "unsupported setting value type %T", v)
		}
		settings[k] = &val
	}
	return &pb.ConfigureRequest{Host: r.Host, Settings: settings, DataDir: r.DataDir}, nil
}

func configureFromPB(m *pb.ConfigureRequest) (ConfigureRequest, error) {
	settings := make(Config, len(m.Settings))
	for k, v := range m.Settings {
		switch v := v.GetKind().(type) {
		case *pb.Value_StringValue:
			settings[k] = v.StringValue
		case *pb.Value_NumberValue:
			settings[k] = v.NumberValue
		case *pb.Value_BoolValue:
			settings[k] = v.BoolValue
		case *pb.Value_ListValue:
			settings[k] = append([]string{}, v.ListValue.GetValues()...)
		case *pb.Value_MapValue:
			mv := make(map[string]string, len(v.MapValue.GetValues()))
			for mk, s := range v.MapValue.GetValues() {
				mv[mk] = s
			}
			settings[k] = mv
		default:
			return ConfigureRequest{}, InvalidAttribute(k, "setting has no value of a known type")
		}
	}
	return ConfigureRequest{Host: m.Host, Settings: settings, DataDir: m.DataDir}, nil
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

func startToPB(r *StartRequest) *pb.StartRequest {
	perms := make([]string, len(r.Permissions))
	for i, p := range r.Permissions {
		perms[i] = string(p)
	}
	return &pb.StartRequest{
		Instance: instanceToPB(r.Instance),
		User:     userToPB(r.User),
		Cgroup:   &pb.Cgroup{Path: r.Cgroup.Path, ProcsFiles: r.Cgroup.ProcsFiles},
		Artifact: &pb.Artifact{Module: r.Artifact.Module, Image: r.Artifact.Image, Digest: r.Artifact.Digest},
		Args:     r.Args,
		Env:      r.Env,
		Resources: &pb.Resources{
			MemoryBytes: r.Resources.MemoryBytes,
			MilliCpu:    r.Resources.MilliCPU,
			DiskBytes:   r.Resources.DiskBytes,
			Pids:        r.Resources.Pids,
		},
		Permissions: perms,
		StateDir:    r.StateDir,
		RunDir:      r.RunDir,
	}
}

func startFromPB(m *pb.StartRequest) *StartRequest {
	var perms []Permission
	for _, p := range m.Permissions {
		perms = append(perms, Permission(p))
	}
	return &StartRequest{
		Instance: instanceFromPB(m.Instance),
		User:     userFromPB(m.User),
		Cgroup:   Cgroup{Path: m.GetCgroup().GetPath(), ProcsFiles: m.GetCgroup().GetProcsFiles()},
		Artifact: Artifact{Module: m.GetArtifact().GetModule(), Image: m.GetArtifact().GetImage(), Digest: m.GetArtifact().GetDigest()},
		Args:     m.Args,
		Env:      m.Env,
		Resources: Resources{
			MemoryBytes: m.GetResources().GetMemoryBytes(),
			MilliCPU:    m.GetResources().GetMilliCpu(),
			DiskBytes:   m.GetResources().GetDiskBytes(),
			Pids:        m.GetResources().GetPids(),
		},
		Permissions: perms,
		StateDir:    m.StateDir,
		RunDir:      m.RunDir,
	}
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
		ExitCode:   int64(s.ExitCode),
		Pid:        int64(s.Pid),
		StartedAt:  timeToPB(s.StartedAt),
		FinishedAt: timeToPB(s.FinishedAt),
		Message:    s.Message,
	}
}

func statusFromPB(m *pb.Status) Status {
	return Status{
		State:      State(m.State),
		ExitCode:   int(m.ExitCode),
		Pid:        int(m.Pid),
		StartedAt:  timeFromPB(m.StartedAt),
		FinishedAt: timeFromPB(m.FinishedAt),
		Message:    m.Message,
	}
}

func provisionToPB(r *ProvisionRequest) *pb.ProvisionRequest {
	return &pb.ProvisionRequest{Instance: instanceToPB(r.Instance), User: userToPB(r.User), SizeBytes: r.SizeBytes, Dir: r.Dir}
}

func provisionFromPB(m *pb.ProvisionRequest) *ProvisionRequest {
	return &ProvisionRequest{Instance: instanceFromPB(m.Instance), User: userFromPB(m.User), SizeBytes: m.SizeBytes, Dir: m.Dir}
}

func leaseEventToPB(e LeaseEvent) *pb.LeaseEvent {
	return &pb.LeaseEvent{
		Cursor:    e.Cursor,
		Kind:      string(e.Kind),
		Lease:     e.Lease,
		Tenant:    e.Tenant,
		Spec:      e.Spec,
		ExpiresAt: timeToPB(e.ExpiresAt),
	}
}

func leaseEventFromPB(m *pb.LeaseEvent) LeaseEvent {
	return LeaseEvent{
		Cursor:    m.Cursor,
		Kind:      LeaseEventKind(m.Kind),
		Lease:     m.Lease,
		Tenant:    m.Tenant,
		Spec:      m.Spec,
		ExpiresAt: timeFromPB(m.ExpiresAt),
	}
}

// errNilRequest reports a nil request pointer passed to a client method.
func errNilRequest(method string) error {
	return &Error{Code: CodeInvalid, Message: fmt.Sprintf("%s: nil request", method)}
}

package ctrruntime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// cpuPeriod is the CFS period of every container, in microseconds.
const cpuPeriod = 100000

// containerCgroup is the cgroup of an instance's container: a child of the
// instance's cgroup, which runc makes and removes, so that the instance's
// own limits (set by the core) hold over it too.
func containerCgroup(instance string) string {
	if instance == "" {
		return ""
	}
	return instance + "/ctr"
}

// specOpts generate the container's OCI spec, on the container's
// snapshot (WithImageConfig reads the image's /etc/group).
func (r *Runtime) specOpts(img containerd.Image, req *sdk.StartRequest, set instanceSettings, d handleData) []oci.SpecOpts {
	u := req.User
	opts := []oci.SpecOpts{
		oci.WithImageConfig(img),
		oci.WithHostname(req.Instance.Name),
		oci.WithEnv(envList(req.Env)),
		oci.WithUIDGID(set.workloadUID, set.workloadUID),
		oci.WithNoNewPrivileges,
		withNoCapabilities,
		seccomp.WithDefaultProfile(),
		oci.WithRootFSReadonly(),
		withMounts(r.tmpBytes, req, set),
		withoutHostNamespaces(d.Daemon == ""),
	}
	if d.Daemon == "" {
		opts = append(opts, oci.WithUserNamespace(idMap(set.workloadUID, u.UID, u.SubUID, u.Count), idMap(set.workloadUID, u.GID, u.SubGID, u.Count)))
	}
	if set.entrypoint != nil || len(req.Args) > 0 {
		opts = append(opts, withArgs(set.entrypoint, req.Args))
	}
	// A rootless daemon cannot make cgroups on cgroup v1: the plugin makes
	// the container's and sets its limits (joinCgroup).
	switch {
	case d.Daemon != "":
		// No cgroup path: runc then leaves the process in the shim's
		// cgroup, and joinCgroup moves it before it starts.
		opts = append(opts, oci.WithCgroup(""))
	case d.Cgroup != "":
		opts = append(opts, withResources(req.Resources), oci.WithCgroup(d.Cgroup))
	default:
		opts = append(opts, withResources(req.Resources))
	}
	return opts
}

// idMap maps the container's ids to the tenant's: the workload id to the
// tenant's own id (which owns its state), every other id to the same id in
// the tenant's subordinate range, so that container root is an
// unprivileged id no other tenant has.
func idMap(workload, tenant, sub, count uint32) []specs.LinuxIDMapping {
	m := []specs.LinuxIDMapping{
		{ContainerID: 0, HostID: sub, Size: workload},
		{ContainerID: workload, HostID: tenant, Size: 1},
	}
	if count > workload+1 {
		m = append(m, specs.LinuxIDMapping{ContainerID: workload + 1, HostID: sub + workload + 1, Size: count - workload - 1})
	}
	return m
}

// envList returns env as sorted KEY=VALUE strings.
func envList(env map[string]string) []string {
	l := make([]string, 0, len(env))
	for k, v := range env {
		l = append(l, k+"="+v)
	}
	sort.Strings(l)
	return l
}

// withArgs sets the process's args: the entrypoint (or the image's, which
// WithImageConfig set) followed by args (instead of the image's cmd).
func withArgs(entrypoint, args []string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if entrypoint == nil {
			// The image's entrypoint and cmd are joined in Args already;
			// the instance's args replace the whole command.
			s.Process.Args = slices.Clone(args)
			return nil
		}
		s.Process.Args = append(slices.Clone(entrypoint), args...)
		return nil
	}
}

// withNoCapabilities empties every capability set, and drops the
// supplementary groups an image could name.
func withNoCapabilities(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding: []string{}, Effective: []string{}, Inheritable: []string{}, Permitted: []string{}, Ambient: []string{},
	}
	s.Process.User.AdditionalGids = nil
	return nil
}

// withoutHostNamespaces gives the container a fresh namespace of every
// kind, none shared with the host: a network namespace with loopback only,
// and, with userns, a user namespace. In a tenant's rootless daemon the
// container shares the daemon's user namespace, which maps every id into
// the tenant's range.
func withoutHostNamespaces(userns bool) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		want := []specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace, specs.NetworkNamespace}
		if userns {
			want = append(want, specs.UserNamespace)
		}
		var ns []specs.LinuxNamespace
		for _, t := range want {
			ns = append(ns, specs.LinuxNamespace{Type: t})
		}
		s.Linux.Namespaces = ns
		return nil
	}
}

// withMounts drops the default spec's cgroupfs (a bind of host cgroup dirs
// on cgroup v1), caps the default tmpfs mounts, adds a tmpfs /tmp of
// tmpBytes and binds the state.
func withMounts(tmpBytes int64, req *sdk.StartRequest, set instanceSettings) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		var ms []specs.Mount
		for _, m := range s.Mounts {
			switch m.Destination {
			case "/sys/fs/cgroup", "/tmp", set.statePath:
				continue
			}
			ms = append(ms, m)
		}
		ms = append(ms, specs.Mount{
			Destination: "/tmp", Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "noexec", "mode=1777", fmt.Sprintf("size=%d", tmpBytes)},
		})
		if set.state != nil {
			mode := "rw"
			if stateReadOnly(req, set) {
				mode = "ro"
			}
			ms = append(ms, specs.Mount{
				Destination: set.statePath, Type: "bind", Source: set.state.Source,
				Options: []string{"rbind", "nosuid", "nodev", mode},
			})
		}
		s.Mounts = ms
		return nil
	}
}

// withResources sets the instance's limits on the container's cgroup.
func withResources(res sdk.Resources) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		lr := linuxResources(res)
		if s.Linux.Resources != nil {
			lr.Devices = s.Linux.Resources.Devices
		}
		s.Linux.Resources = lr
		return nil
	}
}

// linuxResources are the instance's limits: memory with no swap beyond
// it, CPU as a CFS quota, and pids.
func linuxResources(res sdk.Resources) *specs.LinuxResources {
	lr := &specs.LinuxResources{}
	if m := res.MemoryBytes; m > 0 {
		swappiness := uint64(0)
		lr.Memory = &specs.LinuxMemory{Limit: &m, Swap: &m, Swappiness: &swappiness}
	}
	if res.MilliCPU > 0 {
		quota, period := res.MilliCPU*cpuPeriod/1000, uint64(cpuPeriod)
		lr.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if res.Pids > 0 {
		lr.Pids = &specs.LinuxPids{Limit: res.Pids}
	}
	return lr
}

// writeSpec writes the spec for reviewers.
func writeSpec(path string, s *oci.Spec) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode spec: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write spec: %w", err)
	}
	return nil
}

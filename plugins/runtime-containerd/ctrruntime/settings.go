package ctrruntime

import (
	"math"
	"path"
	"path/filepath"
	"strings"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/internal/registry"
)

// Defaults of the instance settings.
const (
	defaultWorkloadUID = 10000
)

// statePath is where a container sees its state: the spec's state guest,
// but sdk.StateTarget for the default guest "/" (made for WASI programs):
// a container's root is its image.
func statePath(guest string) (string, error) {
	switch {
	case guest == "/" || guest == "":
		return sdk.StateTarget, nil
	case !path.IsAbs(guest) || path.Clean(guest) != guest || guest == "/proc" || guest == "/sys" || guest == "/dev" || guest == "/tmp" ||
		strings.HasPrefix(guest, "/proc/") || strings.HasPrefix(guest, "/sys/") || strings.HasPrefix(guest, "/dev/") || strings.HasPrefix(guest, "/tmp/"):
		return "", sdk.InvalidAttribute("state.guest", "a container's state goes at a clean absolute path outside /proc, /sys, /dev and /tmp, not %q", guest)
	}
	return guest, nil
}

// instanceSettings are an instance's decoded settings, with defaults.
type instanceSettings struct {
	entrypoint  []string
	workloadUID uint32
	statePath   string
	// network is the instance's network, nil for loopback only.
	network *instanceNetwork
	// state is the state mount, nil without one.
	state *sdk.Mount
}

// check checks what a StartRequest asks of the runtime, apart from the
// places Start alone needs (run dir, ids), and decodes its settings.
// Refusals name the spec attribute at fault.
func (r *Runtime) check(req *sdk.StartRequest) (instanceSettings, error) {
	set := instanceSettings{workloadUID: defaultWorkloadUID}
	switch {
	case req.Instance.Name == "" || req.Instance.Tenant == "":
		return set, sdk.Errorf(sdk.CodeInvalid, "instance has no name or tenant")
	case !containerID.MatchString(idOf(req.Instance)):
		return set, sdk.Errorf(sdk.CodeInvalid, "instance %s: its name makes no containerd id", req.Instance)
	case req.Artifact.Module != "":
		return set, sdk.InvalidAttribute("module", "the containerd runtime runs OCI images, not wasm modules")
	case req.Artifact.Archive != "" && !filepath.IsAbs(req.Artifact.Archive):
		return set, sdk.InvalidAttribute("archive", "%q is not an absolute path", req.Artifact.Archive)
	case req.Artifact.Archive != "" && req.Artifact.Image != "":
		return set, sdk.InvalidAttribute("archive", "an instance runs an image or an archive, not both")
	case req.Artifact.Archive != "":
	case req.Artifact.Image == "":
		return set, sdk.InvalidAttribute("image", "the containerd runtime needs an image or an archive")
	default:
		if _, err := registry.Reference(req.Artifact); err != nil {
			return set, err
		}
	}
	for k, v := range req.Settings {
		switch k {
		case "entrypoint":
			l, ok := v.([]string)
			if !ok || len(l) == 0 || l[0] == "" {
				return set, sdk.InvalidAttribute("settings.entrypoint", "must be a non-empty list of strings")
			}
			set.entrypoint = l
		case "workload_uid":
			f, ok := v.(float64)
			if !ok || f != math.Trunc(f) || f < 1 || f > 65535 {
				return set, sdk.InvalidAttribute("settings.workload_uid", "must be a whole number from 1 to 65535 (not 0: the workload never runs as root), not %v", v)
			}
			set.workloadUID = uint32(f)
		case "privileged":
			return set, sdk.InvalidAttribute("settings.privileged", "the containerd runtime never runs a container privileged: a privileged container can take over the host and every other tenant")
		case "host_paths":
			return set, sdk.InvalidAttribute("settings.host_paths", "the containerd runtime shows a container no host path: only its image, /tmp and its state")
		case "network":
			n, err := parseInstanceNetwork(v)
			if err != nil {
				return set, err
			}
			set.network = n
		default:
			return set, sdk.InvalidAttribute("settings."+k, "the containerd runtime has no instance setting %q", k)
		}
	}
	for _, p := range req.Permissions {
		switch p.Name {
		case sdk.PermStateRead, sdk.PermStateWrite:
		default:
			return set, sdk.InvalidAttribute("permission."+p.Name, "the containerd runtime offers no permission %q", p.Name)
		}
		for k := range p.Params {
			return set, sdk.InvalidAttribute("permission."+p.Name+"."+k, "the permission %q takes no parameters", p.Name)
		}
	}
	for i, m := range req.Mounts {
		switch {
		case !m.State:
			return set, sdk.InvalidAttribute("mounts", "the containerd runtime shows a container no host path, and mounts only the state, not %q", m.Target)
		case set.state != nil:
			return set, sdk.InvalidAttribute("mounts", "two state mounts")
		case m.Type != "" && m.Type != sdk.MountDir && m.Type != sdk.MountBind && m.Type != sdk.MountFUSE:
			return set, sdk.InvalidAttribute("mounts", "unsupported mount type %q", m.Type)
		// Validate comes before the state exists: no source yet.
		case m.Source != "" && !path.IsAbs(m.Source):
			return set, sdk.InvalidAttribute("mounts", "state source %q is not an absolute path", m.Source)
		}
		p, err := statePath(m.Target)
		if err != nil {
			return set, err
		}
		set.state, set.statePath = &req.Mounts[i], p
	}
	if set.state != nil && !req.Permissions.Has(sdk.PermStateRead) && !req.Permissions.Has(sdk.PermStateWrite) {
		set.state = nil
	}
	if req.Resources.MemoryBytes < 0 || (req.Resources.MemoryBytes > 0 && req.Resources.MemoryBytes < 4<<20) {
		return set, sdk.InvalidAttribute("resources.memory", "a container needs at least 4MiB of memory, not %d bytes", req.Resources.MemoryBytes)
	}
	return set, nil
}

// stateReadOnly reports whether the workload may only read its state.
func stateReadOnly(req *sdk.StartRequest, set instanceSettings) bool {
	return set.state.ReadOnly || !req.Permissions.Has(sdk.PermStateWrite)
}

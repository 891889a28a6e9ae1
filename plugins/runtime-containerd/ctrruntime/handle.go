package ctrruntime

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// handleVersion is the only handle version this runtime produces.
const handleVersion = 1

// The labels every container of this runtime carries, by which Recover
// tells its containers from others.
const (
	labelTenant   = "kigumi.tenant"
	labelInstance = "kigumi.instance"
	labelRunDir   = "kigumi.run-dir"
)

// handleData is what a handle's Data holds.
type handleData struct {
	// ID is the container's id in Namespace.
	ID        string       `json:"id"`
	Namespace string       `json:"namespace"`
	Instance  sdk.Instance `json:"instance"`
	RunDir    string       `json:"run_dir"`
	// Cgroup is the container's own cgroup, inside the instance's.
	Cgroup    string    `json:"cgroup"`
	StartedAt time.Time `json:"started_at"`
	// Ports are the host ports published for the container, by port name.
	Ports map[string]int `json:"ports,omitempty"`
	// Daemon is the socket of the tenant's own containerd in the
	// per-tenant mode, empty for the shared one; LogDir is then the
	// tenant-owned directory of the instance's logs.
	Daemon string `json:"daemon,omitempty"`
	LogDir string `json:"log_dir,omitempty"`
	// Peer is who must listen on Daemon, as it was at Start; nil in the
	// handles of plugins from before it was kept (legacy). TenantRunDir,
	// the tenant's run dir, holds the record of the tenant's current
	// daemon (daemonPeer).
	Peer         *daemonPeer `json:"daemon_peer,omitempty"`
	TenantRunDir string      `json:"tenant_run_dir,omitempty"`
	// DaemonPid and DaemonStart (clock ticks since boot) are set once the
	// plugin showed the state at stateMountPoint in the mount namespace of
	// the tenant's daemon, whose rootlesskit process they identify; the
	// container's destroy removes it there.
	DaemonPid   int    `json:"daemon_pid,omitempty"`
	DaemonStart uint64 `json:"daemon_start,omitempty"`
}

// logDir is the directory of the instance's log files.
func (d handleData) logDir() string {
	if d.LogDir != "" {
		return d.LogDir
	}
	return d.RunDir
}

func (d handleData) encode() (sdk.Handle, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return sdk.Handle{}, fmt.Errorf("encode handle: %w", err)
	}
	return sdk.Handle{Version: handleVersion, Data: b}, nil
}

var containerID = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,127}$`)

func decodeHandle(h sdk.Handle) (handleData, error) {
	var d handleData
	if h.Version != handleVersion {
		return d, sdk.Errorf(sdk.CodeInvalid, "unknown handle version %d", h.Version)
	}
	if err := json.Unmarshal(h.Data, &d); err != nil {
		return d, sdk.Errorf(sdk.CodeInvalid, "decode handle: %w", err)
	}
	if !containerID.MatchString(d.ID) || d.Namespace == "" || !filepath.IsAbs(d.RunDir) || (d.Daemon != "" && (d.LogDir != rootlessLogDir(d.Daemon, d.ID) || (d.Peer != nil && !d.Peer.valid()) || (d.TenantRunDir != "" && (d.Peer == nil || !filepath.IsAbs(d.TenantRunDir))))) || (d.Daemon == "" && (d.LogDir != "" || d.Peer != nil || d.TenantRunDir != "")) {
		return d, sdk.Errorf(sdk.CodeInvalid, "malformed handle")
	}
	return d, nil
}

// legacy reports whether d is a per-tenant instance's handle from before
// the daemon's peer was kept in it.
func (d handleData) legacy() bool { return d.Daemon != "" && d.Peer == nil }

// daemonPeer is who must listen on d's daemon: the tenant's current
// daemon, as the record in the tenant's run dir (root's) names it, so
// that an instance started before its daemon was restarted reaches the
// new one; else the daemon of d's Start. The uid is always d's own.
func (d handleData) daemonPeer() *daemonPeer {
	if d.Peer == nil || d.TenantRunDir == "" {
		return d.Peer
	}
	rec, err := readDaemonFile(d.TenantRunDir)
	if err != nil || rec.Tenant != d.Instance.Tenant || rec.Address != d.Daemon || rec.Pid <= 1 || (rec.UID != 0 && rec.UID != d.Peer.UID) {
		return d.Peer
	}
	return &daemonPeer{UID: d.Peer.UID, Pid: rec.Pid, StartTime: rec.StartTime}
}

// idOf is the container id of an instance: unique on the host, since
// tenant names hold no dot.
func idOf(i sdk.Instance) string { return i.Tenant + "." + i.Name }

// labels are the labels of the instance's container.
func (d handleData) labels() map[string]string {
	return map[string]string{labelTenant: d.Instance.Tenant, labelInstance: d.Instance.Name, labelRunDir: d.RunDir}
}

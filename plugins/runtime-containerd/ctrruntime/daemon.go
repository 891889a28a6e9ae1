package ctrruntime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/cgroups"
	"github.com/containerd/containerd"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// The daemon modes of the host setting "daemon".
const (
	// ModeShared runs every tenant's containers on one root containerd,
	// each in a user namespace mapped to its tenant's subordinate range.
	ModeShared = "shared"
	// ModePerTenant runs each tenant's containers on its own rootless
	// containerd, run as the tenant's user under rootlesskit.
	ModePerTenant = "per-tenant"
)

const (
	// tenantHandleVersion is the only tenant handle version.
	tenantHandleVersion = 1
	// daemonDirName is the tenant-owned directory, in the tenant's home, of
	// its daemon's root, state, socket and log.
	daemonDirName = ".kigumi-containerd"
	// daemonFile, in the tenant's run dir, records the running daemon.
	daemonFile = "daemon.json"
	// daemonStartTimeout bounds how long a new daemon may take to answer.
	daemonStartTimeout = 30 * time.Second
	// daemonStopTimeout bounds how long the daemon's processes take to end
	// on SIGKILL.
	daemonStopTimeout = 10 * time.Second
	// minRootlessIDs is how many subordinate ids a tenant needs in the
	// per-tenant mode: rootlesskit maps them to the daemon's ids from 1.
	minRootlessIDs = 65536
)

// daemonScript starts a tenant's daemon: it joins the tenant's cgroups
// (the cgroup.procs files are its arguments), drops to the tenant's user
// and runs containerd under rootlesskit. Inside, /run is rootlesskit's
// copy, where the shims' sockets go: the copied-up links to the host's
// /run/containerd and /run/runc are removed first.
const daemonScript = `for f do echo $$ >"$f" || exit 1; done
exec setpriv --reuid="$KIGUMI_UID" --regid="$KIGUMI_GID" --clear-groups -- \
  rootlesskit --net=host --copy-up=/run --propagation=rslave --state-dir="$KIGUMI_DIR/rootlesskit" -- \
  sh -c 'rm -rf /run/containerd /run/runc && mkdir -p /run/containerd && exec containerd --config "$KIGUMI_DIR/containerd.toml"'`

// daemonConfig is a tenant daemon's containerd config.
const daemonConfig = `version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = %[3]q

[ttrpc]
  address = "%[3]s.ttrpc"

[debug]
  address = ""
  level = "warn"

[metrics]
  address = ""
`

// tenantData is what a tenant handle's Data holds.
type tenantData struct {
	Mode   string `json:"mode"`
	Tenant string `json:"tenant"`
	// Dir is the tenant-owned directory of the daemon (per-tenant only).
	Dir string `json:"dir,omitempty"`
	// Address is the daemon's socket.
	Address string `json:"address,omitempty"`
	// Pid and StartTime (in clock ticks since boot) identify the daemon's
	// rootlesskit process, so that a restarted plugin adopts it and never
	// mistakes a reused pid for it.
	Pid       int    `json:"pid,omitempty"`
	StartTime uint64 `json:"start_time,omitempty"`
	// UID is the tenant's user, whom the daemon runs as. It is 0 in the
	// records of plugins from before it was kept: the uid is then unknown,
	// and the caller's tenant user stands in (legacyUID).
	UID uint32 `json:"uid,omitempty"`
	// RunDir is the tenant's run dir, which holds daemon.json: the record
	// of its current daemon, which instances started before a restart of
	// the daemon read to reach the new one.
	RunDir string `json:"run_dir,omitempty"`
}

// legacyUID fills in the uid of a record or handle from before the uid was
// kept with uid, the tenant user of the request at hand.
func (d *tenantData) legacyUID(uid uint32) bool {
	if d.UID != 0 {
		return false
	}
	d.UID = uid
	return true
}

// peer is who must listen on d's socket.
func (d tenantData) peer() *daemonPeer {
	return &daemonPeer{UID: d.UID, Pid: d.Pid, StartTime: d.StartTime}
}

func (d tenantData) encode() (sdk.Handle, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return sdk.Handle{}, fmt.Errorf("encode tenant handle: %w", err)
	}
	return sdk.Handle{Version: tenantHandleVersion, Data: b}, nil
}

func decodeTenant(h sdk.Handle) (tenantData, error) {
	var d tenantData
	if h.Version != tenantHandleVersion {
		return d, sdk.Errorf(sdk.CodeInvalid, "unknown tenant handle version %d", h.Version)
	}
	if err := json.Unmarshal(h.Data, &d); err != nil {
		return d, sdk.Errorf(sdk.CodeInvalid, "decode tenant handle: %w", err)
	}
	switch {
	case d.Tenant == "":
	case d.Mode == ModeShared:
		return d, nil
	case d.Mode == ModePerTenant && filepath.IsAbs(d.Dir) && filepath.Base(d.Dir) == daemonDirName && d.Address == daemonSocket(d.Dir) && d.Pid > 1 && (d.RunDir == "" || filepath.IsAbs(d.RunDir)):
		return d, nil
	}
	return d, sdk.Errorf(sdk.CodeInvalid, "malformed tenant handle")
}

// parseMode checks a daemon mode setting.
func parseMode(attr string, v any) (string, error) {
	s, _ := v.(string)
	if s != ModeShared && s != ModePerTenant {
		return "", sdk.InvalidAttribute(attr, "must be %q or %q, not %q", ModeShared, ModePerTenant, s)
	}
	return s, nil
}

// configureModes applies the settings "daemon" and "daemons".
func (r *Runtime) configureModes(settings sdk.Config) error {
	if v, ok := settings["daemon"]; ok {
		m, err := parseMode("daemon", v)
		if err != nil {
			return err
		}
		r.mode = m
	}
	v, ok := settings["daemons"]
	if !ok {
		return nil
	}
	l, ok := v.(map[string]string)
	if !ok {
		return sdk.InvalidAttribute("daemons", "must map tenant names to %q or %q", ModeShared, ModePerTenant)
	}
	r.modes = map[string]string{}
	for tenant, s := range l {
		m, err := parseMode("daemons."+tenant, s)
		if err != nil {
			return err
		}
		r.modes[tenant] = m
	}
	return nil
}

// modeOf is the daemon mode of a tenant.
func (r *Runtime) modeOf(tenant string) string {
	if m, ok := r.modes[tenant]; ok {
		return m
	}
	return r.mode
}

// PrepareTenant starts the tenant's own containerd in the per-tenant mode,
// or adopts it when it runs already; in the shared mode there is nothing
// to start. The handle names the daemon, whose exits WatchExits then
// follows.
func (r *Runtime) PrepareTenant(ctx context.Context, req *sdk.TenantRequest) (sdk.Handle, error) {
	if req.Tenant == "" {
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInvalid, "tenant has no name")
	}
	if r.modeOf(req.Tenant) == ModeShared {
		return tenantData{Mode: ModeShared, Tenant: req.Tenant}.encode()
	}
	switch u := req.User; {
	case cgroups.Mode() != cgroups.Legacy && cgroups.Mode() != cgroups.Hybrid:
		return sdk.Handle{}, sdk.Errorf(sdk.CodeUnsupported, "tenant %s: the per-tenant daemon mode needs cgroup v1 on this host", req.Tenant)
	case u.UID == 0 || u.SubUID == 0 || u.SubGID == 0 || u.Count < minRootlessIDs:
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInvalid, "tenant %s: the per-tenant daemon needs an unprivileged user with %d subordinate ids", req.Tenant, minRootlessIDs)
	case !filepath.IsAbs(u.Home) || !filepath.IsAbs(req.RunDir):
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInvalid, "tenant %s: home %q or run dir %q is not an absolute path", req.Tenant, u.Home, req.RunDir)
	}
	r.daemonMu.Lock()
	defer r.daemonMu.Unlock()
	if d, err := readDaemonFile(req.RunDir); err == nil && d.Tenant == req.Tenant {
		// A record without uid, from before it was kept, is adopted when
		// its daemon's listener passes the check with the tenant's uid:
		// killing it would kill the tenant's running instances.
		legacy := d.legacyUID(req.User.UID)
		d.RunDir = req.RunDir
		if d.UID == req.User.UID && alive(d) && r.serving(ctx, d) {
			if legacy {
				if err := writeDaemonFile(req.RunDir, d); err != nil {
					return sdk.Handle{}, fmt.Errorf("tenant %s: %w", req.Tenant, err)
				}
			}
			r.follow(ctx, d.Address, *d.peer())
			return d.encode()
		}
		// The clients and subscriptions of the daemon replaced check its
		// peer, which no longer runs: they would redial it forever.
		r.unfollow(d.Address)
		r.dropClient(d.Address)
		if err := stopDaemon(d); err != nil {
			return sdk.Handle{}, err
		}
	}
	d, err := r.startDaemon(ctx, req)
	if err != nil {
		return sdk.Handle{}, err
	}
	d.RunDir = req.RunDir
	r.follow(ctx, d.Address, *d.peer())
	return d.encode()
}

// ReleaseTenant stops the tenant's daemon and removes its directory. The
// core releases a tenant once it has destroyed all its instances.
func (r *Runtime) ReleaseTenant(_ context.Context, h sdk.Handle) error {
	d, err := decodeTenant(h)
	if err != nil || d.Mode == ModeShared {
		return err
	}
	r.daemonMu.Lock()
	defer r.daemonMu.Unlock()
	r.unfollow(d.Address)
	r.dropClient(d.Address)
	if err := stopDaemon(d); err != nil {
		return err
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		return fmt.Errorf("tenant %s: remove the daemon's directory: %w", d.Tenant, err)
	}
	return nil
}

// startDaemon starts a fresh daemon for the tenant, detached from the
// plugin (its own session, no parent-death signal) so that it outlives a
// restart of the plugin and of the agent. On error it leaves nothing.
func (r *Runtime) startDaemon(ctx context.Context, req *sdk.TenantRequest) (_ tenantData, err error) {
	u := req.User
	d := tenantData{Mode: ModePerTenant, Tenant: req.Tenant, Dir: filepath.Join(u.Home, daemonDirName), UID: u.UID}
	d.Address = daemonSocket(d.Dir)
	// A fresh directory, made by root so that nothing of the tenant's is
	// in it (RemoveAll does not follow links, Mkdir fails on one put back).
	if err := os.RemoveAll(d.Dir); err != nil {
		return d, fmt.Errorf("tenant %s: %w", req.Tenant, err)
	}
	if err := os.Mkdir(d.Dir, 0o700); err != nil {
		return d, fmt.Errorf("tenant %s: %w", req.Tenant, err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(d.Dir)
		}
	}()
	// The tenant's user may swap the new directory for a symlink (to
	// /etc, say) at any moment: root writes into it, and gives it away,
	// only through a descriptor of the directory it made.
	dir, err := openMadeDir(d.Dir)
	if err != nil {
		return d, fmt.Errorf("tenant %s: %w", req.Tenant, err)
	}
	defer unix.Close(dir)
	cfg := fmt.Sprintf(daemonConfig, filepath.Join(d.Dir, "root"), filepath.Join(d.Dir, "state"), d.Address)
	cfgf, err := createIn(dir, "containerd.toml", 0o644)
	if err == nil {
		_, err = cfgf.WriteString(cfg)
		if cerr := cfgf.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return d, fmt.Errorf("tenant %s: %w", req.Tenant, err)
	}
	logf, err := createIn(dir, "daemon.log", 0o600)
	if err != nil {
		return d, fmt.Errorf("tenant %s: %w", req.Tenant, err)
	}
	defer logf.Close()
	if err := unix.Fchown(dir, int(u.UID), int(u.GID)); err != nil {
		return d, fmt.Errorf("tenant %s: %w", req.Tenant, err)
	}
	cmd := exec.Command("/bin/sh", append([]string{"-c", daemonScript, "sh"}, req.Cgroup.ProcsFiles...)...)
	cmd.Dir = d.Dir
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + d.Dir, "KIGUMI_DIR=" + d.Dir,
		"KIGUMI_UID=" + strconv.Itoa(int(u.UID)), "KIGUMI_GID=" + strconv.Itoa(int(u.GID)),
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return d, fmt.Errorf("tenant %s: start the daemon: %w", req.Tenant, err)
	}
	// Reaped while the plugin runs; adopted by init once it is gone.
	go func() { _ = cmd.Wait() }()
	d.Pid = cmd.Process.Pid
	defer func() {
		if err != nil {
			_ = stopDaemon(d)
		}
	}()
	if d.StartTime, err = startTime(d.Pid); err != nil {
		return d, fmt.Errorf("tenant %s: the daemon: %w", req.Tenant, err)
	}
	deadline := time.Now().Add(daemonStartTimeout)
	for !r.serving(ctx, d) {
		if !alive(d) || time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(d.Dir, "daemon.log"))
			return d, sdk.Errorf(sdk.CodeUnavailable, "tenant %s: its containerd did not start (it runs inside the tenant's cgroup, under the sums of its instances' limits: memory %d bytes, pids %d; a daemon needs about 100 MiB and 100 threads of them): %s",
				req.Tenant, req.Resources.MemoryBytes, req.Resources.Pids, daemonFailure(log))
		}
		select {
		case <-ctx.Done():
			return d, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := writeDaemonFile(req.RunDir, d); err != nil {
		return d, fmt.Errorf("tenant %s: %w", req.Tenant, err)
	}
	return d, nil
}

// openMadeDir opens the directory root has just made at path, in a
// tenant-owned directory: the last component not followed if it is a
// symlink (the tenant's user controls only that one: its home's parent is
// root's), and refused unless it is still root's own 0700 directory.
func openMadeDir(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("open %s: %w", path, err)
	}
	if st.Uid != 0 || st.Mode&0o7777 != 0o700 {
		unix.Close(fd)
		return -1, fmt.Errorf("open %s: not the directory root made (uid %d, mode %#o)", path, st.Uid, st.Mode&0o7777)
	}
	return fd, nil
}

// createIn creates the new file name, of mode perm, in the directory dir.
func createIn(dir int, name string, perm uint32) (*os.File, error) {
	fd, err := unix.Openat(dir, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// daemonSocket is the socket of the daemon of dir.
func daemonSocket(dir string) string { return filepath.Join(dir, "ctd.sock") }

// serving reports whether d's containerd answers at its socket.
func (r *Runtime) serving(ctx context.Context, d tenantData) bool {
	if _, err := os.Lstat(d.Address); err != nil {
		return false
	}
	_, _, err := r.connect(ctx, d.Address, d.peer())
	return err == nil
}

// stopDaemon kills every process of the daemon: those of its session, and
// those in the user namespaces they made. It waits until they are gone.
func stopDaemon(d tenantData) error {
	deadline := time.Now().Add(daemonStopTimeout)
	for {
		pids := daemonProcesses(d)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return sdk.Errorf(sdk.CodeInternal, "tenant %s: daemon processes %v do not end", d.Tenant, pids)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// daemonProcesses lists the live processes of the daemon. A pid stays
// taken while a process has it as its session id, so a pid reused by
// another process means that none of the daemon's session is left.
func daemonProcesses(d tenantData) []int {
	if st, err := startTime(d.Pid); err == nil && st != d.StartTime {
		return nil
	}
	return sessionMembers(d.Pid)
}

// sessionMembers lists the processes of session sid, and those in a user
// namespace, other than the host's, of one of them.
func sessionMembers(sid int) []int {
	host, _ := os.Readlink("/proc/self/ns/user")
	entries, _ := os.ReadDir("/proc")
	type proc struct {
		pid int
		ns  string
	}
	var others []proc
	var out []int
	nss := map[string]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", pid))
		st, err := readStat(pid)
		if err != nil || len(st) < 4 {
			continue
		}
		if s, _ := strconv.Atoi(st[3]); s == sid {
			out = append(out, pid)
			if ns != "" && ns != host {
				nss[ns] = true
			}
			continue
		}
		others = append(others, proc{pid, ns})
	}
	for _, p := range others {
		if nss[p.ns] {
			out = append(out, p.pid)
		}
	}
	return out
}

// alive reports whether d's rootlesskit process runs.
func alive(d tenantData) bool { return running(d.Pid, d.StartTime) }

// running reports whether the process pid that started at start (clock
// ticks since boot) runs: not a later process of the pid, nor a zombie.
func running(pid int, start uint64) bool {
	st, err := readStat(pid)
	if err != nil || len(st) < 20 || st[0] == "Z" {
		return false
	}
	t, err := strconv.ParseUint(st[19], 10, 64)
	return err == nil && t == start
}

// readStat returns the fields of /proc/PID/stat after the command, from
// the state (field 3) on: index i is field i+3.
func readStat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// startTime is a process's start time, in clock ticks since boot (field
// 22 of /proc/PID/stat).
func startTime(pid int) (uint64, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	if len(st) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(st[19], 10, 64)
}

func readDaemonFile(runDir string) (tenantData, error) {
	var d tenantData
	b, err := os.ReadFile(filepath.Join(runDir, daemonFile))
	if err != nil {
		return d, err
	}
	return d, json.Unmarshal(b, &d)
}

func writeDaemonFile(runDir string, d tenantData) error {
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(runDir, daemonFile), b, 0o600)
}

// daemonFailure is why a daemon's log says it ended: its first fatal or
// error lines (a Go runtime that could not start a thread says so at the
// top, above its goroutine dump and its register dump), or else its end.
func daemonFailure(log []byte) string {
	var lines []string
	for _, l := range strings.Split(string(log), "\n") {
		if strings.Contains(l, "fatal") || strings.Contains(l, "error") || strings.Contains(l, "failed") || strings.HasPrefix(l, "runtime: ") {
			if lines = append(lines, strings.TrimSpace(l)); len(lines) == 3 {
				break
			}
		}
	}
	if len(lines) == 0 {
		return string(bytes.TrimSpace(tail(log, 2000)))
	}
	return strings.Join(lines, "; ")
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// daemonOf returns the record of the daemon that runs req's instance:
// its socket, who must listen on it and the tenant's run dir; the zero
// record for the shared one.
func (r *Runtime) daemonOf(req *sdk.StartRequest) (tenantData, error) {
	if r.modeOf(req.Instance.Tenant) == ModeShared {
		return tenantData{}, nil
	}
	d, err := decodeTenant(req.Tenant)
	if err != nil {
		return d, fmt.Errorf("instance %s: %w", req.Instance, err)
	}
	d.legacyUID(req.User.UID)
	if d.Mode != ModePerTenant || d.Tenant != req.Instance.Tenant || d.UID != req.User.UID {
		return d, sdk.Errorf(sdk.CodeInvalid, "instance %s: the tenant handle is not of its per-tenant daemon", req.Instance)
	}
	if req.Cgroup.Path == "" {
		return d, sdk.Errorf(sdk.CodeInvalid, "instance %s: the per-tenant mode needs the instance's cgroup", req.Instance)
	}
	return d, nil
}

// rootlessLogDir is the tenant-owned directory of a per-tenant instance's
// logs, written by its logging process, which runs as the tenant's user.
func rootlessLogDir(daemon string, id string) string {
	return filepath.Join(filepath.Dir(daemon), "log-"+id)
}

// makeLogDir makes a fresh, tenant-owned log dir.
func makeLogDir(dir string, u sdk.User) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	// Given away through a descriptor of what root made: by path, a
	// symlink the tenant's user put in its place (to /etc, say) would be
	// followed.
	fd, err := openMadeDir(dir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fchown(fd, int(u.UID), int(u.GID))
}

// joinCgroup makes the container's cgroup, with the instance's limits,
// and moves the task's (not yet started) process into it. A rootless
// daemon cannot make cgroups on cgroup v1, so the plugin does, as root:
// the tenant's user owns no cgroup file.
func joinCgroup(path string, res *specs.LinuxResources, task containerd.Task) error {
	cg, err := cgroups.New(cgroups.V1, cgroups.StaticPath(path), res)
	if err != nil {
		return fmt.Errorf("make cgroup %s: %w", path, err)
	}
	if err := cg.Add(cgroups.Process{Pid: int(task.Pid())}); err != nil {
		return fmt.Errorf("join cgroup %s: %w", path, err)
	}
	return nil
}

// killCgroup kills the processes of the container's cgroup, made by
// joinCgroup, and waits (at most 5 s) until it holds none.
func killCgroup(path string) error {
	cg, err := cgroups.Load(cgroups.V1, cgroups.StaticPath(path))
	if errors.Is(err, cgroups.ErrCgroupDeleted) || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load cgroup %s: %w", path, err)
	}
	for i := 0; i < 50; i++ {
		procs, err := cg.Processes(cgroups.Memory, true)
		if err != nil {
			return fmt.Errorf("cgroup %s: %w", path, err)
		}
		if len(procs) == 0 {
			return nil
		}
		for _, p := range procs {
			_ = syscall.Kill(p.Pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("cgroup %s: processes left after SIGKILL", path)
}

// removeCgroup removes the container's cgroup, made by joinCgroup.
func removeCgroup(path string) error {
	cg, err := cgroups.Load(cgroups.V1, cgroups.StaticPath(path))
	if errors.Is(err, cgroups.ErrCgroupDeleted) || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load cgroup %s: %w", path, err)
	}
	if err := cg.Delete(); err != nil {
		return fmt.Errorf("remove cgroup %s: %w", path, err)
	}
	return nil
}

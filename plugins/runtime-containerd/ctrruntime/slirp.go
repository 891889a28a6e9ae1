package ctrruntime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// The per-tenant mode's networking: each networked container of a tenant's
// own daemon gets its own slirp4netns, a user-mode TCP/IP stack that runs
// as the tenant's user and forwards the container's traffic through the
// host's sockets.
const (
	// slirpFile, in the instance's run dir, records the running slirp4netns.
	slirpFile = "slirp.json"
	// slirpLogFile, in the instance's run dir, is its output.
	slirpLogFile = "slirp.log"
	// defaultSlirp is the slirp4netns executable, found in PATH.
	defaultSlirp = "slirp4netns"
	// slirpReadyTimeout bounds how long slirp4netns takes to configure the
	// container's interface.
	slirpReadyTimeout = 10 * time.Second
	// slirpStopTimeout bounds how long it takes to end on SIGKILL.
	slirpStopTimeout = 5 * time.Second
	// slirpCallTimeout bounds one call of its API.
	slirpCallTimeout = 5 * time.Second
	// slirpDNS is slirp4netns's DNS forwarder, the one address of its
	// network a container with outbound "internet" may reach.
	slirpDNS = "10.0.2.3/32"
	// maxSocketPath is the longest path of a unix socket.
	maxSocketPath = 107
)

// slirpScript starts a container's slirp4netns. As root, it joins the
// instance's cgroups (the cgroup.procs files are its arguments) and, in
// the private mount namespace the plugin made for it, puts a tun device
// owned by the tenant's user at /dev/net/tun (the host's may be root's
// only). It then enters the daemon's user namespace (fd 4), as its root,
// which is the tenant's user, with no_new_privs, and runs slirp4netns on
// the container's network namespace (fd 5), telling readiness on fd 3.
const slirpScript = `for f do echo $$ >"$f" || exit 1; done
mount -t tmpfs -o size=4k,mode=0755,nosuid,noexec tmpfs /dev/net &&
  mknod -m 0600 /dev/net/tun c 10 200 &&
  chown "$KIGUMI_UID:$KIGUMI_GID" /dev/net/tun || exit 1
exec nsenter --user=/proc/self/fd/4 -- setpriv --no-new-privs -- \
  "$KIGUMI_SLIRP" --configure --mtu=65520 --disable-host-loopback --enable-sandbox --enable-seccomp \
  --api-socket="$KIGUMI_SOCKET" --ready-fd=3 --netns-type=path /proc/self/fd/5 tap0`

// confineScript runs as root in the container's network namespace, before
// slirp4netns makes its interface: no IPv6 (its link-local addresses and
// slirp's would pass the IPv4 rules), and the rules of iptables-restore's
// input.
const confineScript = `if [ -d /proc/sys/net/ipv6 ]; then
  echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6 && echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6 || exit 1
fi
exec iptables-restore`

// slirpData is what slirpFile records of a container's slirp4netns. Pid
// and StartTime (in clock ticks since boot) identify its process, so that
// a restarted plugin adopts it and never mistakes a reused pid for it.
type slirpData struct {
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"start_time"`
	// Socket is its API socket.
	Socket string `json:"socket"`
}

// hostfwd is a published port in slirp4netns's API.
type hostfwd struct {
	Proto     string `json:"proto"`
	HostAddr  string `json:"host_addr"`
	HostPort  int    `json:"host_port"`
	GuestPort int    `json:"guest_port"`
}

// needsSlirp reports whether the instance's network needs a slirp4netns:
// without outbound access and published ports it has loopback only.
func (in *instanceNetwork) needsSlirp() bool {
	return in.outbound == outboundInternet || len(in.ports) > 0
}

// slirpSocket is the API socket of the container's slirp4netns, in its
// tenant's daemon directory, where the tenant's user may make it.
func slirpSocket(d handleData) string {
	return filepath.Join(filepath.Dir(d.Daemon), "slirp-"+d.ID+".sock")
}

// startSlirp gives the created (not yet started) task pid of a per-tenant
// container its network: the outbound rules in its network namespace, a
// slirp4netns on it, recorded in the run dir, and the published ports
// its labels record. On error it leaves no slirp4netns.
func (r *Runtime) startSlirp(ctx context.Context, req *sdk.StartRequest, d handleData, pid uint32, in *instanceNetwork, labels map[string]string) (err error) {
	if !in.needsSlirp() {
		return nil
	}
	fwds, err := forwardsOf(labels)
	if err != nil {
		return err
	}
	sock := slirpSocket(d)
	if len(sock) > maxSocketPath {
		return sdk.Errorf(sdk.CodeInvalid, "the socket of its slirp4netns, %s, is longer than %d bytes: the tenant's home is too deep", sock, maxSocketPath)
	}
	if err := stopSlirp(d.RunDir); err != nil {
		return err
	}
	if err := removeTenantSocket(sock); err != nil {
		return fmt.Errorf("slirp4netns: %w", err)
	}
	if err := confineNetNS(ctx, pid, in.outbound); err != nil {
		return err
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, ns := range []string{"user", "net"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
		if err != nil {
			return fmt.Errorf("slirp4netns: the container's namespace: %w", err)
		}
		files = append(files, f)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("slirp4netns: %w", err)
	}
	files = append(files, readyR, readyW)
	logPath := filepath.Join(d.RunDir, slirpLogFile)
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("slirp4netns: %w", err)
	}
	files = append(files, logf)
	cmd := exec.Command("/bin/sh", append([]string{"-c", slirpScript, "sh"}, req.Cgroup.ProcsFiles...)...)
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"KIGUMI_UID=" + strconv.Itoa(int(req.User.UID)), "KIGUMI_GID=" + strconv.Itoa(int(req.User.GID)),
		"KIGUMI_SOCKET=" + sock, "KIGUMI_SLIRP=" + r.net.slirp,
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{readyW, files[0], files[1]}
	// Its own session, so that it outlives the plugin; its own mount
	// namespace, for its tun device.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Unshareflags: syscall.CLONE_NEWNS}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start slirp4netns: %w", err)
	}
	readyW.Close()
	// Reaped while the plugin runs; adopted by init once it is gone.
	go func() { _ = cmd.Wait() }()
	s := slirpData{Pid: cmd.Process.Pid, Socket: sock}
	// An ended process has no start time: the wait below says why.
	s.StartTime, _ = startTime(s.Pid)
	defer func() {
		if err != nil {
			_ = killSlirp(s)
		}
	}()
	if err := waitReady(ctx, readyR); err != nil {
		log, _ := os.ReadFile(logPath)
		return sdk.Errorf(sdk.CodeUnavailable, "slirp4netns did not start: %w: %s", err, daemonFailure(log))
	}
	if err := writeSlirpFile(d.RunDir, s); err != nil {
		return fmt.Errorf("slirp4netns: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(filepath.Join(d.RunDir, slirpFile))
		}
	}()
	return ensureForwards(ctx, s, req.User.UID, fwds)
}

// waitReady waits until slirp4netns writes to its ready fd.
func waitReady(ctx context.Context, ready *os.File) error {
	done := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := ready.Read(b)
		if errors.Is(err, io.EOF) {
			err = errors.New("it ended")
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(slirpReadyTimeout):
		// Unblocks the read once the caller closes ready.
		return fmt.Errorf("not ready after %v", slirpReadyTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// confineNetNS sets the outbound rules in the network namespace of pid,
// as root, whom the workload (without capabilities) cannot undo:
// replies always; with outbound "internet", slirp's DNS and every address
// but the host's own and its local networks (localNets, which hold
// slirp's gateway 10.0.2.2 to the host).
func confineNetNS(ctx context.Context, pid uint32, outbound string) error {
	rules, err := netnsRules(outbound)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", pid), "--", "/bin/sh", "-c", confineScript)
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("set the container's outbound rules: %w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// netnsRules returns the iptables-restore input of a container's network
// namespace.
func netnsRules(outbound string) (string, error) {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n")
	b.WriteString("-A OUTPUT -o lo -j ACCEPT\n-A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n")
	if outbound == outboundInternet {
		for _, proto := range []string{"udp", "tcp"} {
			fmt.Fprintf(&b, "-A OUTPUT -d %s -p %s --dport 53 -j ACCEPT\n", slirpDNS, proto)
		}
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return "", fmt.Errorf("the host's addresses: %w", err)
		}
		drop := append([]string(nil), localNets...)
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				drop = append(drop, n.IP.String()+"/32")
			}
		}
		for _, dst := range drop {
			fmt.Fprintf(&b, "-A OUTPUT -d %s -j DROP\n", dst)
		}
		b.WriteString("-A OUTPUT -j ACCEPT\n")
	}
	b.WriteString("COMMIT\n")
	return b.String(), nil
}

// forwardsOf returns the published ports a networked container's labels
// record, on all the host's addresses as in the shared mode.
func forwardsOf(labels map[string]string) ([]hostfwd, error) {
	if labels[labelPorts] == "" {
		return nil, nil
	}
	block, err := parsePortBlock(labels[labelPorts])
	if err != nil {
		return nil, err
	}
	ports, err := parsePortMap(labels[labelPortMap])
	if err != nil {
		return nil, err
	}
	fwds := make([]hostfwd, len(ports))
	for i, p := range ports {
		fwds[i] = hostfwd{Proto: p.protocol, HostAddr: "0.0.0.0", HostPort: block.from + i, GuestPort: p.container}
	}
	return fwds, nil
}

// ensureForwards adds those of fwds that slirp4netns s, run as uid,
// lacks.
func ensureForwards(ctx context.Context, s slirpData, uid uint32, fwds []hostfwd) error {
	if len(fwds) == 0 {
		return nil
	}
	var list struct {
		Entries []hostfwd `json:"entries"`
	}
	if err := slirpCall(ctx, s, uid, map[string]any{"execute": "list_hostfwd"}, &list); err != nil {
		return err
	}
	have := map[hostfwd]bool{}
	for _, f := range list.Entries {
		have[f] = true
	}
	for _, f := range fwds {
		if have[f] {
			continue
		}
		if err := slirpCall(ctx, s, uid, map[string]any{"execute": "add_hostfwd", "arguments": f}, nil); err != nil {
			return fmt.Errorf("publish the container's port %d/%s on the host's port %d: %w", f.GuestPort, f.Proto, f.HostPort, err)
		}
	}
	return nil
}

// slirpCall makes one call of the API of slirp4netns s, run as uid,
// decoding its result into out. Its socket is in the tenant-owned daemon
// directory: it is dialed as dialTenantSocket checks, and only s itself
// may listen on it.
func slirpCall(ctx context.Context, s slirpData, uid uint32, req, out any) error {
	ctx, cancel := context.WithTimeout(ctx, slirpCallTimeout)
	defer cancel()
	c, err := dialTenantSocket(ctx, s.Socket, uid, checkSlirp(s, uid))
	if err != nil {
		return fmt.Errorf("slirp4netns API: %w", err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	if err := c.SetDeadline(deadline); err != nil {
		return fmt.Errorf("slirp4netns API: %w", err)
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return fmt.Errorf("slirp4netns API: %w", err)
	}
	if err := c.CloseWrite(); err != nil {
		return fmt.Errorf("slirp4netns API: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(c, 1<<20))
	if err != nil {
		return fmt.Errorf("slirp4netns API: %w", err)
	}
	var resp struct {
		Error *struct {
			Desc string `json:"desc"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &resp); err != nil {
		return fmt.Errorf("slirp4netns API: %w", err)
	}
	if resp.Error != nil {
		return fmt.Errorf("slirp4netns API: %s", resp.Error.Desc)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("slirp4netns API: %w", err)
	}
	return nil
}

// adoptSlirp adopts a recovered per-tenant container's slirp4netns: with
// the task running, it adds the published ports it lacks; with the task
// ended, it stops it. A running task whose slirp4netns has ended has lost
// its network: it is stopped, for the core to start it afresh.
func adoptSlirp(ctx context.Context, d handleData, ctr containerd.Container) error {
	s, err := readSlirpFile(d.RunDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("slirp4netns: %w", err)
	}
	running := false
	task, err := ctr.Task(ctx, nil)
	switch {
	case err == nil:
		st, err := task.Status(ctx)
		if err != nil {
			return fmt.Errorf("task status: %w", err)
		}
		running = st.Status != containerd.Stopped
	case !errdefs.IsNotFound(err):
		return fmt.Errorf("task: %w", err)
	}
	if !running {
		return stopSlirp(d.RunDir)
	}
	if !slirpAlive(s) {
		if err := stopTask(ctx, d, ctr, destroyStopTimeout); err != nil {
			return err
		}
		return stopSlirp(d.RunDir)
	}
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return fmt.Errorf("container labels: %w", err)
	}
	fwds, err := forwardsOf(labels)
	if err != nil {
		return err
	}
	if d.Peer == nil {
		return sdk.Errorf(sdk.CodeInvalid, "a slirp4netns recorded for a container of the shared daemon")
	}
	return ensureForwards(ctx, s, d.Peer.UID, fwds)
}

// stopSlirp stops the slirp4netns that runDir records and removes its
// socket and record. It succeeds when there is none.
func stopSlirp(runDir string) error {
	s, err := readSlirpFile(runDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("slirp4netns: %w", err)
	}
	if err := killSlirp(s); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(runDir, slirpFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("slirp4netns: %w", err)
	}
	return nil
}

// killSlirp kills s's process, waits until it is gone, and removes its
// socket.
func killSlirp(s slirpData) error {
	deadline := time.Now().Add(slirpStopTimeout)
	for slirpAlive(s) {
		if time.Now().After(deadline) {
			return sdk.Errorf(sdk.CodeInternal, "slirp4netns (pid %d) does not end", s.Pid)
		}
		_ = syscall.Kill(s.Pid, syscall.SIGKILL)
		time.Sleep(20 * time.Millisecond)
	}
	if err := removeTenantSocket(s.Socket); err != nil {
		return fmt.Errorf("slirp4netns: %w", err)
	}
	return nil
}

// slirpAlive reports whether s's process runs (a zombie does not).
func slirpAlive(s slirpData) bool { return running(s.Pid, s.StartTime) }

func readSlirpFile(runDir string) (slirpData, error) {
	var s slirpData
	b, err := os.ReadFile(filepath.Join(runDir, slirpFile))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil || s.Pid <= 1 || !filepath.IsAbs(s.Socket) {
		return s, fmt.Errorf("malformed %s", slirpFile)
	}
	return s, nil
}

func writeSlirpFile(runDir string, s slirpData) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(runDir, slirpFile), b, 0o600)
}

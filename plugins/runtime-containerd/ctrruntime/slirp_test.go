package ctrruntime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/errdefs"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// slirpConfig is the settings of a runtime on the tests' network whose
// tenants tns have their own daemons.
func slirpConfig(extra sdk.Config, tns ...testTenant) sdk.Config {
	modes := map[string]string{}
	for _, tn := range tns {
		modes[tn.name] = ModePerTenant
	}
	network := sdk.Config{"bridge": testBridge, "subnet": testSubnet}
	for k, v := range extra {
		network[k] = v
	}
	return sdk.Config{
		"network": network,
		"ports":   sdk.Config{"from": float64(testPortLo), "to": float64(testPortHi)},
		"daemons": modes,
	}
}

// slirpState is what the per-tenant networking of tn leaves on the host:
// its user's slirp4netns processes, the API sockets in its daemon's
// directory and the pool's ports that something listens on.
func slirpState(t *testing.T, tn testTenant) string {
	t.Helper()
	var lines []string
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		fi, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
		if err != nil || strings.TrimSpace(string(comm)) != "slirp4netns" || fileUID(fi) != tn.user.UID {
			continue
		}
		// A killed one its parent has yet to reap holds nothing.
		if st, err := readStat(pid); err != nil || len(st) == 0 || st[0] == "Z" {
			continue
		}
		lines = append(lines, fmt.Sprintf("slirp4netns %d", pid))
	}
	socks, err := filepath.Glob(filepath.Join(tn.user.Home, daemonDirName, "slirp-*"))
	if err != nil {
		t.Fatal(err)
	}
	lines = append(lines, socks...)
	for _, l := range strings.Split(run(t, "ss", "-Hltun"), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		_, port, _ := net.SplitHostPort(f[4])
		if p, _ := strconv.Atoi(port); p >= testPortLo && p <= testPortHi {
			lines = append(lines, "listening "+f[4])
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// slirpOf returns what the run dir of the handle's instance records of
// its slirp4netns.
func slirpOf(t *testing.T, h sdk.Handle) slirpData {
	t.Helper()
	d, err := decodeHandle(h)
	if err != nil {
		t.Fatal(err)
	}
	s, err := readSlirpFile(d.RunDir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSlirpNetwork checks the per-tenant mode's networking on a real
// tenant daemon and slirp4netns, next to a shared tenant's networked
// container: with outbound "internet" the container's published port
// answers on the host and it reaches a public address, but neither the
// host (its addresses, slirp's gateway 10.0.2.2, which would be the
// host's loopback, nor the neighbour's port through them), a local
// network nor the metadata address; it has no IPv6. With outbound "none"
// and no ports it has loopback only and no slirp4netns. A new Runtime (a
// plugin restart) adopts the running slirp4netns, adds back a published
// port it lost, and keeps its block allocated. Destroy and ReleaseTenant
// leave no process, socket, port or network state.
func TestSlirpNetwork(t *testing.T) {
	outsideNS(t)
	before := hostState(t)
	ctx := context.Background()
	pt, nb := newTenant(t), newTenant(t)
	cfg := slirpConfig(nil, pt)
	r := newRuntime(t, cfg)
	tenantRun := filepath.Join(t.TempDir(), "tenant")
	pt = prepareAt(t, r, pt, tenantRun)
	slirpBefore := slirpState(t, pt)

	// The host listens on its loopback, its local address towards the
	// outside and its public one.
	for _, addr := range []string{"127.0.0.1:9999", "10.232.0.1:9999", "198.51.100.1:9999"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go sayHi(l)
	}

	hn, _ := start(t, r, nb, instance{name: "nb", settings: netSettings(outboundNone, 8080), args: probeArgs()})
	waitLog(t, r, hn, "probed", 30*time.Second)
	nbPort := hostPorts(t, hn)["p0"]
	checkNeighbour := func(when string) {
		t.Helper()
		if got := get(t, nbPort); !strings.Contains(got, "workload:x:10000") {
			t.Errorf("neighbour's published port, %s: %q", when, got)
		}
	}
	checkNeighbour("alone")

	hq, _ := start(t, r, pt, instance{name: "quiet", settings: sdk.Config{"network": sdk.Config{"outbound": outboundNone}}, args: probeArgs("198.51.100.2:9999")})
	out := waitLog(t, r, hq, "probed", 30*time.Second)
	for _, want := range []string{"198.51.100.2:9999 closed", "interfaces: lo \n"} {
		if !strings.Contains(out, want) {
			t.Errorf("outbound none: no %q in:\n%s", want, out)
		}
	}
	if got := slirpState(t, pt); got != slirpBefore {
		t.Errorf("outbound none without ports made slirp state:\n%s", got)
	}

	closed := []string{"10.232.0.2:9999", "10.232.0.1:9999", "198.51.100.1:9999", "10.0.2.2:9999", "169.254.169.254:80",
		fmt.Sprintf("198.51.100.1:%d", nbPort), fmt.Sprintf("10.0.2.2:%d", nbPort)}
	hw, _ := start(t, r, pt, instance{name: "web", settings: netSettings(outboundInternet, 8080), args: probeArgs(append([]string{"198.51.100.2:9999"}, closed...)...)})
	out = waitLog(t, r, hw, "probed", 30*time.Second)
	want := []string{"198.51.100.2:9999 open", "interfaces: lo tap0 \n", "ipv6 addresses: 0"}
	for _, c := range closed {
		want = append(want, c+" closed")
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("outbound internet: no %q in:\n%s", w, out)
		}
	}
	webPort := hostPorts(t, hw)["p0"]
	if webPort != nbPort+1 {
		t.Errorf("web's port %d, want the block after the neighbour's %d", webPort, nbPort)
	}
	if got := get(t, webPort); !strings.Contains(got, "workload:x:10000") {
		t.Errorf("published port: %q", got)
	}
	checkNeighbour("with web running")
	s := slirpOf(t, hw)
	if st, err := readStat(s.Pid); err != nil || procOwner(t, s.Pid) != pt.user.UID {
		t.Errorf("slirp4netns %d: %v, %v; want it running as the tenant's uid %d", s.Pid, st, err, pt.user.UID)
	}

	// The plugin restarts; meanwhile slirp4netns lost the published port.
	var list struct {
		Entries []struct {
			ID int `json:"id"`
		} `json:"entries"`
	}
	if err := slirpCall(ctx, s, pt.user.UID, map[string]any{"execute": "list_hostfwd"}, &list); err != nil || len(list.Entries) != 1 {
		t.Fatalf("list_hostfwd: %+v, %v", list, err)
	}
	if err := slirpCall(ctx, s, pt.user.UID, map[string]any{"execute": "remove_hostfwd", "arguments": map[string]int{"id": list.Entries[0].ID}}, nil); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r2 := newRuntime(t, cfg)
	treq := &sdk.TenantRequest{Tenant: pt.name, User: pt.user, Cgroup: pt.cgroup, RunDir: tenantRun}
	if th, err := r2.PrepareTenant(ctx, treq); err != nil || string(th.Data) != string(pt.handle.Data) {
		t.Fatalf("PrepareTenant after a restart: %s, %v", th.Data, err)
	}
	for _, h := range []sdk.Handle{hn, hq, hw} {
		if _, err := r2.Recover(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if got := slirpOf(t, hw); got != s || !slirpAlive(got) {
		t.Errorf("slirp4netns after the restart %+v (alive %v), want %+v adopted", got, slirpAlive(got), s)
	}
	if got := get(t, webPort); !strings.Contains(got, "workload:x:10000") {
		t.Errorf("published port after the restart: %q", got)
	}
	h2, _ := start(t, r2, pt, instance{name: "web2", settings: netSettings(outboundNone, 8080), args: probeArgs()})
	if got := hostPorts(t, h2)["p0"]; got != webPort+1 {
		t.Errorf("a new instance after the restart got port %d, want %d past web's", got, webPort+1)
	}
	if got := get(t, hostPorts(t, h2)["p0"]); !strings.Contains(got, "workload:x:10000") {
		t.Errorf("web2's published port: %q", got)
	}
	checkNeighbour("after the restart")

	for _, h := range []sdk.Handle{hw, h2, hq, hn} {
		if err := r2.Destroy(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if got := slirpState(t, pt); got != slirpBefore {
		t.Errorf("destroy left slirp state:\nbefore:\n%s\nafter:\n%s", slirpBefore, got)
	}
	if after := hostState(t); after != before {
		t.Errorf("destroy left network state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestSlirpRelease releases a tenant whose networked container still
// runs: its slirp4netns, in the daemon's user namespace, ends with the
// daemon, and its socket and port go.
func TestSlirpRelease(t *testing.T) {
	ctx := context.Background()
	pt := newTenant(t)
	r := newRuntime(t, slirpConfig(nil, pt))
	pt = prepare(t, r, pt)
	before := slirpState(t, pt)
	req := request(t, pt, instance{name: "web", settings: netSettings(outboundInternet, 8080), args: probeArgs()})
	h, err := r.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	get(t, hostPorts(t, h)["p0"])
	d, _ := decodeHandle(h)
	if err := r.ReleaseTenant(ctx, pt.handle); err != nil {
		t.Fatal(err)
	}
	if got := slirpState(t, pt); got != before {
		t.Errorf("release left slirp state:\nbefore:\n%s\nafter:\n%s", before, got)
	}
	// What the core's destroy of the instance would have removed.
	if err := removeCgroup(d.Cgroup); err != nil {
		t.Error(err)
	}
}

// TestSlirpFails checks that a start whose slirp4netns does not start, or
// cannot publish its port, is a clear error that leaves no container,
// process, socket, port or record, while a neighbour keeps working.
func TestSlirpFails(t *testing.T) {
	ctx := context.Background()
	pt, nb := newTenant(t), newTenant(t)
	r := newRuntime(t, slirpConfig(nil, pt))
	pt = prepare(t, r, pt)
	hn, _ := start(t, r, nb, instance{name: "nb", settings: netSettings(outboundNone, 8080), args: probeArgs()})
	nbPort := hostPorts(t, hn)["p0"]
	// The next port of the pool is taken on the host.
	taken, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", nbPort+1))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	before := slirpState(t, pt)
	for _, tc := range []struct {
		name  string
		extra sdk.Config
		want  string
	}{
		{"no-slirp4netns", sdk.Config{"slirp4netns": "/bin/false"}, "slirp4netns did not start: it ended"},
		{"port-taken", nil, fmt.Sprintf("publish the container's port 8080/tcp on the host's port %d", nbPort+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := newRuntime(t, slirpConfig(tc.extra, pt))
			req := request(t, pt, instance{name: tc.name, settings: netSettings(outboundInternet, 8080), args: probeArgs()})
			h, err := rt.Start(ctx, req)
			if err == nil {
				_ = rt.Destroy(ctx, h)
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want %q", err, tc.want)
			}
			td, err := decodeTenant(pt.handle)
			if err != nil {
				t.Fatal(err)
			}
			cctx, c, err := rt.connect(ctx, td.Address, td.peer())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.LoadContainer(cctx, idOf(req.Instance)); !errdefs.IsNotFound(err) {
				t.Errorf("container left: %v", err)
			}
			if _, err := os.Stat(filepath.Join(req.RunDir, slirpFile)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("slirp record left: %v", err)
			}
			if got := slirpState(t, pt); got != before {
				t.Errorf("failed start left slirp state:\nbefore:\n%s\nafter:\n%s", before, got)
			}
		})
	}
	if got := get(t, nbPort); !strings.Contains(got, "workload:x:10000") {
		t.Errorf("neighbour's published port: %q", got)
	}
}

// procOwner returns the uid of process pid.
func procOwner(t *testing.T, pid int) uint32 {
	t.Helper()
	fi, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	if err != nil {
		t.Fatal(err)
	}
	return fileUID(fi)
}

// TestSlirpEnds checks that a per-tenant container's slirp4netns ends
// with its task: on Stop, and when the task exits on its own (which
// Inspect, and so WatchExits, sees). Its port and socket go with it. A
// task whose slirp4netns was killed is stopped when recovered.
func TestSlirpEnds(t *testing.T) {
	ctx := context.Background()
	pt := newTenant(t)
	r := newRuntime(t, slirpConfig(nil, pt))
	pt = prepare(t, r, pt)
	before := slirpState(t, pt)
	for _, tc := range []struct {
		name string
		args []string
		end  func(t *testing.T, h sdk.Handle)
	}{
		{"stop", probeArgs(), func(t *testing.T, h sdk.Handle) {
			if err := r.Stop(ctx, h, 5*time.Second); err != nil {
				t.Fatal(err)
			}
		}},
		{"exit", []string{"sleep", "3"}, func(t *testing.T, h sdk.Handle) {
			if st := waitExit(t, r, h, 30*time.Second); st.State != sdk.StateExited {
				t.Errorf("status %+v, want exited", st)
			}
		}},
		{"slirp-killed", probeArgs(), func(t *testing.T, h sdk.Handle) {
			// A container without its network is stopped on Recover.
			s := slirpOf(t, h)
			if err := syscall.Kill(s.Pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(5 * time.Second); slirpAlive(s); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("slirp4netns %d does not end on SIGKILL", s.Pid)
				}
			}
			if _, err := r.Recover(ctx, h); err != nil {
				t.Fatal(err)
			}
			if st, err := r.Inspect(ctx, h); err != nil || st.State == sdk.StateRunning {
				t.Errorf("status %+v, %v; want stopped", st, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := start(t, r, pt, instance{name: tc.name, settings: netSettings(outboundInternet, 8080), args: tc.args})
			if s := slirpOf(t, h); !slirpAlive(s) {
				t.Fatalf("slirp4netns %+v is not running", s)
			}
			tc.end(t, h)
			if got := slirpState(t, pt); got != before {
				t.Errorf("an ended task left slirp state:\nbefore:\n%s\nafter:\n%s", before, got)
			}
		})
	}
}

// TestNetnsRules checks the rules of a per-tenant container's network
// namespace: replies and loopback always; slirp's DNS, then a drop of
// each local network and host address, then the rest, only with outbound
// "internet".
func TestNetnsRules(t *testing.T) {
	for _, tc := range []struct {
		outbound string
		want     []string
		not      []string
	}{
		{outboundNone, []string{":OUTPUT DROP", "-A OUTPUT -o lo -j ACCEPT", "--ctstate ESTABLISHED,RELATED -j ACCEPT"},
			[]string{"--dport 53", "-A OUTPUT -j ACCEPT", "-j DROP"}},
		{outboundInternet, []string{":OUTPUT DROP", "-A OUTPUT -d 10.0.2.3/32 -p udp --dport 53 -j ACCEPT", "-A OUTPUT -d 10.0.0.0/8 -j DROP",
			"-A OUTPUT -d 169.254.0.0/16 -j DROP", "-A OUTPUT -d 100.64.0.0/10 -j DROP", "-A OUTPUT -d 127.0.0.0/8 -j DROP", "-A OUTPUT -j ACCEPT\nCOMMIT\n"}, nil},
	} {
		t.Run(tc.outbound, func(t *testing.T) {
			rules, err := netnsRules(tc.outbound)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(rules, w) {
					t.Errorf("no %q in:\n%s", w, rules)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(rules, n) {
					t.Errorf("%q in:\n%s", n, rules)
				}
			}
			if tc.outbound == outboundInternet && strings.Index(rules, "--dport 53") > strings.Index(rules, "-d 10.0.0.0/8 -j DROP") {
				t.Errorf("slirp's DNS is dropped before it is accepted:\n%s", rules)
			}
		})
	}
}

// TestForwardsOf checks the published ports read back from a container's
// labels, and that malformed labels are refused.
func TestForwardsOf(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   []hostfwd
		ok     bool
	}{
		{"none", map[string]string{labelOutbound: outboundInternet}, nil, true},
		{"two", map[string]string{labelPorts: "23000-23001", labelPortMap: "8080/tcp,53/udp"},
			[]hostfwd{{"tcp", "0.0.0.0", 23000, 8080}, {"udp", "0.0.0.0", 23001, 53}}, true},
		{"bad-block", map[string]string{labelPorts: "x", labelPortMap: "8080/tcp"}, nil, false},
		{"bad-map", map[string]string{labelPorts: "23000-23000", labelPortMap: "8080/sctp"}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := forwardsOf(tc.labels)
			if (err == nil) != tc.ok || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("forwardsOf = %v, %v; want %v (ok %v)", got, err, tc.want, tc.ok)
			}
		})
	}
}

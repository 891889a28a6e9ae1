package ctrruntime

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// probeScript prints, from inside the container, what the hardening tests
// check, in sections split by "---".
const probeScript = `cat /proc/self/status; echo ---
cat /proc/self/uid_map; echo ---
id -u; echo ---
cat /proc/self/mountinfo; echo ---
echo hello >/state/probe && echo state-writable; echo ---
touch /rootfs-probe 2>/dev/null && echo rootfs-writable || echo rootfs-readonly; echo ---
ip link 2>/dev/null || cat /proc/net/dev; echo ---
echo done; exec sleep 1000`

// TestHardening runs the probe in two tenants' containers, one on its own
// rootless daemon and one on the shared daemon, and checks the
// barriers from inside: no capabilities, no_new_privs, seccomp, a user
// namespace mapped to the tenant's own subordinate range, a non-root
// workload uid, no host path but the state in mountinfo, a read-only root,
// a writable state owned by the workload, loopback only, and the instance's
// cgroup.
func TestHardening(t *testing.T) {
	a, b := newTenant(t), newTenant(t)
	r := perTenant(t, a)
	a, b = prepare(t, r, a), prepare(t, r, b)
	for _, tn := range []testTenant{a, b} {
		mode := r.modeOf(tn.name)
		t.Run(mode, func(t *testing.T) {
			h, req := start(t, r, tn, instance{name: "probe", args: []string{"sh", "-c", probeScript}, state: true,
				resources: sdk.Resources{MemoryBytes: 64 << 20, Pids: 64, MilliCPU: 500}})
			out := waitLog(t, r, h, "done\n", 30*time.Second)
			sec := strings.Split(out, "---\n")
			if len(sec) != 8 {
				t.Fatalf("probe output has %d sections:\n%s", len(sec), out)
			}
			status := fields(sec[0])
			for k, want := range map[string]string{"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapBnd": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"} {
				if got := status[k]; got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			u := tn.user
			// The map points at the tenant's ids: from the shared daemon,
			// the workload is the tenant's own uid; in the tenant's own
			// daemon, the container shares the daemon's user namespace,
			// where rootlesskit maps 0 to the tenant and the rest to its
			// subordinate range.
			want := fmt.Sprintf("0 %d 10000 10000 %d 1 10001 %d %d", u.SubUID, u.UID, u.SubUID+10001, u.Count-10001)
			hostUID := u.UID
			if mode == ModePerTenant {
				want = fmt.Sprintf("0 %d 1 1 %d %d", u.UID, u.SubUID, u.Count)
				hostUID = u.SubUID + 9999
			}
			host, inside := want, want
			if got := strings.Join(strings.Fields(sec[1]), " "); got != inside {
				t.Errorf("uid_map %q, want %q", got, inside)
			}
			if got := strings.TrimSpace(sec[2]); got != "10000" {
				t.Errorf("uid %s, want 10000", got)
			}
			checkMountinfo(t, sec[3], req.Mounts[0].Source)
			if !strings.Contains(sec[4], "state-writable") {
				t.Errorf("state not writable: %q; stderr: %s", sec[4], logs(t, r, h, sdk.Stderr))
			}
			if !strings.Contains(sec[5], "rootfs-readonly") {
				t.Errorf("root filesystem: %q", sec[5])
			}
			checkLoopbackOnly(t, sec[6])
			// On the host, the state file is the workload's: the tenant's
			// own uid from the shared daemon, its subordinate one in its
			// own daemon.
			fi, err := os.Stat(filepath.Join(req.Mounts[0].Source, "probe"))
			if err != nil {
				t.Fatal(err)
			}
			if uid := fileUID(fi); uid != hostUID {
				t.Errorf("state file owned by %d on the host, want the workload's %d", uid, hostUID)
			}
			st, err := r.Inspect(context.Background(), h)
			if err != nil || st.State != sdk.StateRunning || st.Pid == 0 {
				t.Fatalf("inspect: %+v, %v", st, err)
			}
			hostMap, err := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", st.Pid))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(strings.Fields(string(hostMap)), " "); got != host {
				t.Errorf("uid_map on the host %q, want %q", got, host)
			}
			hostStatus, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", st.Pid))
			if err != nil {
				t.Fatal(err)
			}
			if uids := strings.Fields(fields(string(hostStatus))["Uid"]); len(uids) == 0 || uids[0] != fmt.Sprint(hostUID) {
				t.Errorf("host uid of the workload %v, want %d", uids, hostUID)
			}
			cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", st.Pid))
			if err != nil {
				t.Fatal(err)
			}
			if want := req.Cgroup.Path + "/ctr\n"; !strings.Contains(string(cg), want) {
				t.Errorf("cgroup of the workload:\n%s\nwant %s", cg, want)
			}
			d, _ := decodeHandle(h)
			checkCgroupLimits(t, d.Cgroup, 64<<20, 50000, 64)
			spec, err := os.ReadFile(filepath.Join(req.RunDir, specFile))
			if err != nil || !strings.Contains(string(spec), `"noNewPrivileges": true`) {
				t.Errorf("spec in the run dir: %v\n%s", err, spec)
			}
		})
	}
}

// fields parses "Key:\tvalue" lines.
func fields(s string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// checkMountinfo checks that no mount in the container shows a host
// path, but the state: every mount shows the root of its filesystem, or is
// one of the container's own /proc paths bound read-only over itself, or
// a host device node (/dev/null...) that runc binds into /dev, and over
// masked paths, in a user namespace.
func checkMountinfo(t *testing.T, mountinfo, state string) {
	t.Helper()
	sawState := false
	for _, line := range strings.Split(strings.TrimSpace(mountinfo), "\n") {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) {
			t.Errorf("malformed mountinfo line %q", line)
			continue
		}
		root, point, fstype := f[3], f[4], f[sep+1]
		switch {
		case point == "/state":
			sawState = true
			if root != state {
				t.Errorf("/state shows host path %s, want %s", root, state)
			}
		case root == "/":
		case fstype == "proc" && point == "/proc"+root:
		case fstype == "devtmpfs" && slices.Contains([]string{"/null", "/zero", "/full", "/random", "/urandom", "/tty"}, root):
		default:
			t.Errorf("mount %s shows host path %s: %s", point, root, line)
		}
	}
	if !sawState {
		t.Errorf("no /state in mountinfo:\n%s", mountinfo)
	}
}

// checkLoopbackOnly checks that the container's only interface is lo.
func checkLoopbackOnly(t *testing.T, out string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		name, _, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || strings.Contains(name, " ") || strings.Contains(name, "|") || name == "" {
			continue
		}
		if name = strings.TrimSpace(name); name != "lo" && !strings.HasPrefix(name, "Inter") {
			if _, err := fmt.Sscanf(name, "%d", new(int)); err == nil {
				continue // "1: lo: ..." of ip link
			}
			t.Errorf("interface %q in the container:\n%s", name, out)
		}
	}
	if !strings.Contains(out, "lo") {
		t.Errorf("no loopback in the container:\n%s", out)
	}
}

// checkCgroupLimits checks the container cgroup's limits: memory with no
// swap beyond it, the CFS quota (of a 100 ms period) and pids, on cgroup
// v1 or v2.
func checkCgroupLimits(t *testing.T, cgroup string, mem, quota, pids int64) {
	t.Helper()
	read := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	want := map[string]string{}
	if _, err := os.Stat("/sys/fs/cgroup/memory"); err == nil {
		want[filepath.Join("/sys/fs/cgroup/memory", cgroup, "memory.limit_in_bytes")] = fmt.Sprint(mem)
		want[filepath.Join("/sys/fs/cgroup/memory", cgroup, "memory.memsw.limit_in_bytes")] = fmt.Sprint(mem)
		want[filepath.Join("/sys/fs/cgroup/cpu", cgroup, "cpu.cfs_quota_us")] = fmt.Sprint(quota)
		want[filepath.Join("/sys/fs/cgroup/pids", cgroup, "pids.max")] = fmt.Sprint(pids)
	} else {
		dir := filepath.Join("/sys/fs/cgroup", cgroup)
		want[filepath.Join(dir, "memory.max")] = fmt.Sprint(mem)
		want[filepath.Join(dir, "memory.swap.max")] = "0"
		want[filepath.Join(dir, "cpu.max")] = fmt.Sprintf("%d 100000", quota)
		want[filepath.Join(dir, "pids.max")] = fmt.Sprint(pids)
	}
	for path, w := range want {
		if got := read(path); got != w {
			t.Errorf("%s = %s, want %s", path, got, w)
		}
	}
}

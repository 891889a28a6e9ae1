package pluginhost_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/tenant"
)

// world is a directory every tenant can search, holding a copy of the test
// binary (to serve builtins, third-party plugins and the trampoline) and
// the tenants' plugin directories.
type world struct {
	base, exe, plugins string
	tenants            *tenant.Manager
}

func newWorld(t *testing.T) *world {
	t.Helper()
	base, err := os.MkdirTemp("", "ph-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	w := &world{base: base, plugins: filepath.Join(base, "plugins")}
	for _, d := range []string{base, w.plugins} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	w.exe = installPlugin(t, base, "kigumi", 0o755)
	installPlugin(t, w.plugins, "kigumi-runtime-thirdparty", 0o755)
	if w.tenants, err = tenant.NewManager(); err != nil {
		t.Fatal(err)
	}
	return w
}

// host returns a plugin host serving the fake runtime as a builtin and as
// the third-party plugin "thirdparty".
func (w *world) host(t *testing.T, opts ...pluginhost.Option) *pluginhost.Host {
	t.Helper()
	return newHost(t, nil, append([]pluginhost.Option{pluginhost.WithExecutable(w.exe),
		pluginhost.WithBuiltins(fakeBuiltins[0]), pluginhost.WithPluginDir(w.plugins)}, opts...)...)
}

// tenant makes a real tenant (user, group, cgroup), removed when the test
// ends, and returns its scope.
func (w *world) tenant(t *testing.T, limits tenant.Limits) pluginhost.Scope {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "ph" + hex.EncodeToString(b)
	uid, err := tenant.FreeUID(400000+uint32(b[0])<<12|uint32(b[1])<<4, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec := tenant.Spec{Tenant: name, UID: uid, Home: filepath.Join(w.base, "home-"+name), Limits: limits}
	ctx := context.Background()
	tn, err := w.tenants.Ensure(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.tenants.Remove(context.Background(), name, spec.Home); err != nil {
			t.Errorf("remove tenant %s: %v", name, err)
		}
	})
	return pluginhost.Scope{Tenant: &pluginhost.Tenant{
		Name: name, User: tn.User, Cgroup: tn.Cgroup, Dir: filepath.Join(w.base, "t-"+name),
	}}
}

// reportOf asks the plugin for what it sees of itself.
func reportOf(t *testing.T, rt sdk.Runtime) report {
	t.Helper()
	h, err := rt.Start(context.Background(), &sdk.StartRequest{Args: []string{"report"}})
	if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(h.Data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// goPluginEnv names the variables go-plugin gives a plugin.
var goPluginEnv = []string{sdk.Handshake.MagicCookieKey, "PLUGIN_MIN_PORT", "PLUGIN_MAX_PORT",
	"PLUGIN_PROTOCOL_VERSIONS", "PLUGIN_UNIX_SOCKET_DIR"}

// checkEnv checks that env holds only the allow-listed variables, with the
// host's values, and go-plugin's.
func checkEnv(t *testing.T, env []string) {
	t.Helper()
	var got, want []string
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		got = append(got, k)
		if slices.Contains(pluginhost.EnvAllowList(), k) && v != os.Getenv(k) {
			t.Errorf("plugin has %s=%q, the host %q", k, v, os.Getenv(k))
		}
		if strings.Contains(v, "s3cret") {
			t.Errorf("the host's secret reached the plugin: %s", kv)
		}
	}
	for _, k := range pluginhost.EnvAllowList() {
		if _, ok := os.LookupEnv(k); ok {
			want = append(want, k)
		}
	}
	want = append(want, goPluginEnv...)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("plugin environment has %v, want exactly %v", got, want)
	}
}

// setHostEnv gives the host a secret and an allow-listed variable.
func setHostEnv(t *testing.T) {
	t.Setenv("PH_SECRET_TOKEN", "s3cret")
	t.Setenv("TZ", "Europe/Paris")
	t.Setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
}

func TestTenantProcess(t *testing.T) {
	w := newWorld(t)
	setHostEnv(t)
	// A file the host holds open without close-on-exec must not reach the
	// plugin.
	leak := filepath.Join(w.base, "leaked-secret")
	if err := os.WriteFile(leak, []byte("s3cret"), 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(leak, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })

	scope := w.tenant(t, tenant.Limits{MilliCPU: 1000, MemoryBytes: 512 << 20, Pids: 200})
	tn := scope.Tenant
	h := w.host(t)
	for _, name := range []string{"fake", "thirdparty"} {
		t.Run(name, func(t *testing.T) {
			rt, err := h.Runtime(context.Background(), name, scope)
			if err != nil {
				t.Fatal(err)
			}
			r := reportOf(t, rt)
			// Real, effective, saved and filesystem ids.
			ids := func(id uint32) string { return strings.Join(slices.Repeat([]string{fmt.Sprint(id)}, 4), " ") }
			wantStatus := map[string]string{
				"Uid": ids(tn.User.UID), "Gid": ids(tn.User.GID), "Groups": "",
				"NoNewPrivs": "1", "CapEff": "0000000000000000",
			}
			for k, v := range wantStatus {
				if r.Status[k] != v {
					t.Errorf("%s: %q, want %q", k, r.Status[k], v)
				}
			}
			checkCgroup(t, r.Cgroup, "/kigumi/"+tn.Name)
			// The Go runtime reads its cgroup's CPU limit when it starts and
			// keeps the files open: the plugin's runtime started inside the
			// tenant's cgroup. It rounds a limit below 2 up to 2.
			quota := filepath.Join(filepath.Dir(cpuProcs(t, tn)), "cpu.cfs_quota_us")
			if !slices.Contains(slices.Collect(maps.Values(r.FDs)), quota) {
				t.Errorf("the plugin's runtime does not read %s: it did not start in the tenant's cgroup; fds %v", quota, r.FDs)
			}
			if want := min(runtime.NumCPU(), 2); r.GOMAXPROCS != want {
				t.Errorf("GOMAXPROCS = %d under a one-CPU quota, want %d", r.GOMAXPROCS, want)
			}
			checkEnv(t, r.Env)
			checkFDs(t, r.FDs, leak, tn)
			if r.Cwd != "/" {
				t.Errorf("working directory %q, want /", r.Cwd)
			}
			checkOwner(t, tn.Dir, 0, tn.User.GID, 0o710)
			if filepath.Dir(r.SocketDir) != tn.Dir {
				t.Errorf("socket directory %s is not in the tenant's plugin directory %s", r.SocketDir, tn.Dir)
			}
			checkOwner(t, r.SocketDir, tn.User.UID, tn.User.GID, 0o700)
		})
	}
}

// checkCgroup checks that every hierarchy of a tenant cgroup places the
// process at path.
func checkCgroup(t *testing.T, cgroup, path string) {
	t.Helper()
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(cgroup), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			t.Fatalf("bad /proc/self/cgroup line %q", line)
		}
		for _, ctl := range strings.Split(parts[1], ",") {
			switch ctl {
			case "memory", "cpu", "pids", "freezer":
				seen[ctl] = true
				if parts[2] != path {
					t.Errorf("in %s cgroup %s, want %s", ctl, parts[2], path)
				}
			}
		}
	}
	if len(seen) != 4 {
		t.Errorf("the plugin is in the cgroups of %v only:\n%s", seen, cgroup)
	}
}

// cpuProcs returns the tenant's cgroup.procs file in the v1 cpu hierarchy.
func cpuProcs(t *testing.T, tn *pluginhost.Tenant) string {
	t.Helper()
	for _, f := range tn.Cgroup.ProcsFiles {
		if strings.Contains(f, "/cpu/") || strings.Contains(f, "/cpu,") {
			return f
		}
	}
	t.Fatalf("no cpu hierarchy among %v: these tests need cgroup v1", tn.Cgroup.ProcsFiles)
	return ""
}

// checkFDs checks that the plugin holds /dev/null on 0, pipes on 1 and 2,
// and above that only what go-plugin and the Go runtime open: sockets,
// pipes, anonymous inodes and its cgroup's CPU limit files, never a file of
// the host's.
func checkFDs(t *testing.T, fds map[int]string, leak string, tn *pluginhost.Tenant) {
	t.Helper()
	if fds[0] != "/dev/null" || !strings.HasPrefix(fds[1], "pipe:") || !strings.HasPrefix(fds[2], "pipe:") {
		t.Errorf("fds 0-2 are %q, %q, %q; want /dev/null and two pipes", fds[0], fds[1], fds[2])
	}
	cpu := filepath.Dir(cpuProcs(t, tn)) + "/"
	for fd, link := range fds {
		if fd <= 2 {
			continue
		}
		ok := strings.HasPrefix(link, "socket:") || strings.HasPrefix(link, "pipe:") ||
			strings.HasPrefix(link, "anon_inode:") || strings.HasPrefix(link, cpu+"cpu.cfs_")
		if link == leak || !ok {
			t.Errorf("plugin holds fd %d: %s", fd, link)
		}
	}
}

func checkOwner(t *testing.T, path string, uid, gid uint32, perm os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != uid || st.Gid != gid || fi.Mode() != os.ModeDir|perm {
		t.Errorf("%s: %d:%d %v, want %d:%d %v", path, st.Uid, st.Gid, fi.Mode(), uid, gid, os.ModeDir|perm)
	}
}

func TestThirdPartyMinimalEnv(t *testing.T) {
	w := newWorld(t)
	setHostEnv(t)
	h := w.host(t)
	for _, name := range []string{"thirdparty", "fake"} {
		t.Run(name, func(t *testing.T) {
			rt, err := h.Runtime(context.Background(), name, pluginhost.HostScope)
			if err != nil {
				t.Fatal(err)
			}
			r := reportOf(t, rt)
			checkEnv(t, r.Env)
			if r.Status["Uid"] != "0 0 0 0" {
				t.Errorf("host-scope plugin runs as %q, want root", r.Status["Uid"])
			}
		})
	}
}

// socketOf returns the path of the go-plugin socket of the plugin that
// reported r.
func socketOf(t *testing.T, r report) string {
	t.Helper()
	ents, err := os.ReadDir(r.SocketDir)
	if err != nil || len(ents) != 1 {
		t.Fatalf("socket directory %s: %v, %v", r.SocketDir, ents, err)
	}
	return filepath.Join(r.SocketDir, ents[0].Name())
}

// dialAs tries to connect to the unix socket path as the tenant's user,
// with no supplementary groups, and returns the probe's exit status.
func dialAs(t *testing.T, exe string, tn *pluginhost.Tenant, path string) int {
	t.Helper()
	cmd := exec.Command(exe)
	cmd.Env = []string{probeEnv + "=" + path}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: tn.User.UID, Gid: tn.User.GID, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("probe: %v: %s", err, out)
	}
	t.Logf("dial %s as uid %d: %v %s", path, tn.User.UID, err, out)
	return cmd.ProcessState.ExitCode()
}

func TestTenantsApart(t *testing.T) {
	w := newWorld(t)
	a, b := w.tenant(t, tenant.Limits{}), w.tenant(t, tenant.Limits{})
	h := w.host(t)
	ctx := context.Background()
	rtA, err := h.Runtime(ctx, "fake", a)
	if err != nil {
		t.Fatal(err)
	}
	rtB, err := h.Runtime(ctx, "fake", b)
	if err != nil {
		t.Fatal(err)
	}
	rtHost, err := h.Runtime(ctx, "fake", pluginhost.HostScope)
	if err != nil {
		t.Fatal(err)
	}
	rA, rB, rHost := reportOf(t, rtA), reportOf(t, rtB), reportOf(t, rtHost)
	if rA.Pid == rB.Pid || rA.Pid == rHost.Pid || rB.Pid == rHost.Pid {
		t.Fatalf("processes are not distinct: A %d, B %d, host %d", rA.Pid, rB.Pid, rHost.Pid)
	}
	if again, err := h.Runtime(ctx, "fake", a); err != nil || again != rtA {
		t.Errorf("a second call in A's scope did not reuse A's process: %v", err)
	}
	tests := []struct {
		name   string
		as     *pluginhost.Tenant
		socket string
		want   int
	}{
		{"own socket", a.Tenant, socketOf(t, rA), 0},
		{"other tenant's socket", a.Tenant, socketOf(t, rB), probeDenied},
		{"other tenant's socket, reversed", b.Tenant, socketOf(t, rA), probeDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := dialAs(t, w.exe, tt.as, tt.socket); got != tt.want {
				t.Errorf("dial as %s: exit %d, want %d", tt.as.Name, got, tt.want)
			}
		})
	}
}

func TestRelease(t *testing.T) {
	w := newWorld(t)
	a, b := w.tenant(t, tenant.Limits{}), w.tenant(t, tenant.Limits{})
	h := w.host(t)
	ctx := context.Background()
	var pids []int
	var clients []sdk.Runtime
	for _, s := range []pluginhost.Scope{a, a, b, pluginhost.HostScope} {
		name := "fake"
		if len(pids) == 1 {
			name = "thirdparty"
		}
		rt, err := h.Runtime(ctx, name, s)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, rt)
		pids = append(pids, reportOf(t, rt).Pid)
	}
	if err := h.Release(a.Tenant.Name); err != nil {
		t.Fatal(err)
	}
	for i, pid := range pids {
		err := syscall.Kill(pid, 0)
		if released := i < 2; released != errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d (released %v): kill 0 = %v", pid, released, err)
		}
	}
	if _, err := os.Lstat(a.Tenant.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tenant plugin directory after Release: %v", err)
	}
	_, err := clients[0].Info(ctx)
	wantCode(t, err, sdk.CodeUnavailable)
	if _, err := clients[2].Info(ctx); err != nil {
		t.Errorf("B's plugin after A's release: %v", err)
	}
	// A recreated tenant gets fresh processes.
	rt, err := h.Runtime(ctx, "fake", a)
	if err != nil {
		t.Fatal(err)
	}
	if r := reportOf(t, rt); r.Pid == pids[0] {
		t.Error("the released process served again")
	}
}

func TestInvalidScope(t *testing.T) {
	w := newWorld(t)
	good := w.tenant(t, tenant.Limits{})
	h := w.host(t)
	if _, err := h.Runtime(context.Background(), "fake", good); err != nil {
		t.Fatal(err)
	}
	edit := func(f func(*pluginhost.Tenant)) pluginhost.Scope {
		c := *good.Tenant
		f(&c)
		return pluginhost.Scope{Tenant: &c}
	}
	tests := []struct {
		name  string
		scope pluginhost.Scope
		want  string
	}{
		{"root uid", edit(func(t *pluginhost.Tenant) { t.Name, t.User.UID = "phroot", 0 }), "never run as uid or gid 0"},
		{"root gid", edit(func(t *pluginhost.Tenant) { t.Name, t.User.GID = "phroot", 0 }), "never run as uid or gid 0"},
		{"no cgroup", edit(func(t *pluginhost.Tenant) { t.Name, t.Cgroup.ProcsFiles = "phnocg", nil }), "no cgroup.procs file"},
		{"not procs", edit(func(t *pluginhost.Tenant) { t.Name, t.Cgroup.ProcsFiles = "phcg", []string{"/etc/passwd"} }), "not the absolute path of a cgroup.procs file"},
		{"relative dir", edit(func(t *pluginhost.Tenant) { t.Name, t.Dir = "phrel", "x/y" }), "not a clean absolute path"},
		{"bad name", edit(func(t *pluginhost.Tenant) { t.Name = "../x" }), "invalid tenant name"},
		{"changed uid", edit(func(t *pluginhost.Tenant) { t.User.UID++ }), "release the tenant before launching them differently"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.Runtime(context.Background(), "fake", tt.scope)
			wantCode(t, err, sdk.CodeInvalid, tt.want)
		})
	}
}

func TestCrashBackoff(t *testing.T) {
	w := newWorld(t)
	scope := w.tenant(t, tenant.Limits{})
	const base, max = 40 * time.Millisecond, 100 * time.Millisecond
	tests := []struct {
		name  string
		scope pluginhost.Scope
	}{
		{"host", pluginhost.HostScope},
		{"tenant", scope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events := make(chan pluginhost.Event, 10)
			h := w.host(t, pluginhost.WithRestartBackoff(base, max),
				pluginhost.WithObserver(func(e pluginhost.Event) { events <- e }))
			ctx := context.Background()
			prev := 0
			// The delay doubles, within jitter, up to max.
			for i, bounds := range [][2]time.Duration{{base / 2, base}, {base, 2 * base}, {max / 2, max}} {
				rt, err := h.Runtime(ctx, "fake", tt.scope)
				if err != nil {
					t.Fatal(err)
				}
				pid := reportOf(t, rt).Pid
				if pid == prev {
					t.Fatalf("restart %d: the dead process %d served", i, pid)
				}
				prev = pid
				crashed := time.Now()
				_, err = rt.Start(ctx, &sdk.StartRequest{Args: []string{"exit"}})
				wantCode(t, err, sdk.CodeUnavailable, "exited: exit status 3")
				e := <-events
				want := pluginhost.Event{Kind: sdk.KindRuntime, Name: "fake", Cause: "exit status 3", Restarts: i + 1, Delay: e.Delay}
				if tt.scope.Tenant != nil {
					want.Tenant = tt.scope.Tenant.Name
				}
				if e != want {
					t.Errorf("event %+v, want %+v", e, want)
				}
				if e.Delay < bounds[0] || e.Delay > bounds[1] {
					t.Errorf("restart %d: delay %s, want within [%s, %s]", i+1, e.Delay, bounds[0], bounds[1])
				}
				if _, err := h.Runtime(ctx, "fake", tt.scope); err != nil {
					t.Fatal(err)
				}
				if since := time.Since(crashed); since < e.Delay {
					t.Errorf("relaunched %s after the crash, before the backoff of %s", since, e.Delay)
				}
			}
			// A relaunch that is not due yet ends with the caller's context.
			rt, err := h.Runtime(ctx, "fake", tt.scope)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = rt.Start(ctx, &sdk.StartRequest{Args: []string{"exit"}})
			<-events
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			_, err = h.Runtime(cctx, "fake", tt.scope)
			wantCode(t, err, sdk.CodeUnavailable, "failed 4 times in a row (last: exit status 3)", "context canceled")
		})
	}
}

func TestTenantPluginDiesWithHost(t *testing.T) {
	w := newWorld(t)
	scope := w.tenant(t, tenant.Limits{})
	js, err := json.Marshal(scope.Tenant)
	if err != nil {
		t.Fatal(err)
	}
	host := exec.Command(w.exe)
	host.Env = []string{hostEnv + "=" + string(js)}
	var stderr strings.Builder
	host.Stderr = &stderr
	out, err := host.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = host.Process.Kill(); _ = host.Wait() })
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil {
		t.Fatalf("read the plugin's pid: %v; host: %s", err, stderr.String())
	}
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("plugin %d before the host died: %v", pid, err)
	}
	if err := host.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = host.Wait()
	// The parent-death signal, set again after the trampoline took the
	// tenant's uid, kills the plugin; init reaps it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for syscall.Kill(pid, 0) == nil {
		select {
		case <-ctx.Done():
			t.Fatalf("plugin %d outlived its host", pid)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

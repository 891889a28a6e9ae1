package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The end-to-end tests run the real kigumi binary as root: real Linux
// users, cgroups, plugin processes and wasm sandboxes.

// testVersion is the version the test binary is built with.
const testVersion = "v0.0.0-e2e"

var (
	kigumiBin   string // built by TestMain
	appWasm     string
	hostileWasm string // testdata/hostile, beside appWasm
	fakeLedger  string // the fake ledger, a test double of rippled
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kigumi-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// Others may run the binary and read the module (TestNonRoot).
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	kigumiBin = filepath.Join(dir, "kigumi")
	appWasm = filepath.Join(dir, "app.wasm")
	hostileWasm = filepath.Join(dir, "hostile.wasm")
	fakeLedger = filepath.Join(dir, "fakeledger")
	builds := []*exec.Cmd{
		exec.Command("go", "build", "-ldflags", "-X main.version="+testVersion, "-o", kigumiBin, "."),
		exec.Command("go", "build", "-o", appWasm, "../../examples/quickstart/app"),
		exec.Command("go", "build", "-o", hostileWasm, "./testdata/hostile"),
		exec.Command("go", "build", "-o", fakeLedger, "../../plugins/ledger-xrpl/internal/fakeledger/cmd/fakeledger"),
	}
	builds[1].Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	builds[2].Env = builds[1].Env
	for _, b := range builds {
		if out, err := b.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n%s", b, err, out)
			os.Exit(2)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// workspace is a host spec with its own state directory and tenants whose
// names are unique to the run, so tests never touch other users.
type workspace struct {
	dir, host, tenants, state string
	names                     []string
}

func newWorkspace(t testing.TB, tenants int) *workspace {
	t.Helper()
	var b [3]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	dir, err := os.MkdirTemp("", "kigumi-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	// Tenant users must traverse to their state directories.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w := &workspace{dir: dir, host: filepath.Join(dir, "host.hcl"), tenants: filepath.Join(dir, "tenants"), state: filepath.Join(dir, "state")}
	policies, _ := filepath.Abs("../../policies")
	writeFile(t, w.host, fmt.Sprintf(`host "e2e" {
  state_dir     = %q
  artifacts_dir = %q
  policies      = [%q]
  capacity {
    cpu       = 2
    memory    = "2GiB"
    disk      = "4GiB"
    instances = 8
  }
  isolation {
    uid_base   = 62000
    subid_base = 1500000000
  }
}
runtime "wasm" {}
statefs "fuse" {}
`, w.state, filepath.Dir(appWasm), policies))
	if err := os.Mkdir(w.tenants, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range tenants {
		name := fmt.Sprintf("e2e%s%c", id, 'a'+i)
		w.names = append(w.names, name)
		w.writeTenant(t, name, "Hello")
	}
	t.Cleanup(func() {
		// Whatever the test left, destroy it, then drop the workspace.
		if _, err := os.Stat(filepath.Join(w.state, "kigumi.db")); err == nil {
			exec.Command(kigumiBin, "destroy", "-c", w.host, "--auto-approve").Run()
		}
		os.RemoveAll(dir)
	})
	return w
}

func (w *workspace) writeTenant(t testing.TB, name, greeting string) {
	t.Helper()
	writeFile(t, filepath.Join(w.tenants, name+".hcl"), fmt.Sprintf(`tenant %q {
  instance "app" {
    runtime     = "wasm"
    module      = %q
    args        = ["--name", %q, "--interval", "200ms"]
    env         = { GREETING = %q }
    resources {
      memory = "64MiB"
      cpu    = 0.2
    }
    state {
      size = "4MiB"
    }
    permissions = ["state.write", "clock"]
  }
}
`, name, appWasm, name, greeting))
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// kigumi runs the binary and returns its exit code and output.
func kigumi(t testing.TB, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(kigumiBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

func mustKigumi(t testing.TB, args ...string) string {
	t.Helper()
	code, out, errOut := kigumi(t, args...)
	if code != 0 {
		t.Fatalf("kigumi %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

type statusJSON struct {
	Tenants []struct {
		Name      string `json:"name"`
		Source    string `json:"source"`
		User      string `json:"user"`
		UID       uint32 `json:"uid"`
		Home      string `json:"home"`
		Cgroup    string `json:"cgroup"`
		Instances []struct {
			Name     string `json:"name"`
			State    string `json:"state"`
			Pid      int    `json:"pid"`
			StateDir string `json:"state_dir"`
			LogDir   string `json:"log_dir"`
		} `json:"instances"`
	} `json:"tenants"`
}

func status(t *testing.T, host string) statusJSON {
	t.Helper()
	var st statusJSON
	if err := json.Unmarshal([]byte(mustKigumi(t, "status", "-c", host, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// procField returns a field of /proc/PID/status, or "" if pid is gone.
func procField(pid int, field string) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// alive reports whether pid runs. A zombie has exited: it waits only for
// init to reap it, since the plugin that started it is gone.
func alive(pid int) bool {
	s := procField(pid, "State")
	return s != "" && !strings.HasPrefix(s, "Z")
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stateMounts counts the kigumi state filesystems mounted at dir.
func stateMounts(t *testing.T, dir string) int {
	t.Helper()
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		if sep := slices.Index(f, "-"); len(f) > 4 && f[4] == dir && sep > 0 && sep+2 < len(f) && f[sep+2] == "kigumi-state" {
			n++
		}
	}
	return n
}

// stateHelper returns the pid of the helper serving the FUSE state at dir,
// from its pid file, or 0.
func stateHelper(dir string) int {
	var rec struct {
		Pid int `json:"pid"`
	}
	data, _ := os.ReadFile(filepath.Join(filepath.Dir(dir), ".run", filepath.Base(dir), "helper.json"))
	if json.Unmarshal(data, &rec) != nil {
		return 0
	}
	return rec.Pid
}

func TestEndToEnd(t *testing.T) {
	w := newWorkspace(t, 2)
	mustKigumi(t, "validate", "-c", w.host)
	out := mustKigumi(t, "plan", "-c", w.host)
	if !strings.Contains(out, "Plan: tenants: 2 to create, 0 to update, 0 to destroy; instances: 2 to create, 0 to update, 0 to destroy.") {
		t.Fatalf("plan output:\n%s", out)
	}
	mustKigumi(t, "apply", "-c", w.host, "--auto-approve")

	st := status(t, w.host)
	if len(st.Tenants) != 2 {
		t.Fatalf("status: %+v", st)
	}
	type leftover struct {
		user, home, stateDir, runDir string
		pid, helper                  int
		cgroups                      []string
	}
	var made []leftover
	for i, ten := range st.Tenants {
		if ten.Name != w.names[i] || ten.User != "kg-"+w.names[i] {
			t.Fatalf("tenant %d = %+v", i, ten)
		}
		u, err := user.Lookup(ten.User)
		if err != nil || u.Uid != strconv.Itoa(int(ten.UID)) {
			t.Fatalf("user %s: %+v %v", ten.User, u, err)
		}
		passwd, _ := os.ReadFile("/etc/passwd")
		if !strings.Contains(string(passwd), ten.User+":x:"+u.Uid+":"+u.Gid+":") || !strings.Contains(string(passwd), ":/usr/sbin/nologin\n") {
			t.Errorf("passwd entry of %s is not a nologin user", ten.User)
		}
		for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
			if data, _ := os.ReadFile(f); !strings.Contains(string(data), ten.User+":") {
				t.Errorf("%s has no range for %s", f, ten.User)
			}
		}
		fi, err := os.Stat(ten.Home)
		if err != nil || fi.Mode().Perm() != 0o700 || fmt.Sprint(ownerUID(fi)) != u.Uid {
			t.Errorf("home %s: %v %v", ten.Home, fi.Mode(), err)
		}
		in := ten.Instances[0]
		if in.State != "running" || in.Pid == 0 {
			t.Fatalf("instance %+v", in)
		}
		if got := strings.Fields(procField(in.Pid, "Uid")); len(got) == 0 || got[0] != u.Uid {
			t.Errorf("workload pid %d runs as uid %v, want %s", in.Pid, got, u.Uid)
		}
		if procField(in.Pid, "NoNewPrivs") != "1" {
			t.Errorf("workload pid %d lacks no_new_privs", in.Pid)
		}
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", in.Pid))
		if !strings.Contains(string(cg), "/kigumi/"+ten.Name) {
			t.Errorf("workload pid %d is not in its tenant's cgroup:\n%s", in.Pid, cg)
		}
		var cgDirs []string
		for _, line := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) == 3 && strings.Contains(parts[2], "/kigumi/") {
				ctrl := parts[1]
				if ctrl == "" {
					ctrl = "."
				}
				cgDirs = append(cgDirs, filepath.Join("/sys/fs/cgroup", ctrl, "kigumi", ten.Name))
			}
		}
		eventually(t, "the workload's counter in its state", func() bool {
			data, err := os.ReadFile(filepath.Join(in.StateDir, "counter"))
			return err == nil && len(data) > 0
		})
		if fi, err := os.Stat(filepath.Join(in.StateDir, "counter")); err != nil || fmt.Sprint(ownerUID(fi)) != u.Uid {
			t.Errorf("counter not owned by the tenant: %v", err)
		}
		eventually(t, "the greeting in the logs", func() bool {
			_, out, _ := kigumi(t, "logs", "-c", w.host, ten.Name+"/app")
			return strings.Contains(out, "Hello") && strings.Contains(out, ten.Name)
		})
		// The state is a quota-enforcing FUSE filesystem by default, served
		// by a helper, and the sandbox is jailed in it.
		if n := stateMounts(t, in.StateDir); n != 1 {
			t.Errorf("%d kigumi state mounts at %s, want 1", n, in.StateDir)
		}
		helper := stateHelper(in.StateDir)
		if !alive(helper) {
			t.Errorf("state helper %d of %s does not run", helper, in.StateDir)
		}
		if root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", in.Pid)); err != nil || root != in.StateDir {
			t.Errorf("workload pid %d has root %q (%v), want its state %s", in.Pid, root, err, in.StateDir)
		}
		big := filepath.Join(in.StateDir, "big")
		if err := os.WriteFile(big, make([]byte, 5<<20), 0o600); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("writing 5 MiB into a 4 MiB state: %v, want ENOSPC", err)
		}
		if err := os.Remove(big); err != nil {
			t.Error(err)
		}
		made = append(made, leftover{user: ten.User, home: ten.Home, stateDir: in.StateDir, runDir: in.LogDir, pid: in.Pid, cgroups: cgDirs, helper: helper})
	}

	// A second apply changes nothing.
	if out := mustKigumi(t, "apply", "-c", w.host, "--auto-approve"); !strings.Contains(out, "No changes.") {
		t.Errorf("second apply:\n%s", out)
	}

	// An update restarts the workload and keeps its state.
	w.writeTenant(t, w.names[0], "Bonjour")
	if out := mustKigumi(t, "apply", "-c", w.host, "--auto-approve"); !strings.Contains(out, "1 updated") {
		t.Errorf("update apply:\n%s", out)
	}
	eventually(t, "the new greeting", func() bool {
		_, out, _ := kigumi(t, "logs", "-c", w.host, w.names[0]+"/app")
		return strings.Contains(out, "Bonjour")
	})
	if alive(made[0].pid) {
		t.Errorf("old workload %d still runs after update", made[0].pid)
	}
	made[0].pid = status(t, w.host).Tenants[0].Instances[0].Pid
	if h := stateHelper(made[0].stateDir); h != made[0].helper {
		t.Errorf("the update replaced the state helper %d with %d: it was not adopted", made[0].helper, h)
	}

	mustKigumi(t, "destroy", "-c", w.host, "--auto-approve")
	for _, m := range made {
		if _, err := user.Lookup(m.user); err == nil {
			t.Errorf("user %s still exists", m.user)
		}
		for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
			if data, _ := os.ReadFile(f); strings.Contains(string(data), m.user+":") {
				t.Errorf("%s still has a range for %s", f, m.user)
			}
		}
		// The tenant's state parent held the mount point, the backing
		// directory (.data) and the helper's (.run).
		for _, p := range append([]string{m.home, filepath.Dir(m.stateDir), m.runDir}, m.cgroups...) {
			if _, err := os.Lstat(p); err == nil {
				t.Errorf("%s still exists", p)
			}
		}
		if alive(m.pid) {
			t.Errorf("workload pid %d still runs", m.pid)
		}
		if alive(m.helper) {
			t.Errorf("state helper %d still runs", m.helper)
		}
		if n := stateMounts(t, m.stateDir); n != 0 {
			t.Errorf("%d state mounts left at %s", n, m.stateDir)
		}
	}
	if st := status(t, w.host); len(st.Tenants) != 0 {
		t.Errorf("status after destroy: %+v", st)
	}
}

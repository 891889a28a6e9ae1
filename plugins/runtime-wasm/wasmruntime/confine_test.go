package wasmruntime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// probeCommand makes the test binary a confinement probe (probeMain): it
// confines itself as a sandbox does, then tries what a sandbox must not.
const probeCommand = "__wasm-confine-probe"

// probeResult is what the probe prints: for each attempt, the errno it got
// ("" for success), and its GOMAXPROCS after joining the cgroups.
type probeResult struct {
	Attempts   map[string]string `json:"attempts"`
	GOMAXPROCS int               `json:"gomaxprocs"`
}

// probeMain joins the cgroup.procs files in args, drops to nobody, checks
// it has no capability left and loads the sandbox's seccomp filter, in the
// sandbox's order (linkModule), then tries forbidden syscalls.
func probeMain(args []string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := joinCgroups(args); err != nil {
		return fail(err)
	}
	if err := setMaxProcs(); err != nil {
		return fail(err)
	}
	if err := dropPrivileges(nobody, nobody); err != nil {
		return fail(err)
	}
	if err := checkNoCapabilities(); err != nil {
		return fail(err)
	}
	if err := loadFilter(); err != nil {
		return fail(err)
	}
	errno := func(err error) string {
		var e unix.Errno
		if errors.As(err, &e) {
			return unix.ErrnoName(e)
		}
		if err != nil {
			return err.Error()
		}
		return ""
	}
	res := probeResult{Attempts: map[string]string{}, GOMAXPROCS: runtime.GOMAXPROCS(0)}
	try := func(name string, err error) { res.Attempts[name] = errno(err) }
	try("mount", unix.Mount("none", "/tmp", "tmpfs", 0, ""))
	_, _, e := unix.RawSyscall(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0)
	try("ptrace", errnoOrNil(e))
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.Close(fd)
	}
	try("socket(AF_INET)", err)
	fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.Close(fd)
	}
	try("socket(AF_UNIX)", err)
	try("execve", unix.Exec("/bin/true", []string{"true"}, nil))
	try("kill(1)", unix.Kill(1, 0))
	try("kill(self)", unix.Kill(os.Getpid(), 0))
	try("setuid(0)", unix.Setresuid(0, 0, 0))
	try("ioctl(TIOCSTI)", unix.IoctlSetPointerInt(1, unix.TIOCSTI, 'x'))
	f, err := os.Create(filepath.Join(os.TempDir(), fmt.Sprintf("kigumi-probe-%d", os.Getpid())))
	if err == nil {
		_, err = f.WriteString("written")
		f.Close()
		os.Remove(f.Name())
	}
	try("write a file", err)
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return fail(err)
	}
	return 0
}

func errnoOrNil(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// newCPUCgroup creates a cgroup with a CPU quota of one CPU and returns its
// cgroup.procs file.
func newCPUCgroup(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("kigumi-wasmruntime-test-%d-%d", os.Getpid(), cgroupSeq.Add(1))
	root, files := "/sys/fs/cgroup/cpu", map[string]string{"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000"}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		root, files = "/sys/fs/cgroup", map[string]string{"cpu.max": "100000 100000"}
	}
	dir := filepath.Join(root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() { removeCgroup(t, dir) })
	for _, f := range []string{"cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.max"} {
		if v, ok := files[f]; ok {
			if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	return filepath.Join(dir, "cgroup.procs")
}

// TestConfinement starts the probe as Start starts a sandbox (spawn) and
// checks that the seccomp filter refuses what a sandbox must not do while
// it allows what it needs, and that GOMAXPROCS follows the CPU quota of
// the cgroup joined after the Go runtime started.
func TestConfinement(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Fatalf("needs 2 CPUs to tell a quota of 1 from the default, has %d", runtime.NumCPU())
	}
	r := New()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(exe, probeCommand, newCPUCgroup(t))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	d, err := r.spawn(cmd)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.waitGone(ctx, d); err != nil {
		t.Fatalf("wait for the probe: %v", err)
	}
	if cmd.ProcessState == nil || !cmd.ProcessState.Success() {
		t.Fatalf("probe: %v\n%s", cmd.ProcessState, stderr.Bytes())
	}
	var res probeResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("probe output %q: %v", stdout.Bytes(), err)
	}
	want := map[string]string{
		"mount":           "EPERM",
		"ptrace":          "EPERM",
		"socket(AF_INET)": "EPERM",
		"socket(AF_UNIX)": "EPERM",
		"execve":          "EPERM",
		"kill(1)":         "EPERM",
		"kill(self)":      "",
		"setuid(0)":       "EPERM",
		"ioctl(TIOCSTI)":  "EPERM",
		"write a file":    "",
	}
	for name, w := range want {
		if got, ok := res.Attempts[name]; !ok || got != w {
			t.Errorf("%s: got %q, want %q", name, got, w)
		}
	}
	if res.GOMAXPROCS != 1 {
		t.Errorf("GOMAXPROCS = %d under a quota of one CPU, want 1", res.GOMAXPROCS)
	}
}

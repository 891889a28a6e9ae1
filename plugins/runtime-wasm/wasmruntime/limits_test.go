package wasmruntime

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// endCase is how a test expects a sandbox to have ended.
type endCase struct {
	state    sdk.State
	cause    sdk.Cause
	exitCode int
	signal   int
	// message is a part of the status message.
	message string
}

// checkEnd fails t unless st is what want says, and Inspect keeps saying so.
func checkEnd(t *testing.T, r *Runtime, h sdk.Handle, st sdk.Status, want endCase) {
	t.Helper()
	// Times from JSON lose their monotonic reading.
	st.StartedAt, st.FinishedAt = st.StartedAt.Round(0), st.FinishedAt.Round(0)
	if st.State != want.state || st.Cause != want.cause || st.ExitCode != want.exitCode || st.Signal != want.signal || !strings.Contains(st.Message, want.message) {
		t.Errorf("status = %+v\nwant state %s, cause %s, exit code %d, signal %d, message with %q",
			st, want.state, want.cause, want.exitCode, want.signal, want.message)
	}
	again, err := r.Inspect(context.Background(), h)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	again.StartedAt, again.FinishedAt = again.StartedAt.Round(0), again.FinishedAt.Round(0)
	if again != st {
		t.Errorf("Inspect again = %+v, want the same %+v", again, st)
	}
}

// sandboxPid returns the pid of the handle's sandbox.
func sandboxPid(t *testing.T, h sdk.Handle) int {
	t.Helper()
	d, err := decodeHandle(h)
	if err != nil {
		t.Fatal(err)
	}
	return d.Pid
}

// memoryCgroup returns the directory of req's memory cgroup.
func memoryCgroup(t *testing.T, req *sdk.StartRequest) string {
	t.Helper()
	for _, p := range req.Cgroup.ProcsFiles {
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "memory.oom_control")); err == nil {
			return filepath.Dir(p)
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "memory.max")); err == nil {
			return filepath.Dir(p)
		}
	}
	t.Fatal("the test cgroup has no memory controller")
	return ""
}

// setMemoryLimit limits the memory cgroup dir to n bytes, swap included.
func setMemoryLimit(t *testing.T, dir string, n int64) {
	t.Helper()
	v := strconv.FormatInt(n, 10)
	files := []string{"memory.max", "memory.swap.max"}
	if _, err := os.Stat(filepath.Join(dir, "memory.oom_control")); err == nil {
		files = []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"}
	}
	if err := os.WriteFile(filepath.Join(dir, files[0]), []byte(v), 0o644); err != nil {
		t.Fatal(err)
	}
	if f := filepath.Join(dir, files[1]); fileExists(f) {
		if files[1] == "memory.swap.max" {
			v = "0"
		}
		if err := os.WriteFile(f, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestHowSandboxesEnd(t *testing.T) {
	tests := []struct {
		name   string
		module string
		args   []string
		env    map[string]string
		// memory is the wasm memory cap; 0 keeps request's.
		memory int64
		// kill is the signal sent to the sandbox from outside once it has
		// printed "started".
		kill syscall.Signal
		want endCase
	}{
		{name: "exit 0", module: "tiny",
			want: endCase{state: sdk.StateExited, cause: sdk.CauseExit}},
		{name: "exit 3", module: "echo", env: map[string]string{"EXIT": "3"},
			want: endCase{state: sdk.StateExited, cause: sdk.CauseExit, exitCode: 3, message: "exited with code 3; its memory was "}},
		{name: "trap", module: "trap",
			want: endCase{state: sdk.StateExited, cause: sdk.CauseTrap, exitCode: 1, message: "unreachable"}},
		{name: "past its wasm memory cap", module: "alloc", memory: 64 << 20,
			want: endCase{state: sdk.StateExited, cause: sdk.CauseExit, exitCode: 2, message: "of its limit of 64 MiB"}},
		{name: "SIGKILL from outside", module: "ticker", kill: syscall.SIGKILL,
			want: endCase{state: sdk.StateExited, cause: sdk.CauseSignal, exitCode: 137, signal: 9, message: "killed by SIGKILL, not by the runtime: the sandbox recorded no exit, and the OOM killer did not kill it"}},
		{name: "SIGTERM from outside", module: "ticker", kill: syscall.SIGTERM,
			want: endCase{state: sdk.StateExited, cause: sdk.CauseSignal, exitCode: 143, signal: 15, message: "killed by SIGTERM, not by the runtime"}},
		{name: "SIGHUP from outside", module: "ticker", kill: syscall.SIGHUP,
			want: endCase{state: sdk.StateExited, cause: sdk.CauseSignal, exitCode: 129, signal: 1, message: "killed by SIGHUP, not by the runtime"}},
		{name: "SIGQUIT from outside, which dumps", module: "ticker", kill: syscall.SIGQUIT,
			want: endCase{state: sdk.StateExited, cause: sdk.CauseSignal, exitCode: 2, signal: 3, message: "killed by SIGQUIT, not by the runtime"}},
		{name: "SIGUSR1 from outside, ignored", module: "ticker", kill: syscall.SIGUSR1, args: []string{"-ticks=1", "-interval=100ms"},
			want: endCase{state: sdk.StateExited, cause: sdk.CauseExit}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRuntime(t, nil)
			req := request(t, tt.module, sdk.PermClock)
			req.Instance.Tenant = "oo-ends"
			req.Args, req.Env = tt.args, tt.env
			if tt.memory != 0 {
				req.Resources.MemoryBytes = tt.memory
			}
			h := start(t, r, req)
			if tt.kill != 0 {
				awaitOutput(t, r, h, "started\n")
				if err := syscall.Kill(sandboxPid(t, h), tt.kill); err != nil {
					t.Fatal(err)
				}
			}
			checkEnd(t, r, h, waitEnded(t, r, h), tt.want)
		})
	}
}

func TestStopAfterARecordedSignal(t *testing.T) {
	// The sandbox records the SIGTERM that Stop sends as it dies; Stop's
	// own record replaces it.
	r := newRuntime(t, nil)
	req := request(t, "ticker", sdk.PermClock)
	req.Instance.Tenant = "oo-stop"
	h := start(t, r, req)
	awaitOutput(t, r, h, "started\n")
	if err := r.Stop(context.Background(), h, time.Minute); err != nil {
		t.Fatal(err)
	}
	st, err := r.Inspect(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	checkEnd(t, r, h, st, endCase{state: sdk.StateStopped, cause: sdk.CauseKilled, exitCode: 143, signal: 15, message: "stopped by SIGTERM"})
}

func TestOOMKill(t *testing.T) {
	r := newRuntime(t, nil)
	// The wasm cap is far above the cgroup's limit: the sandbox process
	// grows until the kernel's OOM killer kills it.
	req := request(t, "alloc")
	req.Instance.Tenant = "oo-kill"
	req.Resources.MemoryBytes = 2 << 30
	dir := memoryCgroup(t, req)
	setMemoryLimit(t, dir, 128<<20)
	h := start(t, r, req)
	checkEnd(t, r, h, waitEnded(t, r, h), endCase{
		state: sdk.StateExited, cause: sdk.CauseOOM, exitCode: 137, signal: 9,
		message: "killed by the kernel's OOM killer at its memory limit of 128 MiB",
	})
	if out := logs(t, r, h, sdk.Stdout); strings.Contains(out, "allocated 128 MiB") {
		t.Errorf("the sandbox got past its cgroup's limit:\n%s", out)
	}
	if err := r.Destroy(context.Background(), h); err != nil {
		t.Fatal(err)
	}

	// The next sandbox in the same cgroup is not blamed for that OOM kill.
	req.Artifact.Module, req.Permissions = modules["ticker"], sdk.Permissions{{Name: sdk.PermClock}}
	h = start(t, r, req)
	awaitOutput(t, r, h, "started\n")
	if err := syscall.Kill(sandboxPid(t, h), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	checkEnd(t, r, h, waitEnded(t, r, h), endCase{
		state: sdk.StateExited, cause: sdk.CauseSignal, exitCode: 137, signal: 9, message: "killed by SIGKILL, not by the runtime",
	})
}

func TestOOMKillAtTheParentLimit(t *testing.T) {
	// The instance's cgroup is inside its tenant's, whose limit is the
	// tighter: the message names it.
	r := newRuntime(t, nil)
	req := request(t, "alloc")
	req.Instance.Tenant = "oo-parent"
	req.Resources.MemoryBytes = 2 << 30
	parent := memoryCgroup(t, req)
	setMemoryLimit(t, parent, 96<<20)
	cg := sdk.Cgroup{Path: req.Cgroup.Path + "/web"}
	for _, p := range req.Cgroup.ProcsFiles {
		dir := filepath.Join(filepath.Dir(p), "web")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { removeCgroup(t, dir) })
		cg.ProcsFiles = append(cg.ProcsFiles, filepath.Join(dir, "cgroup.procs"))
	}
	req.Cgroup = cg
	setMemoryLimit(t, filepath.Join(parent, "web"), 512<<20)
	h := start(t, r, req)
	checkEnd(t, r, h, waitEnded(t, r, h), endCase{
		state: sdk.StateExited, cause: sdk.CauseOOM, exitCode: 137, signal: 9,
		message: "killed by the kernel's OOM killer at the memory limit of 96 MiB of its parent cgroup " + strings.TrimSuffix(cg.Path, "/web"),
	})
}

func TestLimitWatch(t *testing.T) {
	// Cgroup files as v1 and v2 write them, in a directory tree standing
	// for a hierarchy, so that both versions are checked on any host.
	tests := []struct {
		name string
		// files are the files of the hierarchy, by path below its root;
		// after are those that change once the sandbox ran.
		files, after map[string]string
		want         string
		oom          bool
	}{
		{
			name: "v1 OOM kill",
			files: map[string]string{
				"t/i/memory.oom_control":    "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
				"t/i/memory.limit_in_bytes": "67108864\n",
				"t/memory.limit_in_bytes":   "9223372036854771712\n",
			},
			after: map[string]string{"t/i/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"},
			want:  "killed by the kernel's OOM killer at its memory limit of 64 MiB", oom: true,
		},
		{
			name: "v2 OOM kill at the tenant's limit",
			files: map[string]string{
				"t/i/memory.events":  "low 0\nhigh 0\nmax 5\noom 1\noom_kill 0\noom_group_kill 0\n",
				"t/i/memory.max":     "max\n",
				"t/memory.max":       "33554432\n",
				"t/i/pids.events":    "max 0\n",
				"memory.max":         "1048576\n", // above the hierarchy root: not the instance's
				"t/i/cgroup.procs":   "",
				"t/i/cgroup.subtree": "",
			},
			after: map[string]string{"t/i/memory.events": "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n"},
			want:  "killed by the kernel's OOM killer at the memory limit of 32 MiB of its parent cgroup /t", oom: true,
		},
		{
			name: "v2 pids limit",
			files: map[string]string{
				"t/i/memory.events": "oom_kill 4\n",
				"t/i/pids.events":   "max 0\n",
				"t/i/pids.max":      "max\n",
				"t/pids.max":        "64\n",
			},
			after: map[string]string{"t/i/pids.events": "max 1\n"},
			want:  "the sandbox could not start a thread, at the limit of 64 processes and threads of its parent cgroup /t",
		},
		{
			name: "v1 OOM kill without a limit",
			files: map[string]string{
				"t/i/memory.oom_control":    "oom_kill 0\n",
				"t/i/memory.limit_in_bytes": "9223372036854771712\n",
			},
			after: map[string]string{"t/i/memory.oom_control": "oom_kill 1\n"},
			want:  "killed by the kernel's OOM killer, with no memory limit on its cgroup: the host ran out of memory", oom: true,
		},
		{
			name: "an earlier OOM kill only",
			files: map[string]string{
				"t/i/memory.oom_control": "oom_kill 7\n",
				"t/i/pids.events":        "max 3\n",
			},
		},
		{
			name:  "a kernel that counts no OOM kills",
			files: map[string]string{"t/i/memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			write := func(files map[string]string) {
				for p, content := range files {
					p = filepath.Join(root, p)
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			write(tt.files)
			w, err := watchLimits("/t/i", []string{filepath.Join(root, "t/i/cgroup.procs")})
			if err != nil {
				t.Fatal(err)
			}
			write(tt.after)
			end, ok := w.ended()
			if ok != (tt.want != "") || end.message != tt.want || end.oom != tt.oom {
				t.Errorf("ended() = %+v, %v; want %q (oom %v)", end, ok, tt.want, tt.oom)
			}
		})
	}
}

func TestLimitWatchBadCounter(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "memory.events"), []byte("oom_kill lots\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := watchLimits("/", []string{filepath.Join(dir, "cgroup.procs")}); err == nil || !strings.Contains(err.Error(), "oom_kill") {
		t.Errorf("watchLimits = %v, want an error naming oom_kill", err)
	}
}

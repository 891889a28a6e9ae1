package wasmruntime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/sdktest"
)

func TestInfo(t *testing.T) {
	info, err := New().Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, a := range info.Schema.Attributes {
		names = append(names, a.Name)
	}
	if info.Name != "wasm" || info.Kind != sdk.KindRuntime || !slices.Equal(names, []string{"compiler", "max_module_size", "compile_timeout", "compile_memory", "time_budget", "max_time_budget"}) {
		t.Errorf("Info = %+v", info)
	}
}

func TestConfigure(t *testing.T) {
	tests := []struct {
		name     string
		settings sdk.Config
		wantAttr string // "" for success
	}{
		{"defaults", nil, ""},
		{"compiler", sdk.Config{"compiler": "compiler"}, ""},
		{"interpreter", sdk.Config{"compiler": "interpreter"}, ""},
		{"unknown engine", sdk.Config{"compiler": "jit"}, "compiler"},
		{"engine not a string", sdk.Config{"compiler": 1.0}, "compiler"},
		{"module size", sdk.Config{"max_module_size": "1MiB"}, ""},
		{"bad module size", sdk.Config{"max_module_size": "lots"}, "max_module_size"},
		{"zero module size", sdk.Config{"max_module_size": "0B"}, "max_module_size"},
		{"huge module size", sdk.Config{"max_module_size": "5GiB"}, "max_module_size"},
		{"compile timeout", sdk.Config{"compile_timeout": "30s"}, ""},
		{"bad compile timeout", sdk.Config{"compile_timeout": "soon"}, "compile_timeout"},
		{"zero compile timeout", sdk.Config{"compile_timeout": "0s"}, "compile_timeout"},
		{"compile timeout not a string", sdk.Config{"compile_timeout": 10.0}, "compile_timeout"},
		{"compile memory", sdk.Config{"compile_memory": "1GiB"}, ""},
		{"bad compile memory", sdk.Config{"compile_memory": "lots"}, "compile_memory"},
		{"tiny compile memory", sdk.Config{"compile_memory": "1KiB"}, "compile_memory"},
		{"time budget", sdk.Config{"time_budget": "30s"}, ""},
		{"time budget under its max", sdk.Config{"time_budget": "30s", "max_time_budget": "1m"}, ""},
		{"time budget at its max", sdk.Config{"time_budget": "1m", "max_time_budget": "1m"}, ""},
		{"time budget over its max", sdk.Config{"time_budget": "1m1s", "max_time_budget": "1m"}, "time_budget"},
		{"bad time budget", sdk.Config{"time_budget": "soon"}, "time_budget"},
		{"zero time budget", sdk.Config{"time_budget": "0s"}, "time_budget"},
		{"negative time budget", sdk.Config{"time_budget": "-1s"}, "time_budget"},
		{"time budget not a string", sdk.Config{"time_budget": 30.0}, "time_budget"},
		{"bad max time budget", sdk.Config{"max_time_budget": "forever"}, "max_time_budget"},
		{"zero max time budget", sdk.Config{"max_time_budget": "0"}, "max_time_budget"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := New().Configure(context.Background(), sdk.ConfigureRequest{Settings: tt.settings, DataDir: dataDir})
			var e *sdk.Error
			switch {
			case tt.wantAttr == "" && err != nil:
				t.Fatalf("Configure: %v", err)
			case tt.wantAttr != "" && (!errors.As(err, &e) || e.Code != sdk.CodeInvalid || e.Attribute != tt.wantAttr):
				t.Fatalf("Configure = %v, want an invalid %s", err, tt.wantAttr)
			}
		})
	}
}

func TestCompilationCache(t *testing.T) {
	r := newRuntime(t, nil)
	if st, _ := run(t, r, request(t, "tiny")); st.State != sdk.StateExited || st.ExitCode != 0 {
		t.Fatalf("status = %+v", st)
	}
	entries := 0
	// The sandboxes read the cache while still root: tenants get nothing,
	// of the cache, of which instance runs what, or of the prune lock.
	for _, p := range []string{filepath.Join(r.dataDir, instancesDirName), filepath.Join(r.dataDir, pruneLockName)} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: %v %v", p, fi, err)
		}
	}
	err := filepath.WalkDir(r.cacheDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		if !e.IsDir() {
			entries++
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v: group or others may use it", p, fi.Mode())
		}
		return nil
	})
	if err != nil || entries == 0 {
		t.Fatalf("cache has %d entries (%v)", entries, err)
	}
}

func TestPrivateDataDir(t *testing.T) {
	// Tenants can't traverse this DataDir (0700, under a 0700 parent): the
	// sandbox compiles and jails itself while still root, so it runs.
	r := New()
	err := r.Configure(context.Background(), sdk.ConfigureRequest{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if st, out := run(t, r, request(t, "echo")); st.State != sdk.StateExited || st.ExitCode != 0 || lineWith(out, "arg: ") != "arg: echo" {
		t.Errorf("status = %+v, stdout %q", st, out)
	}
}

// procStatus returns the fields of a /proc/<pid>/status line.
func procStatus(t *testing.T, pid int, key string) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		if k, v, _ := strings.Cut(l, ":"); k == key {
			return strings.Fields(v)
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, key)
	return nil
}

func TestSandboxIsolation(t *testing.T) {
	r := newRuntime(t, nil)
	req := request(t, "ticker", sdk.PermClock)
	h := start(t, r, req)
	d, err := decodeHandle(h)
	if err != nil {
		t.Fatal(err)
	}
	awaitOutput(t, r, h, "started\n")
	for _, p := range req.Cgroup.ProcsFiles {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(strings.Fields(string(b)), strconv.Itoa(d.Pid)) {
			t.Errorf("%s = %q, want sandbox pid %d", p, b, d.Pid)
		}
	}
	id := strconv.Itoa(nobody)
	var bnd uint64
	for _, c := range sandboxCaps {
		bnd |= 1 << c
	}
	for key, want := range map[string][]string{
		"Uid":        {id, id, id, id},
		"Gid":        {id, id, id, id},
		"Groups":     {id},
		"NoNewPrivs": {"1"},
		"Seccomp":    {"2"}, // a filter
		"CapEff":     {"0000000000000000"},
		"CapPrm":     {"0000000000000000"},
		"CapInh":     {"0000000000000000"},
		"CapAmb":     {"0000000000000000"},
		"CapBnd":     {fmt.Sprintf("%016x", bnd)},
	} {
		if got := procStatus(t, d.Pid, key); !slices.Equal(got, want) {
			t.Errorf("%s = %v, want %v", key, got, want)
		}
	}
	if sid, err := unix.Getsid(d.Pid); err != nil || sid != d.Pid {
		t.Errorf("session = %d (%v), want its own (%d)", sid, err, d.Pid)
	}
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", d.Pid)); err != nil || string(env) != "TZ=UTC\x00" {
		t.Errorf("sandbox environment = %q (%v), want only TZ=UTC", env, err)
	}
	// Without state, the sandbox is jailed in the runtime's empty directory.
	if root, err := os.Readlink(fmt.Sprintf("/proc/%d/root", d.Pid)); err != nil || root != r.emptyDir {
		t.Errorf("sandbox root = %q (%v), want %s", root, err, r.emptyDir)
	}

	ctx := context.Background()
	for range 2 { // Stop is idempotent
		if err := r.Stop(ctx, h, 5*time.Second); err != nil {
			t.Fatalf("Stop: %v", err)
		}
	}
	st, err := r.Inspect(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != sdk.StateStopped || st.ExitCode != 128+int(syscall.SIGTERM) || st.Cause != sdk.CauseKilled || st.Signal != int(syscall.SIGTERM) {
		t.Errorf("status after Stop = %+v", st)
	}
	// Gone, and reaped: no zombie is left.
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", d.Pid)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("sandbox %d still exists after Stop (%v)", d.Pid, err)
	}
	if got := logs(t, r, h, sdk.Stdout); got != "started\n" {
		t.Errorf("stdout = %q", got)
	}
}

func TestArgsEnvAndExitCode(t *testing.T) {
	sum := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		return "sha256:" + hex.EncodeToString(s[:])
	}
	tests := []struct {
		name     string
		settings sdk.Config
		env      map[string]string
		digest   bool
		wantExit int
	}{
		{"args and env", nil, map[string]string{"GREETING": "hello", "EMPTY": ""}, false, 0},
		{"exit code", nil, map[string]string{"EXIT": "3"}, false, 3},
		{"pinned digest", nil, nil, true, 0},
		{"interpreter", sdk.Config{"compiler": "interpreter"}, map[string]string{"EXIT": "5"}, false, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRuntime(t, tt.settings)
			req := request(t, "echo")
			req.Args = []string{"--flag", "two words"}
			req.Env = tt.env
			if tt.digest {
				req.Artifact.Digest = sum(req.Artifact.Module)
			}
			h := start(t, r, req)
			st := waitEnded(t, r, h)
			if st.State != sdk.StateExited || st.ExitCode != tt.wantExit {
				t.Errorf("status = %+v, want exited with %d", st, tt.wantExit)
			}
			out := logs(t, r, h, sdk.Stdout)
			var args, env []string
			for l := range strings.Lines(out) {
				if a, ok := strings.CutPrefix(l, "arg: "); ok {
					args = append(args, strings.TrimSuffix(a, "\n"))
				}
				if e, ok := strings.CutPrefix(l, "env: "); ok {
					env = append(env, strings.TrimSuffix(e, "\n"))
				}
			}
			var wantEnv []string
			for k, v := range tt.env {
				wantEnv = append(wantEnv, k+"="+v)
			}
			slices.Sort(wantEnv)
			if want := []string{"echo", "--flag", "two words"}; !slices.Equal(args, want) {
				t.Errorf("args = %q, want %q", args, want)
			}
			if !slices.Equal(env, wantEnv) {
				t.Errorf("env = %q, want %q (and never %s)", env, wantEnv, hostOnlyEnv)
			}
			if got := logs(t, r, h, sdk.Stderr); got != "to stderr\n" {
				t.Errorf("stderr = %q", got)
			}
		})
	}
}

func TestClockAndRandomPermissions(t *testing.T) {
	const fakeEpoch = "time: 1640995200" // wazero's fake walltime
	tests := []struct {
		perms              []string
		fakeClock, sameRnd bool
	}{
		{nil, true, true},
		{[]string{sdk.PermClock}, false, true},
		{[]string{sdk.PermRandom}, true, false},
		{[]string{sdk.PermClock, sdk.PermRandom}, false, false},
	}
	r := newRuntime(t, nil)
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.perms), func(t *testing.T) {
			var rnd []string
			for range 2 {
				st, out := run(t, r, request(t, "echo", tt.perms...))
				if st.ExitCode != 0 {
					t.Fatalf("status = %+v", st)
				}
				rnd = append(rnd, lineWith(out, "rand: "))
				clock := lineWith(out, "time: ")
				sec, err := strconv.ParseInt(strings.TrimPrefix(clock, "time: "), 10, 64)
				if err != nil {
					t.Fatalf("output %q: %v", out, err)
				}
				isReal := time.Since(time.Unix(sec, 0)).Abs() < 24*time.Hour
				if (clock == fakeEpoch) != tt.fakeClock || isReal == tt.fakeClock {
					t.Errorf("%q: want fake clock %v", clock, tt.fakeClock)
				}
			}
			if (rnd[0] == rnd[1]) != tt.sameRnd || rnd[0] == "" {
				t.Errorf("random lines %q: want the same %v", rnd, tt.sameRnd)
			}
		})
	}
}

func TestStateAccess(t *testing.T) {
	tests := []struct {
		name     string
		perms    []string
		args     []string
		wantExit int // how many operations succeeded
		wantNew  bool
	}{
		{"write grant", []string{sdk.PermStateWrite}, []string{"read:/state/seed", "write:/state/new"}, 2, true},
		{"read grant", []string{sdk.PermStateRead}, []string{"read:/state/seed", "write:/state/new"}, 1, false},
		{"no grant", nil, []string{"read:/state/seed", "write:/state/new"}, 0, false},
		{"escapes", []string{sdk.PermStateWrite}, []string{
			"read:/etc/passwd", "read:/state/../etc/passwd", "read:../etc/passwd",
			"read:/state/../../../../etc/passwd", "write:/tmp/escaped",
		}, 0, false},
		// The relative symlink is made (1 success; wazero refuses absolute
		// targets), but leads nowhere outside the state: the sandbox is
		// jailed in it.
		{"symlink escapes", []string{sdk.PermStateWrite}, []string{
			"symlink:../../../../../../../..=/state/up", "read:/state/up/etc/passwd", "write:/state/up/tmp/escaped",
			"symlink:/etc=/state/abs", "read:/state/abs/passwd",
		}, 1, false},
	}
	r := newRuntime(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(t, "fsprobe", tt.perms...)
			state := stateDir(t)
			req.Mounts = stateMount(state)
			req.Args = tt.args
			st, out := run(t, r, req)
			if st.State != sdk.StateExited || st.ExitCode != tt.wantExit {
				t.Errorf("status = %+v, want %d successes; output:\n%s", st, tt.wantExit, out)
			}
			fi, err := os.Stat(filepath.Join(state, "new"))
			switch {
			case tt.wantNew && err != nil:
				t.Errorf("state file not written: %v", err)
			case tt.wantNew && fi.Sys().(*syscall.Stat_t).Uid != nobody:
				t.Errorf("state file owned by %d, want %d", fi.Sys().(*syscall.Stat_t).Uid, nobody)
			case !tt.wantNew && err == nil:
				t.Error("state file written without the grant")
			}
		})
	}
}

func TestMemoryLimit(t *testing.T) {
	r := newRuntime(t, nil)
	req := request(t, "alloc")
	req.Resources.MemoryBytes = 64 << 20
	h := start(t, r, req)
	st := waitEnded(t, r, h)
	if st.State != sdk.StateExited || st.ExitCode == 0 {
		t.Errorf("status = %+v, want a failure", st)
	}
	if out := logs(t, r, h, sdk.Stdout); strings.Contains(out, "allocated 128 MiB") {
		t.Errorf("module allocated past its cap:\n%s", out)
	}
}

// awaitOutput follows the instance's stdout until it has printed want.
func awaitOutput(t *testing.T, r *Runtime, h sdk.Handle, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := r.Logs(ctx, h, sdk.LogOptions{Follow: true}, func(b []byte) error {
		if out.Write(b); out.String() == want {
			cancel()
		}
		return nil
	})
	if out.String() != want {
		t.Fatalf("stdout = %q (%v), want %q", out.String(), err, want)
	}
}

// sandboxes returns the pids of running sandboxes of this test binary.
func sandboxes(t *testing.T) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte(exe + "\x00" + SandboxCommand + "\x00")
	var pids []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil && bytes.Equal(b, want) {
			pids = append(pids, filepath.Base(dir))
		}
	}
	return pids
}

func TestStartFailures(t *testing.T) {
	tests := []struct {
		name     string
		settings sdk.Config
		module   string
		edit     func(*sdk.StartRequest)
		// existingRunDir makes the RunDir before Start: it must be left empty.
		existingRunDir bool
	}{
		{name: "not wasm", module: "garbage"},
		{name: "missing import", module: "missing-import"},
		{name: "missing import, existing run dir", module: "missing-import", existingRunDir: true},
		{name: "no _start", module: "empty"},
		{name: "digest mismatch", module: "tiny", edit: func(r *sdk.StartRequest) {
			r.Artifact.Digest = "sha256:" + strings.Repeat("0", 64)
		}},
		{name: "unsupported digest", module: "tiny", edit: func(r *sdk.StartRequest) { r.Artifact.Digest = "md5:00" }},
		{name: "module too large", module: "echo", settings: sdk.Config{"max_module_size": "1KiB"}},
		{name: "missing module", module: "tiny", edit: func(r *sdk.StartRequest) { r.Artifact.Module = "/nonexistent.wasm" }},
		{name: "relative module path", module: "tiny", edit: func(r *sdk.StartRequest) { r.Artifact.Module = "tiny.wasm" }},
		{name: "module is a directory", module: "tiny", edit: func(r *sdk.StartRequest) { r.Artifact.Module = "/" }},
		{name: "root user", module: "tiny", edit: func(r *sdk.StartRequest) { r.User = sdk.User{Name: "root"} }},
		{name: "memory under module minimum", module: "echo", edit: func(r *sdk.StartRequest) { r.Resources.MemoryBytes = 1 << 20 }},
		{name: "memory under a page", module: "tiny", edit: func(r *sdk.StartRequest) { r.Resources.MemoryBytes = 100 }},
		{name: "unknown permission", module: "tiny", edit: func(r *sdk.StartRequest) { r.Permissions = sdk.Permissions{{Name: "network"}} }},
		{name: "state without dir", module: "tiny", edit: func(r *sdk.StartRequest) { r.Permissions = sdk.Permissions{{Name: sdk.PermStateRead}} }},
		{name: "permission with parameters", module: "tiny", edit: func(r *sdk.StartRequest) {
			r.Permissions = sdk.Permissions{{Name: sdk.PermClock, Params: map[string]string{"fake": "1"}}}
		}},
		{name: "mount elsewhere", module: "tiny", edit: func(r *sdk.StartRequest) { r.Mounts = []sdk.Mount{{Source: "/", Target: "/host"}} }},
		{name: "two state mounts", module: "tiny", edit: func(r *sdk.StartRequest) { r.Mounts = append(stateMount("/a"), stateMount("/b")...) }},
		{name: "relative state mount", module: "tiny", edit: func(r *sdk.StartRequest) {
			r.Permissions, r.Mounts = sdk.Permissions{{Name: sdk.PermStateRead}}, stateMount("state")
		}},
		{name: "settings", module: "tiny", edit: func(r *sdk.StartRequest) { r.Settings = sdk.Config{"entrypoint": "main"} }},
		{name: "module and image", module: "tiny", edit: func(r *sdk.StartRequest) { r.Artifact.Image = "busybox" }},
		{name: "bad image reference", module: "tiny", edit: func(r *sdk.StartRequest) { r.Artifact.Module, r.Artifact.Image = "", "Bad//Ref" }},
		{name: "no instance name", module: "tiny", edit: func(r *sdk.StartRequest) { r.Instance.Name = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRuntime(t, tt.settings)
			req := request(t, tt.module)
			if tt.edit != nil {
				tt.edit(req)
			}
			if tt.existingRunDir {
				if err := os.Mkdir(req.RunDir, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			_, err := r.Start(context.Background(), req)
			if !errors.Is(err, sdk.ErrInvalid) {
				t.Fatalf("Start = %v, want CodeInvalid", err)
			}
			t.Log(err)
			entries, derr := os.ReadDir(req.RunDir)
			if tt.existingRunDir && (derr != nil || len(entries) != 0) {
				t.Errorf("run dir holds %v (%v), want it empty", entries, derr)
			}
			if !tt.existingRunDir && !errors.Is(derr, fs.ErrNotExist) {
				t.Errorf("run dir left behind: %v", entries)
			}
			r.mu.Lock()
			children := len(r.children)
			r.mu.Unlock()
			if pids := sandboxes(t); len(pids) != 0 || children != 0 {
				t.Errorf("sandboxes left behind: %v, %d children", pids, children)
			}
		})
	}
}

func TestRecoverAndDestroy(t *testing.T) {
	ctx := context.Background()
	r := newRuntime(t, nil)
	req := request(t, "ticker", sdk.PermClock)
	h, err := r.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := decodeHandle(h)

	// A fresh Runtime stands for a restarted plugin.
	fresh := newRuntime(t, nil)
	for range 2 {
		got, err := fresh.Recover(ctx, h)
		if err != nil || got.Version != h.Version || !bytes.Equal(got.Data, h.Data) {
			t.Fatalf("Recover = %v, %v; want the same handle", got, err)
		}
	}
	if st, err := fresh.Inspect(ctx, h); err != nil || st.State != sdk.StateRunning || st.Pid != d.Pid {
		t.Fatalf("Inspect = %+v, %v; want running", st, err)
	}
	for range 2 {
		if err := fresh.Destroy(ctx, h); err != nil {
			t.Fatalf("Destroy: %v", err)
		}
	}
	if _, err := os.Stat(req.RunDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("run dir left after Destroy: %v", err)
	}
	// The original runtime reaps its child.
	if err := r.Stop(ctx, h, time.Second); err != nil {
		t.Errorf("Stop after Destroy: %v", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", d.Pid)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("sandbox %d left after Destroy", d.Pid)
	}
	for _, rt := range []*Runtime{r, fresh} {
		if _, err := rt.Recover(ctx, h); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("Recover after Destroy = %v, want NotFound", err)
		}
		if _, err := rt.Inspect(ctx, h); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("Inspect after Destroy = %v, want NotFound", err)
		}
		if err := rt.Logs(ctx, h, sdk.LogOptions{}, func([]byte) error { return nil }); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("Logs after Destroy = %v, want NotFound", err)
		}
	}
}

func TestBadHandles(t *testing.T) {
	ctx := context.Background()
	r := New()
	handles := map[string]sdk.Handle{
		"unknown version": {Version: 2, Data: []byte(`{"pid":1,"run_dir":"/nonexistent-kigumi-test"}`)},
		"not json":        {Version: handleVersion, Data: []byte("{")},
		"no pid":          {Version: handleVersion, Data: []byte(`{"run_dir":"/nonexistent-kigumi-test"}`)},
		"relative dir":    {Version: handleVersion, Data: []byte(`{"pid":1,"run_dir":"tmp"}`)},
	}
	for name, h := range handles {
		t.Run(name, func(t *testing.T) {
			_, ierr := r.Inspect(ctx, h)
			_, rerr := r.Recover(ctx, h)
			for op, err := range map[string]error{
				"Inspect": ierr,
				"Recover": rerr,
				"Stop":    r.Stop(ctx, h, 0),
				"Destroy": r.Destroy(ctx, h),
				"Logs":    r.Logs(ctx, h, sdk.LogOptions{}, func([]byte) error { return nil }),
			} {
				if !errors.Is(err, sdk.ErrInvalid) {
					t.Errorf("%s = %v, want CodeInvalid", op, err)
				}
			}
		})
	}
}

func TestLogs(t *testing.T) {
	ticks := []string{"-ticks", "3", "-interval", "10ms"}
	tests := []struct {
		name   string
		module string
		args   []string
		opts   sdk.LogOptions
		// ended waits for the instance to end before reading.
		ended bool
		// cancel cancels the context once the first chunk arrives.
		cancel  bool
		want    string
		wantErr error
	}{
		{name: "stdout", module: "ticker", args: ticks, ended: true, want: "started\ntick 1\ntick 2\ntick 3\n"},
		{name: "follow", module: "ticker", args: ticks, opts: sdk.LogOptions{Follow: true}, want: "started\ntick 1\ntick 2\ntick 3\n"},
		{name: "stderr", module: "echo", opts: sdk.LogOptions{Stream: sdk.Stderr}, ended: true, want: "to stderr\n"},
		{name: "follow cancelled", module: "ticker", opts: sdk.LogOptions{Follow: true}, cancel: true, want: "started\n", wantErr: context.Canceled},
		{name: "unknown stream", module: "echo", opts: sdk.LogOptions{Stream: "stdin"}, wantErr: sdk.ErrInvalid},
	}
	r := newRuntime(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(t, tt.module, sdk.PermClock)
			req.Args = tt.args
			h := start(t, r, req)
			if tt.ended {
				waitEnded(t, r, h)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var out bytes.Buffer
			err := r.Logs(ctx, h, tt.opts, func(b []byte) error {
				out.Write(b)
				if tt.cancel {
					cancel()
				}
				return nil
			})
			if !errors.Is(err, tt.wantErr) || out.String() != tt.want {
				t.Errorf("Logs = %q, %v; want %q, %v", out.String(), err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestQuickstartApp(t *testing.T) {
	r := newRuntime(t, nil)
	state := stateDir(t)
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--ticks", "1", "--interval", "1ms"}, nil, "Hello from app!\nrun 1\nheartbeat 1: counter 2\n"},
		{[]string{"--name", "alice/web", "--ticks", "2", "--interval", "1ms"}, map[string]string{"GREETING": "Hi"},
			"Hi from alice/web!\nrun 3\nheartbeat 1: counter 4\nheartbeat 2: counter 5\n"},
		{[]string{"--ticks", "1", "--interval", "1ms"}, nil, "Hello from app!\nrun 6\nheartbeat 1: counter 7\n"},
	}
	for _, tt := range tests {
		req := request(t, "app", sdk.PermStateWrite, sdk.PermClock)
		req.Mounts, req.Args, req.Env = []sdk.Mount{{Source: state, Target: "/", Type: sdk.MountDir, State: true}}, tt.args, tt.env
		st, out := run(t, r, req)
		if st.State != sdk.StateExited || st.ExitCode != 0 || out != tt.want {
			t.Fatalf("app %q: %+v, stdout %q; want %q", tt.args, st, out, tt.want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(state, "counter")); err != nil || string(b) != "7\n" {
		t.Errorf("counter = %q (%v), want 7", b, err)
	}
}

func TestOverGRPC(t *testing.T) {
	ctx := context.Background()
	rt := sdktest.Runtime(t, New())
	if err := rt.Configure(ctx, sdk.ConfigureRequest{Settings: sdk.Config{"compiler": "jit"}}); !errors.Is(err, sdk.ErrInvalid) {
		t.Errorf("Configure = %v, want CodeInvalid", err)
	}
	if err := rt.Configure(ctx, sdk.ConfigureRequest{DataDir: dataDir}); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Start(ctx, request(t, "missing-import")); !errors.Is(err, sdk.ErrInvalid) {
		t.Errorf("Start of a bad module = %v, want CodeInvalid", err)
	}
	req := request(t, "echo")
	req.Env = map[string]string{"EXIT": "3"}
	h, err := rt.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = rt.Logs(ctx, h, sdk.LogOptions{Stream: sdk.Stderr, Follow: true}, func(b []byte) error {
		out.Write(b)
		return nil
	})
	if err != nil || out.String() != "to stderr\n" {
		t.Errorf("Logs = %q, %v", out.String(), err)
	}
	if st, err := rt.Inspect(ctx, h); err != nil || st.State != sdk.StateExited || st.ExitCode != 3 {
		t.Errorf("Inspect = %+v, %v; want exited with 3", st, err)
	}
	if err := rt.Destroy(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Recover(ctx, h); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("Recover after Destroy = %v, want NotFound", err)
	}
}

// TestArchiveRefused: an image archive is refused by Validate and Start,
// naming the archive attribute and saying what to do instead.
func TestArchiveRefused(t *testing.T) {
	r := newRuntime(t, nil)
	for name, call := range map[string]func(*sdk.StartRequest) error{
		"validate": func(req *sdk.StartRequest) error { return r.Validate(context.Background(), req) },
		"start": func(req *sdk.StartRequest) error {
			_, err := r.Start(context.Background(), req)
			return err
		},
	} {
		req := request(t, "tiny")
		req.Artifact = sdk.Artifact{Archive: "/srv/artifacts/app.tar"}
		err := call(req)
		var e *sdk.Error
		if !errors.As(err, &e) || e.Code != sdk.CodeInvalid || e.Attribute != "archive" || !strings.Contains(e.Message, "push /srv/artifacts/app.tar to a registry") {
			t.Errorf("%s = %v, want an invalid archive", name, err)
		}
	}
}

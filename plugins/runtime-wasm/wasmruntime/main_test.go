package wasmruntime

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// nobody is the user and group the tests run workloads as.
const nobody = 65534

// hostOnlyEnv is set in the test process and must never reach a workload.
const hostOnlyEnv = "KIGUMI_TEST_HOST_ONLY"

var (
	// modules maps a program under testdata to its built module's path.
	modules = map[string]string{}
	// dataDir is the runtimes' DataDir, shared so the compilation cache is.
	dataDir string
)

// Hand-assembled modules, too small to need a toolchain.
var (
	// tinyModule exports an empty _start and one page of memory.
	tinyModule = []byte{
		0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
		0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: func() -> ()
		0x03, 0x02, 0x01, 0x00, // function 0 has type 0
		0x05, 0x03, 0x01, 0x00, 0x01, // memory: min 1 page
		0x07, 0x0a, 0x01, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x00, // export _start
		0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code: empty body
	}
	// missingImportModule imports env.foo, which nothing provides.
	missingImportModule = []byte{
		0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
		0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
		0x02, 0x0b, 0x01, 0x03, 'e', 'n', 'v', 0x03, 'f', 'o', 'o', 0x00, 0x00, // import env.foo
		0x03, 0x02, 0x01, 0x00,
		0x07, 0x0a, 0x01, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x01,
		0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
	}
	// trapModule's _start traps at once (unreachable).
	trapModule = []byte{
		0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
		0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
		0x03, 0x02, 0x01, 0x00,
		0x07, 0x0a, 0x01, 0x06, '_', 's', 't', 'a', 'r', 't', 0x00, 0x00,
		0x0a, 0x05, 0x01, 0x03, 0x00, 0x00, 0x0b, // code: unreachable
	}
	// emptyModule is valid but exports no _start.
	emptyModule = []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == SandboxCommand {
		os.Exit(SandboxMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == probeCommand {
		os.Exit(probeMain(os.Args[2:]))
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "wasmruntime-test-")
	if err == nil {
		defer os.RemoveAll(dir)
		err = os.Chmod(dir, 0o755)
	}
	if err == nil {
		err = buildModules(filepath.Join(dir, "modules"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dataDir = filepath.Join(dir, "data")
	if err := os.Mkdir(dataDir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Setenv(hostOnlyEnv, "secret")
	return m.Run()
}

// The examples' workloads, tested here on the runtime: the quickstart's
// app, and wasm-drop's (as "app-drop").
const (
	quickstartApp = "../../../examples/quickstart/app/main.go"
	dropApp       = "../../../examples/wasm-drop/app/main.go"
)

// buildModules builds every program under testdata, and the quickstart app,
// into dir as WASI modules, and writes the hand-assembled ones there too.
func buildModules(dir string) error {
	progs, err := filepath.Glob("testdata/*/main.go")
	if err != nil {
		return err
	}
	progs = append(progs, quickstartApp)
	args := []string{"build", "-o", dir + "/"}
	for _, p := range progs {
		args = append(args, "./"+filepath.Dir(p))
	}
	// Two packages named app: the second is built on its own.
	for _, a := range [][]string{args, {"build", "-o", filepath.Join(dir, "app-drop"), "./" + filepath.Dir(dropApp)}} {
		cmd := exec.Command("go", a...)
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build test modules: %v\n%s", err, out)
		}
	}
	modules["app-drop"] = filepath.Join(dir, "app-drop")
	for _, p := range progs {
		name := filepath.Base(filepath.Dir(p))
		modules[name] = filepath.Join(dir, name)
	}
	for name, bin := range map[string][]byte{
		"tiny": tinyModule, "trap": trapModule, "missing-import": missingImportModule, "empty": emptyModule, "garbage": []byte("not wasm"),
	} {
		modules[name] = filepath.Join(dir, name+".wasm")
		if err := os.WriteFile(modules[name], bin, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// newRuntime returns a configured Runtime.
func newRuntime(t testing.TB, settings sdk.Config) *Runtime {
	t.Helper()
	r := New()
	if err := r.Configure(context.Background(), sdk.ConfigureRequest{Host: "test", Settings: settings, DataDir: dataDir}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return r
}

// stateDir returns a state directory owned by nobody, holding a file "seed".
func stateDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	// t.TempDir's parent is 0700: let nobody through to the state dir.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(dir, "state")
	seed := filepath.Join(state, "seed")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seed, []byte("seed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{state, seed} {
		if err := os.Chown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	return state
}

var cgroupSeq atomic.Int64

// newCgroup creates a cgroup for one test: one per v1 hierarchy the tests
// use, or one in the v2 hierarchy.
func newCgroup(t testing.TB) sdk.Cgroup {
	t.Helper()
	name := fmt.Sprintf("kigumi-wasmruntime-test-%d-%d", os.Getpid(), cgroupSeq.Add(1))
	roots := []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory"}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		roots = []string{"/sys/fs/cgroup"}
	}
	cg := sdk.Cgroup{Path: "/" + name}
	for _, root := range roots {
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("create cgroup: %v", err)
		}
		t.Cleanup(func() { removeCgroup(t, dir) })
		cg.ProcsFiles = append(cg.ProcsFiles, filepath.Join(dir, "cgroup.procs"))
	}
	return cg
}

// removeCgroup removes a test cgroup, waiting for its last process to leave.
func removeCgroup(t testing.TB, dir string) {
	var err error
	for range 100 {
		if err = os.Remove(dir); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("remove cgroup: %v", err)
}

// request returns a StartRequest running module as nobody in a fresh
// cgroup and RunDir.
func request(t testing.TB, module string, perms ...string) *sdk.StartRequest {
	t.Helper()
	granted := sdk.Permissions{}
	for _, p := range perms {
		granted = append(granted, sdk.Permission{Name: p})
	}
	return &sdk.StartRequest{
		Instance:    sdk.Instance{Tenant: "alice", Name: "web"},
		User:        sdk.User{Name: "nobody", UID: nobody, GID: nobody},
		Cgroup:      newCgroup(t),
		Artifact:    sdk.Artifact{Module: modules[module]},
		Resources:   sdk.Resources{MemoryBytes: 256 << 20},
		Permissions: granted,
		RunDir:      filepath.Join(t.TempDir(), "run"),
	}
}

// start starts req and destroys the instance when the test ends.
func start(t *testing.T, r *Runtime, req *sdk.StartRequest) sdk.Handle {
	t.Helper()
	h, err := r.Start(context.Background(), req)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Destroy(context.Background(), h); err != nil {
			t.Errorf("Destroy: %v", err)
		}
	})
	return h
}

// waitEnded polls Inspect until the instance is no longer running.
func waitEnded(t *testing.T, r *Runtime, h sdk.Handle) sdk.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		st, err := r.Inspect(ctx, h)
		if err != nil {
			t.Fatalf("Inspect: %v", err)
		}
		if st.State != sdk.StateRunning {
			return st
		}
		select {
		case <-ctx.Done():
			t.Fatal("instance still running")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// run starts req, waits until it ends and returns its status and stdout.
func run(t *testing.T, r *Runtime, req *sdk.StartRequest) (sdk.Status, string) {
	t.Helper()
	h := start(t, r, req)
	st := waitEnded(t, r, h)
	return st, logs(t, r, h, sdk.Stdout)
}

// logs returns all of an instance's stream.
func logs(t *testing.T, r *Runtime, h sdk.Handle, stream sdk.LogStream) string {
	t.Helper()
	var out bytes.Buffer
	err := r.Logs(context.Background(), h, sdk.LogOptions{Stream: stream}, func(b []byte) error {
		out.Write(b)
		return nil
	})
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	return out.String()
}

// lineWith returns the first line of out that starts with prefix.
func lineWith(out, prefix string) string {
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// stateMount is the state mount of the state directory dir.
func stateMount(dir string) []sdk.Mount {
	return []sdk.Mount{{Source: dir, Target: sdk.StateTarget, Type: sdk.MountDir, State: true}}
}

package ctrruntime

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/tenant"
	"github.com/kigumi/kigumi/plugins/runtime-containerd/internal/ctrtest"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/statefs"
)

// testNamespace is the containerd namespace of the tests' containers.
const testNamespace = "kigumi-test"

var (
	// env is the containerd and registry every test uses, with the test
	// image pushed once for the run.
	env *ctrtest.Env
	// tenants makes the tests' real tenants.
	tenants *tenant.Manager
	// base holds the tests' tenant homes.
	base string
	// exe is a copy of the test binary that tenants' users may run: the
	// logging process of a per-tenant daemon's container runs as one.
	exe string
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == LogCommand {
		os.Exit(LogMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == MountCommand {
		os.Exit(MountMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == listenCommand {
		os.Exit(listenMain(os.Args[2:]))
	}
	// TestFUSEState's states are served by this binary, as by kigumi's.
	if len(os.Args) > 1 && os.Args[1] == statefs.HelperCommand {
		os.Exit(statefs.HelperMain(os.Args[2:]))
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	if base, err = os.MkdirTemp("", "ctrruntime-test-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(base)
	// Container root (a subordinate uid) must traverse containerd's state
	// dir, below base, as it would /run/containerd.
	if err := os.Chmod(base, 0o711); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if exe, err = copyExecutable(filepath.Join(base, "ctrruntime.test")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if tenants, err = tenant.NewManager(); err == nil {
		env, err = ctrtest.Start(ctx, base)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer env.Close()
	return m.Run()
}

// newRuntime returns a runtime configured for the test containerd, with
// extra settings.
func newRuntime(t testing.TB, settings sdk.Config) *Runtime {
	t.Helper()
	cfg := sdk.Config{"address": env.Address, "namespace": testNamespace}
	for k, v := range settings {
		cfg[k] = v
	}
	r := New()
	if err := r.Configure(context.Background(), sdk.ConfigureRequest{Host: "test", Settings: cfg, DataDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	r.exe = exe
	t.Cleanup(func() { r.Close() })
	return r
}

// copyExecutable copies the running executable to path, runnable by all.
func copyExecutable(path string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, b, 0o755)
}

// perTenant returns a runtime whose tenants named in perTenant have their
// own daemons, the others the shared one.
func perTenant(t *testing.T, tns ...testTenant) *Runtime {
	t.Helper()
	modes := map[string]string{}
	for _, tn := range tns {
		modes[tn.name] = ModePerTenant
	}
	return newRuntime(t, sdk.Config{"daemons": modes})
}

// prepare prepares tn on r, and releases it when the test ends, checking
// that its daemon left nothing behind.
func prepare(t *testing.T, r *Runtime, tn testTenant) testTenant {
	t.Helper()
	return prepareAt(t, r, tn, filepath.Join(t.TempDir(), "tenant"))
}

// prepareAt is prepare with the tenant's run dir, where a restarted
// plugin's PrepareTenant finds the running daemon.
func prepareAt(t *testing.T, r *Runtime, tn testTenant, runDir string) testTenant {
	t.Helper()
	req := &sdk.TenantRequest{Tenant: tn.name, User: tn.user, Cgroup: tn.cgroup, RunDir: runDir}
	h, err := r.PrepareTenant(context.Background(), req)
	if err != nil {
		t.Fatalf("prepare %s: %v", tn.name, err)
	}
	t.Cleanup(func() {
		if d, _ := decodeTenant(h); t.Failed() && d.Dir != "" {
			log, _ := os.ReadFile(filepath.Join(d.Dir, "daemon.log"))
			t.Logf("log of %s's daemon:\n%s", tn.name, log)
		}
		if err := r.ReleaseTenant(context.Background(), h); err != nil {
			t.Errorf("release %s: %v", tn.name, err)
		}
		checkDaemonGone(t, h)
	})
	tn.handle = h
	return tn
}

// checkDaemonGone checks that a released tenant's daemon left no process,
// mount or directory.
func checkDaemonGone(t *testing.T, h sdk.Handle) {
	t.Helper()
	d, err := decodeTenant(h)
	if err != nil {
		t.Fatal(err)
	}
	if d.Mode == ModeShared {
		return
	}
	if pids := daemonProcesses(d); len(pids) > 0 {
		t.Errorf("daemon processes left: %v", pids)
	}
	if _, err := os.Lstat(d.Dir); err == nil {
		t.Errorf("daemon dir %s is left", d.Dir)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(mi, []byte(d.Dir)) {
		t.Errorf("a mount under %s is left", d.Dir)
	}
}

// testTenant is a real tenant: Linux user, subordinate ids and cgroup.
type testTenant struct {
	name   string
	user   sdk.User
	cgroup sdk.Cgroup
	// handle is the tenant's handle once prepared.
	handle sdk.Handle
}

// newTenant makes a real tenant named ctr-*, removed when the test ends.
func newTenant(t testing.TB) testTenant {
	t.Helper()
	return newLimitedTenant(t, tenant.Limits{})
}

// newLimitedTenant makes a real tenant whose cgroup has the limits lim.
func newLimitedTenant(t testing.TB, lim tenant.Limits) testTenant {
	t.Helper()
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "ctr-" + hex.EncodeToString(b)
	uid, err := tenant.FreeUID(420000+uint32(b[0])<<8|uint32(b[1]), nil)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := tenant.FreeSubIDs(1<<30+uint32(b[2])<<16, 65536, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec := tenant.Spec{Tenant: name, UID: uid, SubIDStart: sub, SubIDCount: 65536, Home: filepath.Join(base, "home-"+name), Limits: lim}
	tn, err := tenants.Ensure(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tenants.Remove(context.Background(), name, spec.Home); err != nil {
			t.Errorf("remove tenant %s: %v", name, err)
		}
	})
	return testTenant{name: name, user: tn.User, cgroup: tn.Cgroup}
}

// instance describes one test instance.
type instance struct {
	name      string
	args      []string
	resources sdk.Resources
	settings  sdk.Config
	// state, when set, gives the instance a writable state directory.
	state bool
	image string
	// artifact, when set, is the artifact instead of image.
	artifact sdk.Artifact
}

// request makes the StartRequest of in for tn, with the instance's real
// cgroup inside the tenant's.
func request(t testing.TB, tn testTenant, in instance) *sdk.StartRequest {
	t.Helper()
	lim := tenant.Limits{MemoryBytes: in.resources.MemoryBytes, MilliCPU: in.resources.MilliCPU, Pids: in.resources.Pids}
	cg, err := tenants.EnsureInstance(context.Background(), tn.name, in.name, lim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tenants.RemoveInstance(context.Background(), tn.name, in.name); err != nil {
			t.Errorf("remove instance cgroup: %v", err)
		}
	})
	img := in.image
	if img == "" {
		img = env.Image
	}
	req := &sdk.StartRequest{
		Instance:  sdk.Instance{Tenant: tn.name, Name: in.name},
		User:      tn.user,
		Cgroup:    cg,
		Artifact:  sdk.Artifact{Image: img},
		Args:      in.args,
		Resources: in.resources,
		Settings:  in.settings,
		RunDir:    filepath.Join(t.TempDir(), "run"),
		Tenant:    tn.handle,
	}
	if in.artifact != (sdk.Artifact{}) {
		req.Artifact = in.artifact
	}
	if in.state {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, int(tn.user.UID), int(tn.user.GID)); err != nil {
			t.Fatal(err)
		}
		// A per-tenant daemon, as the tenant's user, must reach it.
		for _, p := range []string{filepath.Dir(dir), filepath.Dir(filepath.Dir(dir))} {
			if err := os.Chmod(p, 0o711); err != nil {
				t.Fatal(err)
			}
		}
		req.Mounts = []sdk.Mount{{Source: dir, Target: "/", Type: sdk.MountDir, State: true}}
		req.Permissions = sdk.Permissions{{Name: sdk.PermStateWrite}}
	}
	return req
}

// start starts in for tn and destroys it when the test ends.
func start(t testing.TB, r *Runtime, tn testTenant, in instance) (sdk.Handle, *sdk.StartRequest) {
	t.Helper()
	req := request(t, tn, in)
	h, err := r.Start(context.Background(), req)
	if err != nil {
		t.Fatalf("start %s: %v", in.name, err)
	}
	t.Cleanup(func() {
		if err := r.Destroy(context.Background(), h); err != nil {
			t.Errorf("destroy %s: %v", in.name, err)
		}
	})
	return h, req
}

// waitExit waits until the instance is no longer running.
func waitExit(t *testing.T, r *Runtime, h sdk.Handle, timeout time.Duration) sdk.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := r.Inspect(context.Background(), h)
		if err != nil {
			t.Fatal(err)
		}
		if st.State != sdk.StateRunning {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("still running after %v", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// logs returns what the instance wrote to stream so far.
func logs(t *testing.T, r *Runtime, h sdk.Handle, stream sdk.LogStream) string {
	t.Helper()
	var buf bytes.Buffer
	err := r.Logs(context.Background(), h, sdk.LogOptions{Stream: stream}, func(b []byte) error {
		buf.Write(b)
		return nil
	})
	if err != nil && !errors.Is(err, sdk.ErrNotFound) {
		t.Fatal(err)
	}
	return buf.String()
}

// waitLog waits until the instance's stdout holds want.
func waitLog(t *testing.T, r *Runtime, h sdk.Handle, want string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := logs(t, r, h, sdk.Stdout)
		if strings.Contains(out, want) {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in stdout after %v; stdout:\n%s\nstderr:\n%s", want, timeout, out, logs(t, r, h, sdk.Stderr))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// client returns a containerd client in the tests' namespace.
func client(t testing.TB) (context.Context, *containerd.Client) {
	t.Helper()
	c, err := containerd.New(env.Address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return namespaces.WithNamespace(context.Background(), testNamespace), c
}

// checkNothingLeft checks that containerd holds no container, task or
// snapshot of the instance, and the host no mount of it.
func checkNothingLeft(t *testing.T, id string) {
	t.Helper()
	ctx, c := client(t)
	if _, err := c.LoadContainer(ctx, id); err == nil {
		t.Errorf("container %s is left", id)
	}
	if _, err := c.SnapshotService(containerd.DefaultSnapshotter).Stat(ctx, id); err == nil {
		t.Errorf("snapshot %s is left", id)
	}
	ls, err := c.LeasesService().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) > 0 {
		t.Errorf("leases left: %v", ls)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(mi, []byte("/"+id+"/")) {
		t.Errorf("a mount of %s is left", id)
	}
}

package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

// helperEnv makes the test binary a client that dials the socket it names,
// asks for the version and prints the outcome as JSON (see TestMain).
const helperEnv = "KIGUMI_API_TEST_DIAL"

type helperResult struct {
	Version string `json:"version"`
	Code    Code   `json:"code"`
	Error   string `json:"error"`
	// DialDenied is set when connecting was refused by the socket's mode.
	DialDenied bool `json:"dial_denied"`
}

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		var r helperResult
		c, err := Dial(context.Background(), path)
		if err == nil {
			var v VersionInfo
			v, err = c.Version(context.Background())
			r.Version = v.Version
		}
		if err != nil {
			r.Error = err.Error()
			r.DialDenied = errors.Is(err, syscall.EACCES)
			var ae *Error
			if errors.As(err, &ae) {
				r.Code = ae.Code
			}
		}
		json.NewEncoder(os.Stdout).Encode(r)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeAgent answers with fixed data and records what it was asked.
type fakeAgent struct {
	bus *events.Bus
	// err, when set, is returned by every method.
	err error
	// entered is signalled when a blocking call (Reconcile with "block",
	// follow Logs) starts waiting; cancelled when it saw its context end.
	entered, cancelled chan struct{}
	calls              []string
}

func newFake() *fakeAgent {
	return &fakeAgent{bus: events.NewBus(), entered: make(chan struct{}, 1), cancelled: make(chan struct{}, 1)}
}

func (f *fakeAgent) block(ctx context.Context) error {
	f.entered <- struct{}{}
	<-ctx.Done()
	f.cancelled <- struct{}{}
	return ctx.Err()
}

func (f *fakeAgent) Status(ctx context.Context) ([]engine.TenantStatus, error) {
	return []engine.TenantStatus{{Name: "ap1", Phase: state.PhaseReady, User: "kg-ap1", UID: 61001,
		Instances: []engine.InstanceStatus{{Name: "web", Phase: state.PhaseReady, Runtime: "wasm", State: sdk.StateRunning, Pid: 42}}}}, f.err
}

func (f *fakeAgent) Tenants(ctx context.Context) ([]Tenant, error) {
	return []Tenant{{Name: "ap1", Source: "file:tenants/ap1.hcl", Generation: 3, Phase: state.PhaseReady}}, f.err
}

func (f *fakeAgent) Plan(ctx context.Context) (*plan.Plan, error) {
	return &plan.Plan{Actions: []plan.Action{{Op: plan.Update, Tenant: "ap1", Instance: "web",
		Changes: []plan.Change{{Field: "env.GREETING", Old: `"Hello"`, New: `"Hi"`}}}}}, f.err
}

func (f *fakeAgent) Reconcile(ctx context.Context, tenants ...string) ([]ReconcileResult, error) {
	if slices.Contains(tenants, "block") {
		return nil, f.block(ctx)
	}
	var out []ReconcileResult
	for _, t := range tenants {
		out = append(out, ReconcileResult{Tenant: t, Updated: 1})
	}
	return out, f.err
}

func (f *fakeAgent) Stop(ctx context.Context, tenant, instance string) error {
	f.calls = append(f.calls, "stop "+tenant+"/"+instance)
	return f.err
}

func (f *fakeAgent) Start(ctx context.Context, tenant, instance string) error {
	f.calls = append(f.calls, "start "+tenant+"/"+instance)
	return f.err
}

func (f *fakeAgent) Restart(ctx context.Context, tenant, instance string) error {
	f.calls = append(f.calls, "restart "+tenant+"/"+instance)
	return f.err
}

func (f *fakeAgent) Logs(ctx context.Context, tenant, instance string, opts sdk.LogOptions, fn func([]byte) error) error {
	if f.err != nil {
		return f.err
	}
	if instance == "gone" {
		return fmt.Errorf("instance %s/%s: %w", tenant, instance, engine.ErrUnknownInstance)
	}
	if err := fn([]byte("out of " + string(opts.Stream) + "\n\x1b[2J\xff")); err != nil {
		return err
	}
	if instance == "broken" {
		return errors.New("the runtime died")
	}
	if opts.Follow {
		return f.block(ctx)
	}
	return nil
}

func (f *fakeAgent) Journal(ctx context.Context, n int) ([]state.Entry, error) {
	var out []state.Entry
	for i := range n {
		out = append(out, state.Entry{Seq: uint64(i + 1), Target: "instance ap1/web", Step: "start", Event: state.EventDone})
	}
	return out, f.err
}

func (f *fakeAgent) Events() *events.Bus { return f.bus }

// fakeCheckpoint is the one checkpoint of the fake's instances.
var fakeCheckpoint = sdk.Checkpoint{Name: "c1", CreatedAt: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC),
	Root: []byte{0xab, 0xcd}, Bytes: 7, Inodes: 3, Mount: "/s/state/ap1/.mounts/web/c1"}

// checkpointErr returns f.err, or sdk.ErrNotFound for a checkpoint but c1.
func (f *fakeAgent) checkpointErr(name string) error {
	if f.err == nil && name != "c1" {
		return fmt.Errorf("no checkpoint %q: %w", name, sdk.ErrNotFound)
	}
	return f.err
}

func (f *fakeAgent) StateHash(ctx context.Context, tenant, instance string) ([]byte, error) {
	f.calls = append(f.calls, "hash "+tenant+"/"+instance)
	return []byte{0x01, 0xfe}, f.err
}

func (f *fakeAgent) Checkpoint(ctx context.Context, tenant, instance, name string) (sdk.Checkpoint, error) {
	f.calls = append(f.calls, "checkpoint "+tenant+"/"+instance+" "+name)
	cp := fakeCheckpoint
	cp.Name, cp.Mount = name, ""
	return cp, f.err
}

func (f *fakeAgent) Checkpoints(ctx context.Context, tenant, instance string) ([]sdk.Checkpoint, error) {
	return []sdk.Checkpoint{fakeCheckpoint}, f.err
}

func (f *fakeAgent) Rollback(ctx context.Context, tenant, instance, name string) error {
	f.calls = append(f.calls, "rollback "+tenant+"/"+instance+" "+name)
	return f.checkpointErr(name)
}

func (f *fakeAgent) MountCheckpoint(ctx context.Context, tenant, instance, name string) (sdk.Mount, error) {
	f.calls = append(f.calls, "mount "+tenant+"/"+instance+" "+name)
	return sdk.Mount{Source: fakeCheckpoint.Mount, ReadOnly: true, Type: sdk.MountBind, Options: []string{"ro"}}, f.checkpointErr(name)
}

func (f *fakeAgent) UnmountCheckpoint(ctx context.Context, tenant, instance, name string) error {
	f.calls = append(f.calls, "unmount "+tenant+"/"+instance+" "+name)
	return f.checkpointErr(name)
}

// openDir returns a fresh directory that unprivileged test clients can
// traverse (t.TempDir's parent is root-only).
func openDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kigumi-api-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serve starts a server for agent on a socket in a fresh directory, owned
// by gid, and returns the socket's path. The server stops with the test.
func serve(t *testing.T, agent Agent, gid uint32) string {
	t.Helper()
	path := SocketPath(openDir(t))
	ln, err := Listen(path, gid)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(agent, Options{Host: "h1", Version: "v9.9.9", GID: gid}).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return path
}

func dial(t *testing.T, path string) *Client {
	t.Helper()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestEndpoints(t *testing.T) {
	f := newFake()
	c := dial(t, serve(t, f, 0))
	ctx := context.Background()

	v, err := c.Version(ctx)
	if err != nil || v != (VersionInfo{Version: "v9.9.9", API: Version, EventSchema: events.SchemaVersion}) {
		t.Errorf("version = %+v, %v", v, err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Host != "h1" || len(st.Tenants) != 1 || st.Tenants[0].Instances[0].Pid != 42 ||
		st.Tenants[0].Instances[0].State != sdk.StateRunning {
		t.Errorf("status = %+v, %v", st, err)
	}
	ts, err := c.Tenants(ctx)
	if err != nil || len(ts) != 1 || ts[0].Source != "file:tenants/ap1.hcl" || ts[0].Generation != 3 {
		t.Errorf("tenants = %+v, %v", ts, err)
	}
	p, err := c.Plan(ctx)
	if err != nil || p.Count(plan.Update) != 1 || p.Actions[0].Changes[0].New != `"Hi"` {
		t.Errorf("plan = %+v, %v", p, err)
	}
	res, err := c.Reconcile(ctx, "ap1", "ap2")
	if err != nil || len(res) != 2 || res[1] != (ReconcileResult{Tenant: "ap2", Updated: 1}) {
		t.Errorf("reconcile = %+v, %v", res, err)
	}
	for _, act := range []func(context.Context, string, string) error{c.Stop, c.Start, c.Restart} {
		if err := act(ctx, "ap1", "web"); err != nil {
			t.Error(err)
		}
	}
	if want := []string{"stop ap1/web", "start ap1/web", "restart ap1/web"}; !slices.Equal(f.calls, want) {
		t.Errorf("calls = %q, want %q", f.calls, want)
	}
	var logs []byte
	err = c.Logs(ctx, "ap1", "web", sdk.LogOptions{Stream: sdk.Stderr}, func(b []byte) error {
		logs = append(logs, b...)
		return nil
	})
	if want := "out of stderr\n\x1b[2J\xff"; err != nil || string(logs) != want {
		t.Errorf("logs = %q, %v; want the bytes unchanged: %q", logs, err, want)
	}
	j, err := c.Journal(ctx, 3)
	if err != nil || len(j) != 3 || j[2].Seq != 3 || j[2].Event != state.EventDone {
		t.Errorf("journal = %+v, %v", j, err)
	}
}

func TestStateEndpoints(t *testing.T) {
	f := newFake()
	c := dial(t, serve(t, f, 0))
	ctx := context.Background()
	if h, err := c.StateHash(ctx, "ap1", "web"); err != nil || h != (StateHash{Tenant: "ap1", Instance: "web", Root: "01fe"}) {
		t.Errorf("state hash = %+v, %v", h, err)
	}
	want := Checkpoint{Name: "c1", CreatedAt: fakeCheckpoint.CreatedAt, Root: "abcd", Bytes: 7, Inodes: 3, Mount: fakeCheckpoint.Mount}
	if list, err := c.Checkpoints(ctx, "ap1", "web"); err != nil || len(list) != 1 || list[0] != want {
		t.Errorf("checkpoints = %+v, %v; want %+v", list, err, want)
	}
	if cp, err := c.Checkpoint(ctx, "ap1", "web", "before"); err != nil || cp.Name != "before" || cp.Root != "abcd" || cp.Mount != "" {
		t.Errorf("checkpoint = %+v, %v", cp, err)
	}
	if m, err := c.MountCheckpoint(ctx, "ap1", "web", "c1"); err != nil ||
		m.Path != fakeCheckpoint.Mount || !m.ReadOnly || m.Checkpoint != "c1" || !slices.Equal(m.Options, []string{"ro"}) {
		t.Errorf("mount = %+v, %v", m, err)
	}
	if err := c.UnmountCheckpoint(ctx, "ap1", "web", "c1"); err != nil {
		t.Error(err)
	}
	if err := c.Rollback(ctx, "ap1", "web", "c1"); err != nil {
		t.Error(err)
	}
	// Names travel escaped: one that is not a path segment reaches the
	// agent as it is, to be refused there.
	if err := c.Rollback(ctx, "ap1", "web", "../x y"); !errors.Is(err, ErrNotFound) {
		t.Errorf("rollback of an unknown checkpoint: %v, want not found", err)
	}
	wantCalls := []string{"hash ap1/web", "checkpoint ap1/web before", "mount ap1/web c1", "unmount ap1/web c1", "rollback ap1/web c1", "rollback ap1/web ../x y"}
	if !slices.Equal(f.calls, wantCalls) {
		t.Errorf("calls = %q, want %q", f.calls, wantCalls)
	}
	if err := c.do(ctx, "POST", "/v1/instances/ap1/web/checkpoints/c1/explode", struct{}{}, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown checkpoint action: %v", err)
	}
	if err := c.do(ctx, "POST", "/v1/instances/ap1/web/checkpoints", "not an object", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad checkpoint body: %v", err)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want error
		code Code
	}{
		{"unknown tenant", fmt.Errorf("tenant x: %w", engine.ErrUnknownTenant), ErrNotFound, CodeNotFound},
		{"unknown instance", fmt.Errorf("x/y: %w", engine.ErrUnknownInstance), ErrNotFound, CodeNotFound},
		{"plugin invalid", &sdk.Error{Code: sdk.CodeInvalid, Message: "bad"}, ErrInvalid, CodeInvalid},
		{"busy", fmt.Errorf("open: %w", state.ErrLocked), ErrBusy, CodeBusy},
		{"no state", fmt.Errorf("x/y: %w", engine.ErrNoState), ErrInvalid, CodeInvalid},
		{"unsupported", fmt.Errorf("statefs: %w", sdk.ErrUnsupported), ErrInvalid, CodeInvalid},
		{"unknown checkpoint", &sdk.Error{Code: sdk.CodeNotFound, Message: "no checkpoint"}, ErrNotFound, CodeNotFound},
		{"api not found", fmt.Errorf("x: %w", ErrNotFound), ErrNotFound, CodeNotFound},
		{"internal", errors.New("disk on fire"), nil, CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			f.err = tt.err
			c := dial(t, serve(t, f, 0))
			calls := map[string]error{}
			_, calls["status"] = c.Status(context.Background())
			calls["stop"] = c.Stop(context.Background(), "a", "b")
			calls["logs"] = c.Logs(context.Background(), "a", "b", sdk.LogOptions{}, func([]byte) error { return nil })
			_, calls["state hash"] = c.StateHash(context.Background(), "a", "b")
			_, calls["checkpoints"] = c.Checkpoints(context.Background(), "a", "b")
			calls["rollback"] = c.Rollback(context.Background(), "a", "b", "c1")
			for name, err := range calls {
				var ae *Error
				if !errors.As(err, &ae) || ae.Code != tt.code || ae.Message != tt.err.Error() {
					t.Errorf("%s: error %#v, want code %s and message %q", name, err, tt.code, tt.err)
				}
				if tt.want != nil && !errors.Is(err, tt.want) {
					t.Errorf("%s: %v is not %v", name, err, tt.want)
				}
				for _, other := range []error{ErrNotFound, ErrInvalid, ErrBusy, ErrForbidden} {
					if other != tt.want && errors.Is(err, other) {
						t.Errorf("%s: %v is also %v", name, err, other)
					}
				}
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	c := dial(t, serve(t, newFake(), 0))
	ctx := context.Background()
	if err := c.instanceAction(ctx, "ap1", "web", "explode"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown action: %v", err)
	}
	err := c.Logs(ctx, "ap1", "web", sdk.LogOptions{Stream: "stdin"}, func([]byte) error { return nil })
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `unknown stream "stdin"`) {
		t.Errorf("bad stream: %v", err)
	}
	if err := c.do(ctx, "GET", "/v1/journal?n=-1", nil, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative n: %v", err)
	}
	if err := c.do(ctx, "POST", "/v1/reconcile", "not an object", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad reconcile body: %v", err)
	}
	// An error after output began ends the stream with an error line.
	var got []byte
	err = c.Logs(ctx, "ap1", "broken", sdk.LogOptions{}, func(b []byte) error { got = append(got, b...); return nil })
	if len(got) == 0 || err == nil || err.Error() != "the runtime died" {
		t.Errorf("broken logs: %q, %v", got, err)
	}
	if err := c.Logs(ctx, "ap1", "gone", sdk.LogOptions{}, func([]byte) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown instance logs: %v", err)
	}
}

// testGroup creates an admin group unique to the test through EnsureGroup,
// and removes it afterwards.
func testGroup(t *testing.T) (string, uint32) {
	t.Helper()
	var b [3]byte
	rand.Read(b[:])
	name := "kgapi" + hex.EncodeToString(b[:])
	gid, err := EnsureGroup(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command("groupdel", name).Run() })
	if again, err := EnsureGroup(context.Background(), name); err != nil || again != gid {
		t.Fatalf("EnsureGroup again: %d, %v; want %d", again, err, gid)
	}
	return name, gid
}

// helperBinary copies the test binary where an unprivileged user can run it.
func helperBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(openDir(t), "api.test")
	in, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestPeerCredentials connects as real unprivileged users: the socket's mode
// keeps out those outside the group, the peer credential check refuses them
// even when the mode would let them in, and members of the group get in.
func TestPeerCredentials(t *testing.T) {
	const nobody = 65534
	groupName, gid := testGroup(t)
	bin := helperBinary(t)
	path := serve(t, newFake(), gid)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o660 || st.Uid != 0 || st.Gid != gid {
		t.Fatalf("socket mode %v owner %d:%d, want 0660 0:%d", fi.Mode().Perm(), st.Uid, st.Gid, gid)
	}
	as := func(t *testing.T, cred *syscall.Credential) helperResult {
		t.Helper()
		cmd := exec.Command(bin)
		cmd.Env = []string{helperEnv + "=" + path}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("helper: %v", err)
		}
		var r helperResult
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("helper output %q: %v", out, err)
		}
		return r
	}
	tests := []struct {
		name string
		cred *syscall.Credential
		// mode is the socket's mode for the case: 0666 models a socket
		// whose mode was widened by mistake.
		mode os.FileMode
		want func(helperResult) bool
	}{
		{"root", nil, 0o660, func(r helperResult) bool { return r.Version == "v9.9.9" }},
		{"member by supplementary group", &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{gid}}, 0o660,
			func(r helperResult) bool { return r.Version == "v9.9.9" }},
		{"member by primary group", &syscall.Credential{Uid: nobody, Gid: gid, Groups: []uint32{}}, 0o660,
			func(r helperResult) bool { return r.Version == "v9.9.9" }},
		{"outsider, socket mode", &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}, 0o660,
			func(r helperResult) bool { return r.DialDenied }},
		{"outsider, peer credentials", &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}, 0o666,
			func(r helperResult) bool {
				return r.Code == CodeForbidden && strings.Contains(r.Error,
					fmt.Sprintf(`uid %d may not use the control API: only root and members of the group %q may`, nobody, groupName))
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			if r := as(t, tt.cred); !tt.want(r) {
				t.Errorf("got %+v", r)
			}
		})
	}
}

func TestEventStream(t *testing.T) {
	f := newFake()
	c := dial(t, serve(t, f, 0))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sent := []events.Event{
		{Type: events.TypeActionBegin, Tenant: "ap1", Instance: "web", Op: "create"},
		{Type: events.TypeDiagnostics, Tenant: "ap2", Diagnostics: []events.Diagnostic{{Severity: "error", Summary: "bad",
			Range: &events.Range{Filename: "ap2.hcl", Start: events.Pos{Line: 1, Column: 2}, End: events.Pos{Line: 1, Column: 5, Byte: 4}}}}},
		{Type: events.TypeReconcile, Tenant: "ap1", Duration: 0.25},
	}
	var got []events.Event
	err := c.Events(ctx, func(e events.Event) error {
		got = append(got, e)
		if len(got) == 1 { // subscribed: publish
			for _, e := range sent {
				f.bus.Publish(e)
			}
		}
		if len(got) == 1+len(sent) {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("events ended with %v", err)
	}
	if len(got) != 1+len(sent) {
		t.Fatalf("got %d events: %+v", len(got), got)
	}
	if v := got[0]; v.Type != events.TypeVersion || v.Message != "v9.9.9" || v.Version != events.SchemaVersion {
		t.Errorf("first event %+v, want the version", v)
	}
	for i, e := range got[1:] {
		want := sent[i]
		if e.Type != want.Type || e.Tenant != want.Tenant || e.Seq != uint64(i+1) || e.Version != events.SchemaVersion || e.Time.IsZero() {
			t.Errorf("event %d = %+v, want %+v", i, e, want)
		}
	}
	if r := got[2].Diagnostics[0].Range; r == nil || r.End.Byte != 4 || r.Filename != "ap2.hcl" {
		t.Errorf("diagnostic range lost: %+v", got[2].Diagnostics)
	}
	if got[3].Duration != 0.25 {
		t.Errorf("duration lost: %+v", got[3])
	}
}

// TestServerStopEndsStreams stops the server while a client follows events.
func TestServerStopEndsStreams(t *testing.T) {
	f := newFake()
	dir := t.TempDir()
	ln, err := Listen(SocketPath(dir), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(f, Options{}).Serve(ctx, ln) }()
	c := dial(t, SocketPath(dir))
	err = c.Events(context.Background(), func(e events.Event) error {
		stop()
		return nil
	})
	if err != nil {
		t.Errorf("events after server stop: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
	if _, err := os.Stat(SocketPath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if _, err := Dial(context.Background(), SocketPath(dir)); !errors.Is(err, ErrNoAgent) {
		t.Errorf("dial after stop: %v, want ErrNoAgent", err)
	}
}

// TestCancellation cancels a client mid-call: the agent's context ends.
func TestCancellation(t *testing.T) {
	tests := []struct {
		name string
		call func(ctx context.Context, c *Client) error
	}{
		{"reconcile", func(ctx context.Context, c *Client) error {
			_, err := c.Reconcile(ctx, "block")
			return err
		}},
		{"follow logs", func(ctx context.Context, c *Client) error {
			return c.Logs(ctx, "ap1", "web", sdk.LogOptions{Follow: true}, func([]byte) error { return nil })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			c := dial(t, serve(t, f, 0))
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() { errc <- tt.call(ctx, c) }()
			<-f.entered
			cancel()
			<-f.cancelled // the agent saw the cancellation
			if err := <-errc; !errors.Is(err, context.Canceled) {
				t.Errorf("call ended with %v, want context.Canceled", err)
			}
		})
	}
}

func TestListen(t *testing.T) {
	dir := t.TempDir()
	path := SocketPath(dir)
	// A stale socket is replaced.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ln, err := Listen(path, 0)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	defer ln.Close()
	// A live one is not.
	if _, err := Listen(path, 0); !errors.Is(err, ErrBusy) {
		t.Errorf("over a live socket: %v, want ErrBusy", err)
	}
	// Nor is a file that is not a socket.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file, 0); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("over a file: %v", err)
	}
	if data, _ := os.ReadFile(file); string(data) != "keep" {
		t.Errorf("file changed: %q", data)
	}
	if _, err := Dial(context.Background(), filepath.Join(dir, "none.sock")); !errors.Is(err, ErrNoAgent) {
		t.Errorf("dial nothing: %v", err)
	}
}

package sdktest_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/sdktest"
)

var testConfigure = sdk.ConfigureRequest{
	Host: "host-1",
	Settings: sdk.Config{
		"path":   "/srv/wasm",
		"size":   1.5e9,
		"zero":   0.0,
		"debug":  true,
		"off":    false,
		"hosts":  []string{"a", "", "c"},
		"none":   []string{},
		"labels": map[string]string{"tier": "gold", "": "empty key"},
		"empty":  map[string]string{},
		"blank":  "",
		"registry": sdk.Config{
			"url":    "https://r.example",
			"mirror": []sdk.Config{{"url": "https://m1"}, {}},
		},
		"pool":      map[string]sdk.Config{"web": {"first": 8000.0}, "": {}},
		"no-blocks": []sdk.Config{},
		"no-pool":   map[string]sdk.Config{},
	},
	DataDir:          "/var/lib/kigumi/plugins/runtime-fake",
	HostCapabilities: sdk.HostCapabilities{ProtocolMinor: 3, Features: []string{"kigumi.host.v2/reattach"}},
}

var testTenant = sdk.TenantRequest{
	Tenant:    "alice",
	User:      sdk.User{Name: "kg-alice", UID: 1001, GID: 1002, SubUID: 100000, SubGID: 200000, Count: 65536, Home: "/home/kg-alice"},
	Cgroup:    sdk.Cgroup{Path: "/kigumi/alice", ProcsFiles: []string{"/sys/fs/cgroup/memory/kigumi/alice/cgroup.procs"}},
	RunDir:    "/run/kigumi/tenants/alice",
	Resources: sdk.Resources{MemoryBytes: 1 << 30, MilliCPU: 2000, DiskBytes: 4 << 30, Pids: 512},
}

var testMount = sdk.Mount{Source: "/var/lib/kigumi/state/alice/web", Target: "/state", ReadOnly: true, Type: sdk.MountFUSE, Options: []string{"nosuid", "nodev"}}

var testStart = sdk.StartRequest{
	Instance:    sdk.Instance{Tenant: "alice", Name: "web"},
	User:        sdk.User{Name: "kg-alice", UID: 1001, GID: 1002, SubUID: 100000, SubGID: 200000, Count: 65536, Home: "/home/kg-alice"},
	Cgroup:      sdk.Cgroup{Path: "/kigumi/alice/web", ProcsFiles: []string{"/sys/fs/cgroup/memory/kigumi/alice/web/cgroup.procs", "/sys/fs/cgroup/pids/kigumi/alice/web/cgroup.procs"}},
	Artifact:    sdk.Artifact{Module: "/srv/web.wasm", Image: "registry.local/web:1", Digest: "sha256:abcd"},
	Args:        []string{"web", "--port", "8080"},
	Env:         map[string]string{"A": "1", "EMPTY": ""},
	Resources:   sdk.Resources{MemoryBytes: 64 << 20, MilliCPU: 250, DiskBytes: 1 << 30, Pids: 32, IO: sdk.IOLimits{ReadBPS: 20 << 20, WriteBPS: 10 << 20, ReadIOPS: 2000, WriteIOPS: 1000}},
	Permissions: sdk.Permissions{{Name: sdk.PermStateRead}, {Name: "net.connect", Params: map[string]string{"host": "db.internal", "port": "5432", "": ""}}},
	Mounts:      []sdk.Mount{testMount, {Source: "/srv/assets", Target: "/assets", Type: sdk.MountBind}},
	Settings: sdk.Config{
		"entrypoint": []string{"/bin/web", "-v"},
		"uid":        10000.0,
		"port":       map[string]sdk.Config{"http": {"container": 8080.0}},
	},
	Tenant: sdk.Handle{Version: 1, Data: []byte("tenant-alice")},
	RunDir: "/run/kigumi/alice/web",
}

var testProvision = sdk.ProvisionRequest{
	Instance:   sdk.Instance{Tenant: "bob", Name: "db"},
	User:       sdk.User{Name: "kg-bob", UID: 1003, GID: 1003, Home: "/home/kg-bob"},
	SizeBytes:  10 << 30,
	IO:         sdk.IOLimits{WriteBPS: 1 << 20, ReadIOPS: 50},
	InodeLimit: 100000,
	Dir:        "/var/lib/kigumi/state/bob/db",
}

// roundTrip is one call through the protocol: what the client gets back and
// what the implementation saw.
type roundTrip struct {
	name     string
	call     func(ctx context.Context) (any, error)
	want     any
	wantSeen []any
}

func checkRoundTrips(t *testing.T, rec *recorder, tests []roundTrip) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.call(context.Background())
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("client got %#v, want %#v", got, tt.want)
			}
			if seen := rec.lastArgs(); !reflect.DeepEqual(seen, tt.wantSeen) {
				t.Errorf("plugin saw %#v, want %#v", seen, tt.wantSeen)
			}
		})
	}
}

func TestRuntimeRoundTrip(t *testing.T) {
	impl := &fakeRuntime{}
	rt := sdktest.Runtime(t, impl)
	var chunks [][]byte
	checkRoundTrips(t, &impl.recorder, []roundTrip{
		{"info", func(ctx context.Context) (any, error) { return rt.Info(ctx) }, testInfo, nil},
		{"configure", func(ctx context.Context) (any, error) { return nil, rt.Configure(ctx, testConfigure) }, nil, []any{testConfigure}},
		{"prepare-tenant", func(ctx context.Context) (any, error) { return rt.PrepareTenant(ctx, &testTenant) }, testHandle, []any{testTenant}},
		{"release-tenant", func(ctx context.Context) (any, error) { return nil, rt.ReleaseTenant(ctx, testHandle) }, nil, []any{testHandle}},
		{"validate", func(ctx context.Context) (any, error) { return nil, rt.Validate(ctx, &testStart) }, nil, []any{testStart}},
		{"start", func(ctx context.Context) (any, error) { return rt.Start(ctx, &testStart) }, testHandle, []any{testStart}},
		{"start-empty", func(ctx context.Context) (any, error) { return rt.Start(ctx, &sdk.StartRequest{}) }, testHandle, []any{sdk.StartRequest{}}},
		{"stop", func(ctx context.Context) (any, error) { return nil, rt.Stop(ctx, testHandle, 1500*time.Millisecond) }, nil, []any{testHandle, 1500 * time.Millisecond}},
		{"stop-now", func(ctx context.Context) (any, error) { return nil, rt.Stop(ctx, testHandle, 0) }, nil, []any{testHandle, time.Duration(0)}},
		{"destroy", func(ctx context.Context) (any, error) { return nil, rt.Destroy(ctx, testHandle) }, nil, []any{testHandle}},
		{"inspect", func(ctx context.Context) (any, error) { return rt.Inspect(ctx, testHandle) }, testStatus, []any{testHandle}},
		{"recover", func(ctx context.Context) (any, error) { return rt.Recover(ctx, testHandle) }, upgraded(testHandle), []any{testHandle}},
		{"logs", func(ctx context.Context) (any, error) {
			err := rt.Logs(ctx, testHandle, sdk.LogOptions{Stream: sdk.Stderr}, func(b []byte) error {
				chunks = append(chunks, b)
				return nil
			})
			return chunks, err
		}, testChunks, []any{testHandle, sdk.LogOptions{Stream: sdk.Stderr}}},
		{"watch-exits", func(ctx context.Context) (any, error) {
			var got []sdk.ExitEvent
			readyFirst := false
			done := errors.New("seen all")
			err := rt.(sdk.ExitWatcher).WatchExits(ctx, func() { readyFirst = len(got) == 0 }, func(e sdk.ExitEvent) error {
				if got = append(got, e); len(got) == len(testExits) {
					return done
				}
				return nil
			})
			if !errors.Is(err, done) || !readyFirst {
				return got, fmt.Errorf("watch returned %v, want fn's error; ready before the exits: %v", err, readyFirst)
			}
			return got, nil
		}, testExits, nil},
	})
}

// TestWatchExitsUnsupported: a runtime that does not implement
// sdk.ExitWatcher answers WatchExits with CodeUnsupported, never ready.
func TestWatchExitsUnsupported(t *testing.T) {
	rt := sdktest.Runtime(t, struct{ sdk.Runtime }{&fakeRuntime{}})
	ready := false
	err := rt.(sdk.ExitWatcher).WatchExits(context.Background(), func() { ready = true }, func(sdk.ExitEvent) error { return nil })
	if sdk.CodeOf(err) != sdk.CodeUnsupported || ready {
		t.Errorf("WatchExits = %v (ready %v), want CodeUnsupported and no ready", err, ready)
	}
}

func TestMountCheckpointUnsupported(t *testing.T) {
	fs := sdktest.StateFS(t, struct{ sdk.StateFS }{&fakeStateFS{}})
	if _, err := fs.(sdk.CheckpointMounter).MountCheckpoint(context.Background(), testHandle, "c"); sdk.CodeOf(err) != sdk.CodeUnsupported {
		t.Errorf("MountCheckpoint = %v, want CodeUnsupported", err)
	}
	if err := fs.(sdk.CheckpointMounter).UnmountCheckpoint(context.Background(), testHandle, "c"); sdk.CodeOf(err) != sdk.CodeUnsupported {
		t.Errorf("UnmountCheckpoint = %v, want CodeUnsupported", err)
	}
}

func TestStateFSRoundTrip(t *testing.T) {
	impl := &fakeStateFS{}
	fs := sdktest.StateFS(t, impl)
	checkRoundTrips(t, &impl.recorder, []roundTrip{
		{"info", func(ctx context.Context) (any, error) { return fs.Info(ctx) }, testInfo, nil},
		{"configure", func(ctx context.Context) (any, error) { return nil, fs.Configure(ctx, testConfigure) }, nil, []any{testConfigure}},
		{"provision", func(ctx context.Context) (any, error) { return fs.Provision(ctx, &testProvision) }, testHandle, []any{testProvision}},
		{"mount", func(ctx context.Context) (any, error) { return fs.Mount(ctx, testHandle) }, testMount, []any{testHandle}},
		{"usage", func(ctx context.Context) (any, error) { return fs.Usage(ctx, testHandle) }, testUsage, []any{testHandle}},
		{"checkpoint", func(ctx context.Context) (any, error) { return fs.Checkpoint(ctx, testHandle, "before-upgrade") }, testCheckpoints[0], []any{testHandle, "before-upgrade"}},
		{"checkpoints", func(ctx context.Context) (any, error) { return fs.Checkpoints(ctx, testHandle) }, testCheckpoints, []any{testHandle}},
		{"rollback", func(ctx context.Context) (any, error) { return nil, fs.Rollback(ctx, testHandle, "before-upgrade") }, nil, []any{testHandle, "before-upgrade"}},
		{"mount_checkpoint", func(ctx context.Context) (any, error) {
			return fs.(sdk.CheckpointMounter).MountCheckpoint(ctx, testHandle, "before-upgrade")
		}, testMount, []any{testHandle, "before-upgrade"}},
		{"unmount_checkpoint", func(ctx context.Context) (any, error) {
			return nil, fs.(sdk.CheckpointMounter).UnmountCheckpoint(ctx, testHandle, "before-upgrade")
		}, nil, []any{testHandle, "before-upgrade"}},
		{"unmount", func(ctx context.Context) (any, error) { return nil, fs.Unmount(ctx, testHandle) }, nil, []any{testHandle}},
		{"hash", func(ctx context.Context) (any, error) { return fs.Hash(ctx, testHandle) }, []byte{0xde, 0xad, 0xbe, 0xef}, []any{testHandle}},
		{"recover", func(ctx context.Context) (any, error) { return fs.Recover(ctx, testHandle) }, upgraded(testHandle), []any{testHandle}},
		{"deprovision", func(ctx context.Context) (any, error) { return nil, fs.Deprovision(ctx, testHandle) }, nil, []any{testHandle}},
	})
}

func TestLedgerRoundTrip(t *testing.T) {
	impl := &fakeLedger{}
	l := sdktest.Ledger(t, impl)
	reply := sdk.LeaseReply{EventID: "tx-A1", IdempotencyKey: "reply-tx-A1", Lease: "L1", OK: true, Message: "started web", Payload: []byte{0, 0xff, 'x'}}
	checkRoundTrips(t, &impl.recorder, []roundTrip{
		{"info", func(ctx context.Context) (any, error) { return l.Info(ctx) }, testInfo, nil},
		{"configure", func(ctx context.Context) (any, error) { return nil, l.Configure(ctx, testConfigure) }, nil, []any{testConfigure}},
		{"reply", func(ctx context.Context) (any, error) { return nil, l.Reply(ctx, reply) }, nil, []any{reply}},
		{"events", func(ctx context.Context) (any, error) {
			var got []sdk.LeaseEvent
			done := errors.New("seen all")
			err := l.Events(ctx, "", func(e sdk.LeaseEvent) error {
				got = append(got, e)
				if len(got) == len(testEvents) {
					return done
				}
				return nil
			})
			if !errors.Is(err, done) {
				return got, fmt.Errorf("events returned %v, want fn's error", err)
			}
			return got, nil
		}, testEvents, []any{""}},
		{"events-after-cursor", func(ctx context.Context) (any, error) {
			var got sdk.LeaseEvent
			done := errors.New("got one")
			if err := l.Events(ctx, "c2", func(e sdk.LeaseEvent) error { got = e; return done }); !errors.Is(err, done) {
				return got, fmt.Errorf("events returned %v, want fn's error", err)
			}
			return got, nil
		}, testEvents[2], []any{"c2"}},
	})
}

func TestConfigValues(t *testing.T) {
	tests := []struct {
		name     string
		value    any
		wantAttr string
	}{
		{"string", "x", ""},
		{"empty-string", "", ""},
		{"number", 3.25, ""},
		{"negative", -1e-9, ""},
		{"true", true, ""},
		{"false", false, ""},
		{"list", []string{"a", "b"}, ""},
		{"empty-list", []string{}, ""},
		{"map", map[string]string{"k": "v", "k2": ""}, ""},
		{"empty-map", map[string]string{}, ""},
		{"block", sdk.Config{"a": "b", "inner": sdk.Config{"n": 1.0}}, ""},
		{"empty-block", sdk.Config{}, ""},
		{"block-list", []sdk.Config{{"a": true}, {}}, ""},
		{"empty-block-list", []sdk.Config{}, ""},
		{"block-map", map[string]sdk.Config{"x": {"l": []string{"1"}}}, ""},
		{"empty-block-map", map[string]sdk.Config{}, ""},
		{"bad-in-block", sdk.Config{"deep": sdk.Config{"n": 1}}, "bad-in-block.deep.n"},
		{"bad-in-list", []sdk.Config{{}, {"n": int64(1)}}, "bad-in-list[1].n"},
		{"bad-in-map", map[string]sdk.Config{"k": {"n": []int{1}}}, `bad-in-map["k"].n`},
		{"nil-block", sdk.Config(nil), "nil-block"},
		{"int", 3, "int"},
		{"any-list", []any{"a"}, "any-list"},
		{"nil", nil, "nil"},
	}
	impl := &fakeRuntime{}
	rt := sdktest.Runtime(t, impl)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := sdk.ConfigureRequest{Host: "h", Settings: sdk.Config{tt.name: tt.value}}
			err := rt.Configure(context.Background(), req)
			if tt.wantAttr != "" {
				var e *sdk.Error
				if !errors.As(err, &e) || e.Code != sdk.CodeInvalid || e.Attribute != tt.wantAttr {
					t.Fatalf("Configure(%T) = %v, want invalid error on %q", tt.value, err, tt.wantAttr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Configure: %v", err)
			}
			got := impl.lastArgs()[0].(sdk.ConfigureRequest).Settings[tt.name]
			if !reflect.DeepEqual(got, tt.value) {
				t.Errorf("plugin got %#v (%T), want %#v (%T)", got, got, tt.value, tt.value)
			}
		})
	}
}

func TestTypedErrors(t *testing.T) {
	cause := errors.New("disk on fire")
	tests := []struct {
		name string
		err  error
		want *sdk.Error
	}{
		{"invalid-attribute", sdk.InvalidAttribute("memory", "must be at least %d", 1024), &sdk.Error{Code: sdk.CodeInvalid, Attribute: "memory", Message: "must be at least 1024"}},
		{"not-found", sdk.Errorf(sdk.CodeNotFound, "instance %s is gone", "alice/web"), &sdk.Error{Code: sdk.CodeNotFound, Message: "instance alice/web is gone"}},
		{"unavailable", &sdk.Error{Code: sdk.CodeUnavailable, Message: "containerd is down"}, &sdk.Error{Code: sdk.CodeUnavailable, Message: "containerd is down"}},
		{"internal-with-cause", &sdk.Error{Code: sdk.CodeInternal, Err: cause}, &sdk.Error{Code: sdk.CodeInternal, Message: "disk on fire"}},
		{"plain", cause, &sdk.Error{Code: sdk.CodeInternal, Message: "disk on fire"}},
		{"wrapped", fmt.Errorf("mount: %w", sdk.InvalidAttribute("size", "too big")), &sdk.Error{Code: sdk.CodeInvalid, Attribute: "size", Message: "mount: invalid: size: too big"}},
		{"plugin-context", fmt.Errorf("dial: %w", context.DeadlineExceeded), &sdk.Error{Code: sdk.CodeUnavailable, Message: "dial: context deadline exceeded"}},
		{"unknown-code", &sdk.Error{Code: "weird", Message: "odd"}, &sdk.Error{Code: sdk.CodeInternal, Message: "odd"}},
		{"unsupported", sdk.Errorf(sdk.CodeUnsupported, "no checkpoints in directory mode"), &sdk.Error{Code: sdk.CodeUnsupported, Message: "no checkpoints in directory mode"}},
		{"transient", &sdk.Error{Code: sdk.CodeInvalid, Attribute: "module", Message: "not there yet", Transient: true}, &sdk.Error{Code: sdk.CodeInvalid, Attribute: "module", Message: "not there yet", Transient: true}},
	}
	rtImpl, fsImpl, lImpl := &fakeRuntime{}, &fakeStateFS{}, &fakeLedger{}
	rt, fs, l := sdktest.Runtime(t, rtImpl), sdktest.StateFS(t, fsImpl), sdktest.Ledger(t, lImpl)
	noop := func([]byte) error { return nil }
	calls := map[string]func(ctx context.Context) error{
		"runtime.info":        func(ctx context.Context) error { _, err := rt.Info(ctx); return err },
		"runtime.configure":   func(ctx context.Context) error { return rt.Configure(ctx, testConfigure) },
		"runtime.prepare":     func(ctx context.Context) error { _, err := rt.PrepareTenant(ctx, &testTenant); return err },
		"runtime.release":     func(ctx context.Context) error { return rt.ReleaseTenant(ctx, testHandle) },
		"runtime.validate":    func(ctx context.Context) error { return rt.Validate(ctx, &testStart) },
		"runtime.start":       func(ctx context.Context) error { _, err := rt.Start(ctx, &testStart); return err },
		"runtime.stop":        func(ctx context.Context) error { return rt.Stop(ctx, testHandle, time.Second) },
		"runtime.destroy":     func(ctx context.Context) error { return rt.Destroy(ctx, testHandle) },
		"runtime.inspect":     func(ctx context.Context) error { _, err := rt.Inspect(ctx, testHandle); return err },
		"runtime.recover":     func(ctx context.Context) error { _, err := rt.Recover(ctx, testHandle); return err },
		"runtime.logs":        func(ctx context.Context) error { return rt.Logs(ctx, testHandle, sdk.LogOptions{}, noop) },
		"statefs.info":        func(ctx context.Context) error { _, err := fs.Info(ctx); return err },
		"statefs.configure":   func(ctx context.Context) error { return fs.Configure(ctx, testConfigure) },
		"statefs.provision":   func(ctx context.Context) error { _, err := fs.Provision(ctx, &testProvision); return err },
		"statefs.mount":       func(ctx context.Context) error { _, err := fs.Mount(ctx, testHandle); return err },
		"statefs.unmount":     func(ctx context.Context) error { return fs.Unmount(ctx, testHandle) },
		"statefs.hash":        func(ctx context.Context) error { _, err := fs.Hash(ctx, testHandle); return err },
		"statefs.usage":       func(ctx context.Context) error { _, err := fs.Usage(ctx, testHandle); return err },
		"statefs.checkpoint":  func(ctx context.Context) error { _, err := fs.Checkpoint(ctx, testHandle, "c"); return err },
		"statefs.checkpoints": func(ctx context.Context) error { _, err := fs.Checkpoints(ctx, testHandle); return err },
		"statefs.rollback":    func(ctx context.Context) error { return fs.Rollback(ctx, testHandle, "c") },
		"statefs.recover":     func(ctx context.Context) error { _, err := fs.Recover(ctx, testHandle); return err },
		"statefs.deprovision": func(ctx context.Context) error { return fs.Deprovision(ctx, testHandle) },
		"ledger.info":         func(ctx context.Context) error { _, err := l.Info(ctx); return err },
		"ledger.configure":    func(ctx context.Context) error { return l.Configure(ctx, testConfigure) },
		"ledger.events": func(ctx context.Context) error {
			return l.Events(ctx, "", func(sdk.LeaseEvent) error { return nil })
		},
		"ledger.reply": func(ctx context.Context) error { return l.Reply(ctx, sdk.LeaseReply{Lease: "L"}) },
	}
	sentinels := map[sdk.Code]error{
		sdk.CodeInvalid: sdk.ErrInvalid, sdk.CodeNotFound: sdk.ErrNotFound,
		sdk.CodeUnavailable: sdk.ErrUnavailable, sdk.CodeInternal: sdk.ErrInternal,
		sdk.CodeUnsupported: sdk.ErrUnsupported,
	}
	for _, tt := range tests {
		hook := func(context.Context) error { return tt.err }
		rtImpl.setHook(hook)
		fsImpl.setHook(hook)
		lImpl.setHook(hook)
		for method, call := range calls {
			t.Run(tt.name+"/"+method, func(t *testing.T) {
				err := call(context.Background())
				var got *sdk.Error
				if !errors.As(err, &got) {
					t.Fatalf("error %v (%T) is no *sdk.Error", err, err)
				}
				if got.Code != tt.want.Code || got.Attribute != tt.want.Attribute || got.Message != tt.want.Message || got.Transient != tt.want.Transient {
					t.Errorf("got %+v, want %+v", got, tt.want)
				}
				if got.Error() != tt.want.Error() {
					t.Errorf("Error() = %q, want %q", got.Error(), tt.want.Error())
				}
				for code, sentinel := range sentinels {
					if errors.Is(err, sentinel) != (code == tt.want.Code) {
						t.Errorf("errors.Is(err, %s sentinel) = %v", code, !(code == tt.want.Code))
					}
				}
				if sdk.Retryable(err) != sdk.Retryable(tt.want) {
					t.Errorf("Retryable = %v across the wire, %v before", sdk.Retryable(err), sdk.Retryable(tt.want))
				}
				if sdk.CodeOf(err) != tt.want.Code {
					t.Errorf("CodeOf = %s, want %s", sdk.CodeOf(err), tt.want.Code)
				}
			})
		}
	}
}

func TestDeadlinePropagates(t *testing.T) {
	impl := &fakeRuntime{}
	rt := sdktest.Runtime(t, impl)
	sawDeadline := make(chan bool, 1)
	impl.setHook(func(ctx context.Context) error {
		_, ok := ctx.Deadline()
		sawDeadline <- ok
		<-ctx.Done()
		return ctx.Err()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := rt.Inspect(ctx, testHandle)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Inspect = %v, want context.DeadlineExceeded", err)
	}
	if !<-sawDeadline {
		t.Error("plugin's context had no deadline")
	}
}

func TestStreamsEnd(t *testing.T) {
	stop := errors.New("stop reading")
	tests := []struct {
		name   string
		stream func(ctx context.Context, t *testing.T, rt sdk.Runtime, l sdk.Ledger, cancel context.CancelFunc) error
		want   error
	}{
		{"logs-fn-error", func(ctx context.Context, _ *testing.T, rt sdk.Runtime, _ sdk.Ledger, _ context.CancelFunc) error {
			return rt.Logs(ctx, testHandle, sdk.LogOptions{Follow: true}, func([]byte) error { return stop })
		}, stop},
		{"logs-cancel", func(ctx context.Context, _ *testing.T, rt sdk.Runtime, _ sdk.Ledger, cancel context.CancelFunc) error {
			n := 0
			return rt.Logs(ctx, testHandle, sdk.LogOptions{Follow: true}, func([]byte) error {
				if n++; n == len(testChunks) {
					cancel()
				}
				return nil
			})
		}, context.Canceled},
		{"watch-cancel", func(ctx context.Context, t *testing.T, rt sdk.Runtime, _ sdk.Ledger, cancel context.CancelFunc) error {
			n := 0
			return rt.(sdk.ExitWatcher).WatchExits(ctx, func() {}, func(sdk.ExitEvent) error {
				if n++; n == len(testExits) {
					cancel()
				}
				return nil
			})
		}, context.Canceled},
		{"events-fn-error", func(ctx context.Context, _ *testing.T, _ sdk.Runtime, l sdk.Ledger, _ context.CancelFunc) error {
			return l.Events(ctx, "", func(sdk.LeaseEvent) error { return stop })
		}, stop},
		{"events-cancel", func(ctx context.Context, t *testing.T, _ sdk.Runtime, l sdk.Ledger, cancel context.CancelFunc) error {
			var got []string
			err := l.Events(ctx, "c1", func(e sdk.LeaseEvent) error {
				if got = append(got, e.Cursor); len(got) == 2 {
					cancel()
				}
				return nil
			})
			if strings.Join(got, ",") != "c2,c3" {
				t.Errorf("events after c1: %v", got)
			}
			return err
		}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rtImpl, lImpl := &fakeRuntime{}, &fakeLedger{}
			pluginDone := make(chan error, 2)
			hook := func(ctx context.Context) error {
				go func() { <-ctx.Done(); pluginDone <- ctx.Err() }()
				return nil
			}
			rtImpl.setHook(hook)
			lImpl.setHook(hook)
			rt, l := sdktest.Runtime(t, rtImpl), sdktest.Ledger(t, lImpl)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := tt.stream(ctx, t, rt, l, cancel); !errors.Is(err, tt.want) {
				t.Errorf("stream returned %v, want %v", err, tt.want)
			}
			if err := <-pluginDone; !errors.Is(err, context.Canceled) {
				t.Errorf("plugin's stream context ended with %v, want context.Canceled", err)
			}
		})
	}
}

package sdktest_test

import (
	"context"
	"sync"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// recorder remembers the arguments of a fake's last call, and runs hook
// (when set) in every call to return its error.
type recorder struct {
	mu   sync.Mutex
	seen []any
	hook func(ctx context.Context) error
}

func (r *recorder) call(ctx context.Context, args ...any) error {
	r.mu.Lock()
	r.seen = args
	hook := r.hook
	r.mu.Unlock()
	if hook == nil {
		return nil
	}
	return hook(ctx)
}

func (r *recorder) lastArgs() []any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen
}

func (r *recorder) setHook(h func(ctx context.Context) error) {
	r.mu.Lock()
	r.hook = h
	r.mu.Unlock()
}

var (
	testInfo = sdk.Info{
		Name:    "fake",
		Kind:    sdk.KindRuntime,
		Version: "1.2.3",
		Schema: sdk.Schema{
			Attributes: []sdk.Attribute{
				{Name: "path", Type: sdk.TypeString, Required: true, Description: "where"},
				{Name: "size", Type: sdk.TypeNumber},
				{Name: "debug", Type: sdk.TypeBool},
				{Name: "hosts", Type: sdk.TypeStringList},
				{Name: "labels", Type: sdk.TypeStringMap},
			},
			Blocks: []sdk.Block{
				{Name: "registry", Nesting: sdk.NestingSingle, Required: true, Description: "pull settings", Schema: sdk.Schema{
					Attributes: []sdk.Attribute{{Name: "url", Type: sdk.TypeString, Required: true}},
					Blocks: []sdk.Block{{Name: "mirror", Nesting: sdk.NestingList, Schema: sdk.Schema{
						Attributes: []sdk.Attribute{{Name: "url", Type: sdk.TypeString}},
					}}},
				}},
				{Name: "pool", Nesting: sdk.NestingMap, Schema: sdk.Schema{
					Attributes: []sdk.Attribute{{Name: "first", Type: sdk.TypeNumber}},
				}},
			},
		},
		InstanceSchema: sdk.Schema{
			Attributes: []sdk.Attribute{{Name: "entrypoint", Type: sdk.TypeStringList}, {Name: "uid", Type: sdk.TypeNumber}},
			Blocks:     []sdk.Block{{Name: "port", Nesting: sdk.NestingMap, Schema: sdk.Schema{Attributes: []sdk.Attribute{{Name: "container", Type: sdk.TypeNumber, Required: true}}}}},
		},
		Capabilities: sdk.Capabilities{
			Scope:     sdk.ScopeTenant,
			Artifacts: []string{sdk.ArtifactWasm, sdk.ArtifactOCI},
			Isolation: []string{sdk.IsolationUser, sdk.IsolationSeccomp, "custom"},
			Permissions: []sdk.PermissionSpec{
				{Name: sdk.PermClock, Description: "real time"},
				{Name: "net.connect", Description: "outbound TCP", Params: []sdk.PermissionParam{
					{Name: "host", Required: true, Description: "where to"}, {Name: "port"},
				}},
			},
			Features: []string{sdk.FeatureTenantLifecycle, sdk.FeatureValidate},
		},
	}
	testHandle = sdk.Handle{Version: 3, Data: []byte{0, 1, 2, 0xff}}
	testTime   = time.Date(2026, 8, 17, 21, 24, 33, 123456789, time.UTC)
	testStatus = sdk.Status{
		State:      sdk.StateExited,
		ExitCode:   -2,
		Pid:        4242,
		StartedAt:  testTime,
		FinishedAt: testTime.Add(90 * time.Minute),
		Message:    "killed by OOM",
	}
	testUsage       = sdk.Usage{Bytes: 5 << 20, Inodes: 12, BytesLimit: 16 << 20, InodesLimit: 4096}
	testCheckpoints = []sdk.Checkpoint{
		{Name: "before-upgrade", CreatedAt: testTime, Root: []byte{1, 2, 3}, Bytes: 4 << 20, Inodes: 9, Mount: "/var/lib/kigumi/state/a/.mounts/web/before-upgrade"},
		{Name: "no-root"},
	}
	testChunks = [][]byte{[]byte("hello "), {0, 0xfe}, []byte("world\n")}
	testEvents = []sdk.LeaseEvent{
		{ID: "tx-A1", Cursor: "c1", Kind: sdk.LeaseAcquired, Lease: "L1", Tenant: "alice", Spec: []byte(`instance "web" {}`), ExpiresAt: testTime,
			Ledger: 9, LedgerTime: testTime.Add(-time.Hour), ExpiresLedger: 909},
		{ID: "tx-B2", Cursor: "c2", Kind: sdk.LeaseExtended, Lease: "L1", Tenant: "alice", ExpiresAt: testTime.Add(time.Hour)},
		{ID: "tx-C3", Cursor: "c3", Kind: sdk.LeaseTerminated, Lease: "L1", Tenant: "alice"},
	}
)

// testExits are the exits fakeRuntime's WatchExits reports.
var testExits = []sdk.ExitEvent{
	{Instance: sdk.Instance{Tenant: "alice", Name: "web"}, Handle: testHandle, Status: testStatus},
	{Instance: sdk.Instance{Tenant: "bob", Name: "db"}, Handle: sdk.Handle{Version: 3, Data: []byte{0, 0xff}},
		Status: sdk.Status{State: sdk.StateExited, Cause: sdk.CauseOOM, ExitCode: 137, Signal: 9, Pid: 77, StartedAt: testTime,
			FinishedAt: testTime.Add(time.Second), Message: "memory limit"}},
}

// upgraded is what the fakes' Recover returns for h.
func upgraded(h sdk.Handle) sdk.Handle {
	return sdk.Handle{Version: h.Version + 1, Data: append([]byte("v2:"), h.Data...)}
}

// fakeRuntime is a Runtime that records its calls and returns fixed values.
// Logs sends testChunks; with Follow it then waits for ctx to end.
type fakeRuntime struct{ recorder }

func (f *fakeRuntime) Info(ctx context.Context) (sdk.Info, error) {
	return testInfo, f.call(ctx)
}

func (f *fakeRuntime) Configure(ctx context.Context, req sdk.ConfigureRequest) error {
	return f.call(ctx, req)
}

func (f *fakeRuntime) PrepareTenant(ctx context.Context, req *sdk.TenantRequest) (sdk.Handle, error) {
	return testHandle, f.call(ctx, *req)
}

func (f *fakeRuntime) ReleaseTenant(ctx context.Context, h sdk.Handle) error {
	return f.call(ctx, h)
}

func (f *fakeRuntime) Validate(ctx context.Context, req *sdk.StartRequest) error {
	return f.call(ctx, *req)
}

func (f *fakeRuntime) Start(ctx context.Context, req *sdk.StartRequest) (sdk.Handle, error) {
	return testHandle, f.call(ctx, *req)
}

func (f *fakeRuntime) Stop(ctx context.Context, h sdk.Handle, timeout time.Duration) error {
	return f.call(ctx, h, timeout)
}

func (f *fakeRuntime) Destroy(ctx context.Context, h sdk.Handle) error {
	return f.call(ctx, h)
}

func (f *fakeRuntime) Inspect(ctx context.Context, h sdk.Handle) (sdk.Status, error) {
	return testStatus, f.call(ctx, h)
}

func (f *fakeRuntime) Recover(ctx context.Context, h sdk.Handle) (sdk.Handle, error) {
	return upgraded(h), f.call(ctx, h)
}

func (f *fakeRuntime) Logs(ctx context.Context, h sdk.Handle, opts sdk.LogOptions, fn func([]byte) error) error {
	if err := f.call(ctx, h, opts); err != nil {
		return err
	}
	for _, c := range testChunks {
		if err := fn(c); err != nil {
			return err
		}
	}
	if opts.Follow {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// WatchExits reports testExits once ready, then waits for ctx to end.
func (f *fakeRuntime) WatchExits(ctx context.Context, ready func(), fn func(sdk.ExitEvent) error) error {
	if err := f.call(ctx); err != nil {
		return err
	}
	ready()
	for _, e := range testExits {
		if err := fn(e); err != nil {
			return err
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

// fakeStateFS is a StateFS that records its calls and returns fixed values.
type fakeStateFS struct{ recorder }

func (f *fakeStateFS) Info(ctx context.Context) (sdk.Info, error) {
	return testInfo, f.call(ctx)
}

func (f *fakeStateFS) Configure(ctx context.Context, req sdk.ConfigureRequest) error {
	return f.call(ctx, req)
}

func (f *fakeStateFS) Provision(ctx context.Context, req *sdk.ProvisionRequest) (sdk.Handle, error) {
	return testHandle, f.call(ctx, *req)
}

func (f *fakeStateFS) Mount(ctx context.Context, h sdk.Handle) (sdk.Mount, error) {
	return testMount, f.call(ctx, h)
}

func (f *fakeStateFS) Usage(ctx context.Context, h sdk.Handle) (sdk.Usage, error) {
	return testUsage, f.call(ctx, h)
}

func (f *fakeStateFS) Checkpoint(ctx context.Context, h sdk.Handle, name string) (sdk.Checkpoint, error) {
	return testCheckpoints[0], f.call(ctx, h, name)
}

func (f *fakeStateFS) Checkpoints(ctx context.Context, h sdk.Handle) ([]sdk.Checkpoint, error) {
	return testCheckpoints, f.call(ctx, h)
}

func (f *fakeStateFS) Rollback(ctx context.Context, h sdk.Handle, name string) error {
	return f.call(ctx, h, name)
}

func (f *fakeStateFS) MountCheckpoint(ctx context.Context, h sdk.Handle, name string) (sdk.Mount, error) {
	return testMount, f.call(ctx, h, name)
}

func (f *fakeStateFS) UnmountCheckpoint(ctx context.Context, h sdk.Handle, name string) error {
	return f.call(ctx, h, name)
}

func (f *fakeStateFS) Unmount(ctx context.Context, h sdk.Handle) error {
	return f.call(ctx, h)
}

func (f *fakeStateFS) Hash(ctx context.Context, h sdk.Handle) ([]byte, error) {
	return []byte{0xde, 0xad, 0xbe, 0xef}, f.call(ctx, h)
}

func (f *fakeStateFS) Recover(ctx context.Context, h sdk.Handle) (sdk.Handle, error) {
	return upgraded(h), f.call(ctx, h)
}

func (f *fakeStateFS) Deprovision(ctx context.Context, h sdk.Handle) error {
	return f.call(ctx, h)
}

// fakeLedger is a Ledger that records its calls. Events sends the
// testEvents after the cursor, then waits for ctx to end.
type fakeLedger struct{ recorder }

func (f *fakeLedger) Info(ctx context.Context) (sdk.Info, error) {
	return testInfo, f.call(ctx)
}

func (f *fakeLedger) Configure(ctx context.Context, req sdk.ConfigureRequest) error {
	return f.call(ctx, req)
}

func (f *fakeLedger) Events(ctx context.Context, cursor string, fn func(sdk.LeaseEvent) error) error {
	if err := f.call(ctx, cursor); err != nil {
		return err
	}
	send := cursor == ""
	for _, e := range testEvents {
		if send {
			if err := fn(e); err != nil {
				return err
			}
		}
		send = send || e.Cursor == cursor
	}
	<-ctx.Done()
	return ctx.Err()
}

func (f *fakeLedger) Reply(ctx context.Context, r sdk.LeaseReply) error {
	return f.call(ctx, r)
}

package pluginhost_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// fakeEnv, when set, makes the test binary serve the fake plugin instead of
// running tests. TestMain sets it, so every plugin process the tests launch
// (the test binary itself, re-executed or copied) inherits it.
const fakeEnv = "KIGUMI_PLUGINHOST_FAKE_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(fakeEnv) != "" {
		serveFake()
		return
	}
	if err := os.Setenv(fakeEnv, "1"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// serveFake serves the fake as the kind and name it was launched as: from
// the arguments "plugin serve <kind> <name>" of a builtin, or from the file
// name kigumi-<kind>-<name> of a third-party plugin.
func serveFake() {
	var kind, name string
	if len(os.Args) == 5 && os.Args[1] == "plugin" && os.Args[2] == "serve" {
		kind, name = os.Args[3], os.Args[4]
	} else {
		kind, name, _ = strings.Cut(strings.TrimPrefix(filepath.Base(os.Args[0]), "kigumi-"), "-")
	}
	logger := sdk.NewLogger()
	f := &fake{kind: sdk.Kind(kind), name: name, logger: logger}
	opts := sdk.ServeOpts{Logger: logger}
	switch f.kind {
	case sdk.KindRuntime:
		opts.Runtime = f
	case sdk.KindStateFS:
		opts.StateFS = f
	case sdk.KindLedger:
		opts.Ledger = f
	}
	sdk.Serve(opts)
}

// fake is a plugin of every kind. Its Info reports the kind and name it was
// launched as, except that the plugin named "mislabeled" claims to be a
// ledger and the one named "impostor" claims another name. Configure logs a
// warning; Start with Args ["exit"] exits the process with status 3;
// Inspect reports the process id; Logs sends one chunk and follows until
// cancelled.
type fake struct {
	kind   sdk.Kind
	name   string
	logger hclog.Logger
}

func (f *fake) Info(context.Context) (sdk.Info, error) {
	info := sdk.Info{Name: f.name, Kind: f.kind, Version: "0.0.1"}
	switch f.name {
	case "mislabeled":
		info.Kind = sdk.KindLedger
	case "impostor":
		info.Name = "someone-else"
	}
	return info, nil
}

func (f *fake) Configure(_ context.Context, req sdk.ConfigureRequest) error {
	f.logger.Warn("configured by host", "host", req.Host)
	return nil
}

func (f *fake) Start(_ context.Context, req *sdk.StartRequest) (sdk.Handle, error) {
	if len(req.Args) > 0 && req.Args[0] == "exit" {
		os.Exit(3)
	}
	return sdk.Handle{Version: 1, Data: []byte(req.Instance.String())}, nil
}

func (f *fake) Stop(context.Context, sdk.Handle, time.Duration) error { return nil }

func (f *fake) Destroy(context.Context, sdk.Handle) error { return nil }

func (f *fake) Inspect(context.Context, sdk.Handle) (sdk.Status, error) {
	return sdk.Status{State: sdk.StateRunning, Pid: os.Getpid()}, nil
}

func (f *fake) Recover(_ context.Context, h sdk.Handle) (sdk.Handle, error) { return h, nil }

func (f *fake) Logs(ctx context.Context, _ sdk.Handle, _ sdk.LogOptions, fn func([]byte) error) error {
	if err := fn([]byte("started\n")); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}

func (f *fake) Provision(_ context.Context, req *sdk.ProvisionRequest) (sdk.Handle, error) {
	return sdk.Handle{Version: 1, Data: []byte(req.Dir)}, nil
}

func (f *fake) Mount(_ context.Context, h sdk.Handle) (sdk.Mount, error) {
	return sdk.Mount{Source: string(h.Data)}, nil
}

func (f *fake) Unmount(context.Context, sdk.Handle) error { return nil }

func (f *fake) Hash(_ context.Context, h sdk.Handle) ([]byte, error) { return h.Data, nil }

func (f *fake) Deprovision(context.Context, sdk.Handle) error { return nil }

func (f *fake) Events(ctx context.Context, cursor string, fn func(sdk.LeaseEvent) error) error {
	if err := fn(sdk.LeaseEvent{Cursor: cursor + "+1", Kind: sdk.LeaseAcquired}); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}

func (f *fake) Reply(context.Context, sdk.LeaseReply) error { return nil }

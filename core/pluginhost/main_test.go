package pluginhost_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

// TestMain makes the test binary the trampoline when run as such, the fake
// plugin when a plugin host started it (go-plugin's handshake cookie is
// set), a probe of a socket (see probeEnv) or a plugin host (see hostEnv);
// else it runs the tests.
func TestMain(m *testing.M) {
	switch {
	case len(os.Args) > 1 && os.Args[1] == pluginhost.ExecCommand:
		os.Exit(pluginhost.ExecMain(os.Args[2:]))
	case os.Getenv(sdk.Handshake.MagicCookieKey) == sdk.Handshake.MagicCookieValue:
		serveFake()
		return
	case os.Getenv(probeEnv) != "":
		os.Exit(probe(os.Getenv(probeEnv)))
	case os.Getenv(hostEnv) != "":
		os.Exit(serveHost(os.Getenv(hostEnv)))
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
	if len(req.Args) > 0 {
		switch req.Args[0] {
		case "exit":
			os.Exit(3)
		case "report":
			data, err := json.Marshal(selfReport())
			if err != nil {
				return sdk.Handle{}, err
			}
			return sdk.Handle{Version: 1, Data: data}, nil
		}
	}
	return sdk.Handle{Version: 1, Data: []byte(req.Instance.String())}, nil
}

// report is what a plugin process sees of itself.
type report struct {
	Pid int
	// Status holds the Uid, Gid, Groups, NoNewPrivs and CapEff lines of
	// /proc/self/status, by name.
	Status     map[string]string
	Cgroup     string
	Env        []string
	FDs        map[int]string // fd -> its /proc/self/fd link
	GOMAXPROCS int
	Cwd        string
	SocketDir  string
}

func selfReport() report {
	r := report{Pid: os.Getpid(), Status: map[string]string{}, Env: os.Environ(),
		FDs: map[int]string{}, GOMAXPROCS: runtime.GOMAXPROCS(0), SocketDir: os.Getenv("PLUGIN_UNIX_SOCKET_DIR")}
	status, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "Uid", "Gid", "Groups", "NoNewPrivs", "CapEff":
			r.Status[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	cg, _ := os.ReadFile("/proc/self/cgroup")
	r.Cgroup = string(cg)
	r.Cwd, _ = os.Getwd()
	// Read the directory in one go, so that its own fd is closed before the
	// links are read.
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			r.FDs[fd] = link
		}
	}
	return r
}

// probeEnv, set to a socket path, makes the test binary try to connect to
// it and exit 0 on success, probeDenied when permission is denied, and 1
// otherwise.
const probeEnv = "KIGUMI_PLUGINHOST_PROBE"

// probeDenied is the exit status of a probe refused with EACCES.
const probeDenied = 13

func probe(path string) int {
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		return 0
	}
	fmt.Fprintln(os.Stderr, err)
	if errors.Is(err, syscall.EACCES) {
		return probeDenied
	}
	return 1
}

func (f *fake) PrepareTenant(_ context.Context, req *sdk.TenantRequest) (sdk.Handle, error) {
	return sdk.Handle{Version: 1, Data: []byte(req.Tenant)}, nil
}

func (f *fake) ReleaseTenant(context.Context, sdk.Handle) error { return nil }

func (f *fake) Validate(context.Context, *sdk.StartRequest) error { return nil }

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

func (f *fake) Usage(context.Context, sdk.Handle) (sdk.Usage, error) {
	return sdk.Usage{}, sdk.ErrUnsupported
}

func (f *fake) Checkpoint(context.Context, sdk.Handle, string) (sdk.Checkpoint, error) {
	return sdk.Checkpoint{}, sdk.ErrUnsupported
}

func (f *fake) Checkpoints(context.Context, sdk.Handle) ([]sdk.Checkpoint, error) {
	return nil, sdk.ErrUnsupported
}

func (f *fake) Rollback(context.Context, sdk.Handle, string) error { return sdk.ErrUnsupported }

func (f *fake) Deprovision(context.Context, sdk.Handle) error { return nil }

func (f *fake) Events(ctx context.Context, cursor string, fn func(sdk.LeaseEvent) error) error {
	if err := fn(sdk.LeaseEvent{Cursor: cursor + "+1", Kind: sdk.LeaseAcquired}); err != nil {
		return err
	}
	<-ctx.Done()
	return ctx.Err()
}

func (f *fake) Reply(context.Context, sdk.LeaseReply) error { return nil }

// hostEnv, set to a JSON pluginhost.Tenant, makes the test binary a plugin
// host that launches the builtin fake runtime in the tenant's scope, prints
// the plugin's pid, and waits to be killed.
const hostEnv = "KIGUMI_PLUGINHOST_HOST"

func serveHost(tenantJSON string) int {
	var tn pluginhost.Tenant
	if err := json.Unmarshal([]byte(tenantJSON), &tn); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	h := pluginhost.New(hclog.NewNullLogger(), pluginhost.WithBuiltins(pluginhost.Builtin{Kind: sdk.KindRuntime, Name: "fake"}))
	rt, err := h.Runtime(context.Background(), "fake", pluginhost.Scope{Tenant: &tn})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	st, err := rt.Inspect(context.Background(), sdk.Handle{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(st.Pid)
	select {}
}

// Package pluginhost launches Kigumi's plugins as child processes and hands
// out SDK clients that talk to them over gRPC. A plugin is either built into
// the running binary (re-executed as "<exe> plugin serve <kind> <name>") or a
// third-party executable in the plugin directory.
package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// Builtin names a first-party plugin compiled into the running binary; the
// host launches it by re-executing the binary as:
// <exe> plugin serve <kind> <name>
type Builtin struct {
	Kind sdk.Kind
	Name string
}

// Option configures a Host.
type Option func(*Host)

// WithExecutable sets the binary that builtins are re-executed from. The
// default is os.Executable().
func WithExecutable(path string) Option {
	return func(h *Host) { h.exe = path }
}

// WithBuiltins adds builtin plugins.
func WithBuiltins(b ...Builtin) Option {
	return func(h *Host) { h.builtins = append(h.builtins, b...) }
}

// WithPluginDir sets the directory of third-party plugins: executables named
// kigumi-<kind>-<name>. Each must be a regular file owned by root (or by the
// host's own user) and not writable by group or others.
func WithPluginDir(dir string) Option {
	return func(h *Host) { h.dir = dir }
}

// Host launches plugins lazily, once per kind and name, and relaunches one
// whose process has exited. It is safe for concurrent use.
type Host struct {
	logger   hclog.Logger
	exe      string
	builtins []Builtin
	dir      string

	mu     sync.Mutex
	closed bool
	// plugins holds the launched plugins by kind and name.
	plugins map[Builtin]*launched
}

// launched is a started plugin process and its dispensed client.
type launched struct {
	client *plugin.Client
	proc   *process
	impl   sdk.Plugin
}

// New returns a Host that logs, and forwards its plugins' logs, to logger.
func New(logger hclog.Logger, opts ...Option) *Host {
	h := &Host{logger: logger, plugins: make(map[Builtin]*launched)}
	for _, o := range opts {
		o(h)
	}
	return h
}

// Runtime returns a client of the runtime plugin name, launching it if it is
// not running.
func (h *Host) Runtime(ctx context.Context, name string) (sdk.Runtime, error) {
	p, err := h.get(ctx, sdk.KindRuntime, name)
	if err != nil {
		return nil, err
	}
	return p.(sdk.Runtime), nil
}

// StateFS returns a client of the statefs plugin name, launching it if it is
// not running.
func (h *Host) StateFS(ctx context.Context, name string) (sdk.StateFS, error) {
	p, err := h.get(ctx, sdk.KindStateFS, name)
	if err != nil {
		return nil, err
	}
	return p.(sdk.StateFS), nil
}

// Ledger returns a client of the ledger plugin name, launching it if it is
// not running.
func (h *Host) Ledger(ctx context.Context, name string) (sdk.Ledger, error) {
	p, err := h.get(ctx, sdk.KindLedger, name)
	if err != nil {
		return nil, err
	}
	return p.(sdk.Ledger), nil
}

// Close kills every plugin process the host started. Later calls of the
// host's methods fail with CodeUnavailable.
func (h *Host) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for k, l := range h.plugins {
		l.client.Kill()
		delete(h.plugins, k)
	}
}

func (h *Host) get(ctx context.Context, kind sdk.Kind, name string) (sdk.Plugin, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, &sdk.Error{Code: sdk.CodeUnavailable, Message: "plugin host is closed"}
	}
	k := Builtin{Kind: kind, Name: name}
	if l := h.plugins[k]; l != nil {
		if !l.proc.exited() {
			return l.impl, nil
		}
		l.client.Kill()
		delete(h.plugins, k)
	}
	l, err := h.launch(ctx, k)
	if err != nil {
		return nil, err
	}
	h.plugins[k] = l
	return l.impl, nil
}

func (h *Host) launch(ctx context.Context, k Builtin) (*launched, error) {
	path, args, err := h.resolve(k)
	if err != nil {
		return nil, err
	}
	label := fmt.Sprintf("plugin %s %q", k.Kind, k.Name)
	proc := &process{label: label, path: path, args: args, done: make(chan struct{})}
	logger := h.logger.Named(string(k.Kind) + "-" + k.Name)
	stdio := logger.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true})
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.PluginSets(),
		RunnerFunc:       proc.runner,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
		SyncStdout:       stdio,
		SyncStderr:       stdio,
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithChainUnaryInterceptor(proc.unaryInterceptor),
			grpc.WithChainStreamInterceptor(proc.streamInterceptor),
		},
	})
	impl, err := dispense(ctx, client, k, label)
	if err != nil {
		client.Kill()
		return nil, err
	}
	return &launched{client: client, proc: proc, impl: impl}, nil
}

// dispense starts the plugin process, dispenses k's client and checks that
// the plugin says it is k.
func dispense(ctx context.Context, client *plugin.Client, k Builtin, label string) (sdk.Plugin, error) {
	rpc, err := client.Client()
	if err != nil {
		return nil, &sdk.Error{Code: sdk.CodeUnavailable, Message: fmt.Sprintf("%s: start: %v", label, err), Err: err}
	}
	raw, err := rpc.Dispense(string(k.Kind))
	if err != nil {
		return nil, &sdk.Error{Code: sdk.CodeUnavailable, Message: fmt.Sprintf("%s: dispense: %v", label, err), Err: err}
	}
	impl := raw.(sdk.Plugin)
	info, err := impl.Info(ctx)
	if err != nil {
		msg := err.Error()
		var e *sdk.Error
		if errors.As(err, &e) && e.Message != "" {
			msg = e.Message
		}
		return nil, &sdk.Error{Code: sdk.CodeOf(err), Message: fmt.Sprintf("%s: info: %s", label, msg), Err: err}
	}
	if info.Kind != k.Kind || info.Name != k.Name {
		return nil, sdk.Errorf(sdk.CodeInvalid, "%s: the plugin reports itself as %s %q", label, info.Kind, info.Name)
	}
	return impl, nil
}

// validName matches the plugin names the host accepts.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// resolve returns the executable and arguments that serve k: a builtin
// first, else a file in the plugin directory.
func (h *Host) resolve(k Builtin) (string, []string, error) {
	if !validName.MatchString(k.Name) {
		return "", nil, sdk.Errorf(sdk.CodeInvalid, "invalid %s plugin name %q", k.Kind, k.Name)
	}
	for _, b := range h.builtins {
		if b == k {
			exe := h.exe
			if exe == "" {
				var err error
				if exe, err = os.Executable(); err != nil {
					return "", nil, fmt.Errorf("builtin %s plugin %q: %w", k.Kind, k.Name, err)
				}
			}
			return exe, []string{"plugin", "serve", string(k.Kind), k.Name}, nil
		}
	}
	if h.dir == "" {
		return "", nil, h.notFound(k, "no plugin directory is configured")
	}
	path := filepath.Join(h.dir, "kigumi-"+string(k.Kind)+"-"+k.Name)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil, h.notFound(k, "no file "+path)
	}
	if err != nil {
		return "", nil, fmt.Errorf("%s plugin %q: %w", k.Kind, k.Name, err)
	}
	if err := checkExecutable(fi); err != nil {
		return "", nil, sdk.Errorf(sdk.CodeInvalid, "refusing to run %s plugin %s: %v", k.Kind, path, err)
	}
	return path, nil, nil
}

func (h *Host) notFound(k Builtin, where string) error {
	var names []string
	for _, b := range h.builtins {
		names = append(names, fmt.Sprintf("%s %q", b.Kind, b.Name))
	}
	builtins := "none"
	if len(names) > 0 {
		builtins = strings.Join(names, ", ")
	}
	return sdk.Errorf(sdk.CodeNotFound, "no %s plugin %q: builtins are %s; %s", k.Kind, k.Name, builtins, where)
}

// checkExecutable accepts a regular, executable file owned by root or by
// this process's user and writable by no one else: the host runs it with
// its own privileges.
func checkExecutable(fi fs.FileInfo) error {
	mode := fi.Mode()
	switch {
	case !mode.IsRegular():
		return fmt.Errorf("not a regular file (%s)", mode.Type())
	case mode.Perm()&0o111 == 0:
		return fmt.Errorf("not executable (mode %#o)", mode.Perm())
	case mode.Perm()&0o022 != 0:
		return fmt.Errorf("writable by group or others (mode %#o)", mode.Perm())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("owned by uid %d, neither root nor this process's user", st.Uid)
	}
	return nil
}

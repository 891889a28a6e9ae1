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
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/kigumi/kigumi/core/fstree"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

// sdkModule is the Go module plugins are built against.
const sdkModule = "github.com/kigumi/kigumi/core/sdk/v2"

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

// WithObserver sets a function the host calls, on a goroutine of its own,
// each time a running plugin process exits without being asked to: the
// agent recovers that plugin's instances from their stored handles and
// counts plugin restarts. It should not block for long.
func WithObserver(fn func(Event)) Option {
	return func(h *Host) { h.observer = fn }
}

// WithRestartBackoff sets the delay before relaunching a plugin that
// crashed or failed to start: base after the first failure, doubling with
// each consecutive one up to max, with jitter. The defaults are 250ms and
// 30s. A process that ran for a minute or more resets the count.
func WithRestartBackoff(base, max time.Duration) Option {
	return func(h *Host) { h.backoffBase, h.backoffMax = base, max }
}

// Event reports that a plugin process exited without being asked to.
type Event struct {
	Kind sdk.Kind
	Name string
	// Tenant is the scope's tenant, or "" for the host scope.
	Tenant string
	// Cause is how the process ended, such as "exit status 2" or
	// "signal: killed".
	Cause string
	// Restarts counts the plugin's consecutive failures, this one included:
	// the number of the relaunch that follows.
	Restarts int
	// Delay is how long the host waits before it relaunches the plugin, on
	// the next call that needs it.
	Delay time.Duration
}

// stableRun is how long a plugin process must have run for its failure
// count to start again from zero.
const stableRun = time.Minute

// Host launches plugin processes lazily, one per kind, name and scope, and
// relaunches one whose process has exited, after a backoff. It is safe for
// concurrent use.
type Host struct {
	logger      hclog.Logger
	exe         string
	builtins    []Builtin
	dir         string
	observer    func(Event)
	backoffBase time.Duration
	backoffMax  time.Duration

	mu     sync.Mutex
	closed bool
	// slots holds the plugin processes by kind, name and scope.
	slots map[key]*slot
	// tenants holds the launch settings of each tenant scope in use.
	tenants map[string]*Tenant
}

// key identifies a plugin process: kind, name and scope ("" for the host,
// else the tenant's name).
type key struct {
	kind   sdk.Kind
	name   string
	tenant string
}

// slot is the plugin process of one key, over its relaunches.
type slot struct {
	// sem serializes launches of the key; holding it, a caller may wait.
	sem chan struct{}
	// stop is closed when the slot is closed for good (Close, Release).
	stop chan struct{}

	// Guarded by Host.mu:
	cur       *launched // the latest process, running or not; nil if none
	failures  int       // consecutive failures
	notBefore time.Time // no launch before this
	cause     string    // how the last failure ended
	closed    bool
}

// launched is a started plugin process and its dispensed client.
type launched struct {
	client *plugin.Client
	proc   *process
	impl   sdk.Plugin
	start  time.Time
	// stopping is set, under Host.mu, before the host kills the process.
	stopping bool
	// settled is closed once the host has accounted for the process's exit.
	settled chan struct{}
}

// New returns a Host that logs, and forwards its plugins' logs, to logger.
func New(logger hclog.Logger, opts ...Option) *Host {
	h := &Host{
		logger:      logger,
		backoffBase: 250 * time.Millisecond,
		backoffMax:  30 * time.Second,
		slots:       make(map[key]*slot),
		tenants:     make(map[string]*Tenant),
	}
	for _, o := range opts {
		o(h)
	}
	return h
}

// Runtime returns a client of the runtime plugin name in scope, launching
// its process if it is not running.
func (h *Host) Runtime(ctx context.Context, name string, scope Scope) (sdk.Runtime, error) {
	p, err := h.get(ctx, sdk.KindRuntime, name, scope)
	if err != nil {
		return nil, err
	}
	return p.(sdk.Runtime), nil
}

// StateFS returns a client of the statefs plugin name in scope, launching
// its process if it is not running.
func (h *Host) StateFS(ctx context.Context, name string, scope Scope) (sdk.StateFS, error) {
	p, err := h.get(ctx, sdk.KindStateFS, name, scope)
	if err != nil {
		return nil, err
	}
	return p.(sdk.StateFS), nil
}

// Ledger returns a client of the ledger plugin name in scope, launching its
// process if it is not running.
func (h *Host) Ledger(ctx context.Context, name string, scope Scope) (sdk.Ledger, error) {
	p, err := h.get(ctx, sdk.KindLedger, name, scope)
	if err != nil {
		return nil, err
	}
	return p.(sdk.Ledger), nil
}

// Close stops every plugin process the host started and waits until they
// have exited; the helpers they started detached keep running. Later calls
// of the host's methods fail with CodeUnavailable.
func (h *Host) Close() {
	h.mu.Lock()
	h.closed = true
	stopped := h.detach(func(key) bool { return true })
	h.mu.Unlock()
	kill(stopped)
}

// Release stops the plugin processes of tenant's scope, waits until they
// have exited, and removes the tenant's plugin directory. Call it when the
// tenant is destroyed; a later call in the tenant's scope launches afresh,
// with the Tenant it gives.
func (h *Host) Release(tenant string) error {
	h.mu.Lock()
	t := h.tenants[tenant]
	delete(h.tenants, tenant)
	stopped := h.detach(func(k key) bool { return k.tenant == tenant && tenant != "" })
	h.mu.Unlock()
	kill(stopped)
	if t == nil {
		return nil
	}
	// The tenant's plugin processes wrote below it, in any shape.
	if err := fstree.RemoveAll(context.Background(), t.Dir); err != nil {
		return fmt.Errorf("release tenant %s: %w", tenant, err)
	}
	return nil
}

// detach closes and removes the slots whose keys match, and returns their
// running processes, marked stopping. h.mu must be held.
func (h *Host) detach(match func(key) bool) []*launched {
	var out []*launched
	for k, s := range h.slots {
		if !match(k) {
			continue
		}
		s.closed = true
		close(s.stop)
		if s.cur != nil {
			s.cur.stopping = true
			out = append(out, s.cur)
		}
		delete(h.slots, k)
	}
	return out
}

// kill stops the processes, in parallel, and waits for them.
func kill(ls []*launched) {
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Go(func() { l.client.Kill() })
	}
	wg.Wait()
}

// closedError is the error of calls on a closed host or a released scope.
func closedError(k key) error {
	if k.tenant != "" {
		return &sdk.Error{Code: sdk.CodeUnavailable, Message: "tenant " + k.tenant + "'s plugins were released"}
	}
	return &sdk.Error{Code: sdk.CodeUnavailable, Message: "plugin host is closed"}
}

// slot returns the slot of k, making it if needed, after checking scope
// against the settings the tenant's processes run with.
func (h *Host) slot(k key, scope Scope) (*slot, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, closedError(key{})
	}
	if t := scope.Tenant; t != nil {
		switch prev := h.tenants[t.Name]; {
		case prev == nil:
			c := *t
			c.Cgroup.ProcsFiles = slices.Clone(t.Cgroup.ProcsFiles)
			h.tenants[t.Name] = &c
		case !prev.equal(t):
			return nil, sdk.Errorf(sdk.CodeInvalid, "tenant %s: its plugin processes run as %d:%d in %v with directory %s; release the tenant before launching them differently",
				t.Name, prev.User.UID, prev.User.GID, prev.Cgroup.ProcsFiles, prev.Dir)
		}
	}
	s := h.slots[k]
	if s == nil {
		s = &slot{sem: make(chan struct{}, 1), stop: make(chan struct{})}
		h.slots[k] = s
	}
	return s, nil
}

func (h *Host) get(ctx context.Context, kind sdk.Kind, name string, scope Scope) (sdk.Plugin, error) {
	if scope.Tenant != nil {
		if err := scope.Tenant.validate(); err != nil {
			return nil, &sdk.Error{Code: sdk.CodeInvalid, Message: err.Error(), Err: err}
		}
	}
	k := key{kind: kind, name: name, tenant: scope.tenantName()}
	s, err := h.slot(k, scope)
	if err != nil {
		return nil, err
	}
	if err := s.acquire(ctx, k); err != nil {
		return nil, err
	}
	defer func() { <-s.sem }()

	h.mu.Lock()
	cur := s.cur
	h.mu.Unlock()
	if cur != nil {
		if !cur.proc.exited() {
			return cur.impl, nil
		}
		<-cur.settled // the failure is counted and its backoff set
	}
	h.mu.Lock()
	closed, wait, cause, failures := s.closed, time.Until(s.notBefore), s.cause, s.failures
	h.mu.Unlock()
	if closed {
		return nil, closedError(k)
	}
	if wait > 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-s.stop:
			return nil, closedError(k)
		case <-ctx.Done():
			return nil, &sdk.Error{Code: sdk.CodeUnavailable, Err: ctx.Err(), Message: fmt.Sprintf(
				"%s failed %d times in a row (last: %s); its relaunch was due in %s: %v", label(k), failures, cause, wait.Round(time.Millisecond), ctx.Err())}
		}
	}

	l, err := h.launch(ctx, k, scope)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		var started *startedError
		if errors.As(err, &started) {
			// A process ran and failed: relaunching at once could spin.
			h.fail(s, started.cause, time.Duration(0))
			err = started.err
		}
		return nil, err
	}
	if s.closed {
		go l.client.Kill()
		return nil, closedError(k)
	}
	s.cur = l
	go h.watch(k, s, l)
	return l.impl, nil
}

// acquire takes the slot's launch lock, waiting for it no longer than ctx
// allows.
func (s *slot) acquire(ctx context.Context, k key) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	default:
	}
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-s.stop:
		return closedError(k)
	case <-ctx.Done():
		return &sdk.Error{Code: sdk.CodeUnavailable, Message: fmt.Sprintf("%s: %v", label(k), ctx.Err()), Err: ctx.Err()}
	}
}

// fail counts a failure of the slot's plugin, that ran for ran, and sets
// the backoff before its next launch. h.mu must be held.
func (h *Host) fail(s *slot, cause string, ran time.Duration) (failures int, delay time.Duration) {
	if ran >= stableRun {
		s.failures = 0
	}
	s.failures++
	d := h.backoffBase
	for i := 1; i < s.failures && d < h.backoffMax; i++ {
		d *= 2
	}
	d = min(d, h.backoffMax)
	// Jitter: between half and all of the delay.
	d = d/2 + rand.N(d/2+1)
	s.notBefore, s.cause = time.Now().Add(d), cause
	return s.failures, d
}

// watch waits for the process of l to exit. Unless the host stopped it, it
// counts the failure, sets the backoff, cleans up go-plugin's client and
// tells the observer.
func (h *Host) watch(k key, s *slot, l *launched) {
	<-l.proc.done
	h.mu.Lock()
	stopping := l.stopping
	var failures int
	var delay time.Duration
	if !stopping {
		failures, delay = h.fail(s, l.proc.exit, time.Since(l.start))
	}
	h.mu.Unlock()
	close(l.settled)
	if stopping {
		return
	}
	h.logger.Warn("plugin process exited", "kind", k.kind, "name", k.name, "scope", scopeName(k),
		"cause", l.proc.exit, "restarts", failures, "relaunch_after", delay)
	l.client.Kill() // go-plugin's goroutines and socket directory
	if h.observer != nil {
		h.observer(Event{Kind: k.kind, Name: k.name, Tenant: k.tenant, Cause: l.proc.exit, Restarts: failures, Delay: delay})
	}
}

// label names k's plugin in messages.
func label(k key) string {
	l := fmt.Sprintf("plugin %s %q", k.kind, k.name)
	if k.tenant != "" {
		l += " of tenant " + k.tenant
	}
	return l
}

// scopeName returns "host" or "tenant:NAME".
func scopeName(k key) string {
	if k.tenant == "" {
		return "host"
	}
	return "tenant:" + k.tenant
}

// startedError is a launch failure after the process started.
type startedError struct {
	err   error
	cause string
}

func (e *startedError) Error() string { return e.err.Error() }

func (h *Host) launch(ctx context.Context, k key, scope Scope) (*launched, error) {
	path, args, err := h.resolve(k)
	if err != nil {
		return nil, err
	}
	proc := &process{label: label(k), path: path, args: args, done: make(chan struct{})}
	if t := scope.Tenant; t != nil {
		if proc.self, err = h.self(); err != nil {
			return nil, err
		}
		if err := t.prepareDir(); err != nil {
			return nil, &sdk.Error{Code: sdk.CodeUnavailable, Message: fmt.Sprintf("%s: %v", proc.label, err), Err: err}
		}
		proc.tenant = t
	}
	logName := string(k.kind) + "-" + k.name
	if k.tenant != "" {
		logName += "." + k.tenant
	}
	logger := h.logger.Named(logName)
	stdio := logger.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true})
	cfg := &plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.PluginSets(),
		RunnerFunc:       proc.runner,
		SkipHostEnv:      true,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           logger,
		SyncStdout:       stdio,
		SyncStderr:       stdio,
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithChainUnaryInterceptor(proc.unaryInterceptor),
			grpc.WithChainStreamInterceptor(proc.streamInterceptor),
		},
	}
	if scope.Tenant != nil {
		cfg.UnixSocketConfig = &plugin.UnixSocketConfig{TempDir: scope.Tenant.Dir}
	}
	client := plugin.NewClient(cfg)
	impl, err := dispense(ctx, client, k, proc)
	if err != nil {
		started := proc.cmd != nil && proc.cmd.Process != nil
		client.Kill()
		if started {
			return nil, &startedError{err: err, cause: err.Error()}
		}
		return nil, err
	}
	return &launched{client: client, proc: proc, impl: impl, start: time.Now(), settled: make(chan struct{})}, nil
}

// self returns the executable that holds the trampoline and the builtins.
func (h *Host) self() (string, error) {
	if h.exe != "" {
		return h.exe, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find kigumi's own executable: %w", err)
	}
	return exe, nil
}

// dispense starts the plugin process, dispenses k's client and checks that
// the plugin says it is k.
func dispense(ctx context.Context, client *plugin.Client, k key, proc *process) (sdk.Plugin, error) {
	label := proc.label
	rpc, err := client.Client()
	if err != nil {
		if v, ok := proc.handshake.protocol(); ok && v != sdk.ProtocolVersion {
			return nil, &sdk.Error{Code: sdk.CodeInvalid, Err: err, Message: fmt.Sprintf(
				"plugin %s speaks plugin protocol %d; this kigumi speaks %d; rebuild it against %s",
				filepath.Base(proc.path), v, sdk.ProtocolVersion, sdkModule)}
		}
		return nil, &sdk.Error{Code: sdk.CodeUnavailable, Message: fmt.Sprintf("%s: start: %v", label, err), Err: err}
	}
	raw, err := rpc.Dispense(string(k.kind))
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
	if info.Kind != k.kind || info.Name != k.name {
		return nil, sdk.Errorf(sdk.CodeInvalid, "%s: the plugin reports itself as %s %q", label, info.Kind, info.Name)
	}
	return impl, nil
}

// validName matches the plugin names the host accepts.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// resolve returns the executable and arguments that serve k: a builtin
// first, else a file in the plugin directory.
func (h *Host) resolve(k key) (string, []string, error) {
	if !validName.MatchString(k.name) {
		return "", nil, sdk.Errorf(sdk.CodeInvalid, "invalid %s plugin name %q", k.kind, k.name)
	}
	for _, b := range h.builtins {
		if b.Kind == k.kind && b.Name == k.name {
			exe, err := h.self()
			if err != nil {
				return "", nil, fmt.Errorf("builtin %s plugin %q: %w", k.kind, k.name, err)
			}
			return exe, []string{"plugin", "serve", string(k.kind), k.name}, nil
		}
	}
	if h.dir == "" {
		return "", nil, h.notFound(k, "no plugin directory is configured")
	}
	path := filepath.Join(h.dir, "kigumi-"+string(k.kind)+"-"+k.name)
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil, h.notFound(k, "no file "+path)
	}
	if err != nil {
		return "", nil, fmt.Errorf("%s plugin %q: %w", k.kind, k.name, err)
	}
	if err := checkExecutable(fi); err != nil {
		return "", nil, sdk.Errorf(sdk.CodeInvalid, "refusing to run %s plugin %s: %v", k.kind, path, err)
	}
	return path, nil, nil
}

func (h *Host) notFound(k key, where string) error {
	var names []string
	for _, b := range h.builtins {
		names = append(names, fmt.Sprintf("%s %q", b.Kind, b.Name))
	}
	builtins := "none"
	if len(names) > 0 {
		builtins = strings.Join(names, ", ")
	}
	return sdk.Errorf(sdk.CodeNotFound, "no %s plugin %q: builtins are %s; %s", k.kind, k.name, builtins, where)
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

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/policy"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
)

// session is one command's view of a host: its specs, policies, plugins,
// state and engine, loaded step by step.
type session struct {
	cli     *cli
	parser  *spec.Parser
	host    *spec.Host
	tenants []*spec.Tenant
	plugins *pluginhost.Host
	store   *state.Store
	engine  *engine.Engine
}

// storeMode says how a command uses the state database.
type storeMode int

const (
	storeNone  storeMode = iota // not at all
	storeRead                   // read-only; absent when nothing was applied yet
	storeWrite                  // read-write, created if needed
	// storePlan reads the store like storeRead, and neither launches the
	// plugins nor touches the isolation: enough to plan, and it writes
	// nothing, not even the plugins' data directories.
	storePlan
)

// open loads what a command needs: the host spec, the tenant specs and
// policies when tenants is set, the plugins, and the state database as mode
// says. The session must be closed even when the code is not exitOK.
func (c *cli) open(ctx context.Context, tenants bool, mode storeMode) (*session, int) {
	s := &session{cli: c, parser: spec.NewParser()}
	if code := s.loadHost(); code != exitOK {
		return s, code
	}
	if tenants {
		if code := s.loadTenants(ctx); code != exitOK {
			return s, code
		}
	}
	return s, s.startEngine(ctx, mode)
}

func (s *session) close() {
	if s.plugins != nil {
		s.plugins.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
}

// loadHost decodes the host spec and checks the engine may act on it.
func (s *session) loadHost() int {
	h, diags := s.parser.LoadHost(s.cli.config)
	if s.writeDiags(diags) {
		return exitInvalid
	}
	s.host = h
	if h.Isolation.TenantUsers && os.Geteuid() != 0 {
		s.cli.errorf("tenant users are on, and they need root.\n\n"+
			"Kigumi binds each tenant to its own Linux user, which only root can create.\n"+
			"Run kigumi as root, or turn tenant users off in %s:\n\n"+
			"  isolation {\n    tenant_users = false\n  }\n\n"+
			"(the starter policy then warns: all tenants would share one user)", h.File)
		return exitInvalid
	}
	return exitOK
}

// loadTenants decodes the tenant specs and evaluates the policies on them.
func (s *session) loadTenants(ctx context.Context) int {
	tenants, diags := s.parser.LoadTenants(s.host)
	if s.writeDiags(diags) {
		return exitInvalid
	}
	s.tenants = tenants
	set, diags := policy.Load(s.parser, s.host.PolicyFiles)
	if s.writeDiags(diags) {
		return exitInvalid
	}
	report, err := set.Evaluate(ctx, s.host, tenants)
	if err != nil {
		s.cli.errorf("evaluate policies: %v", err)
		return exitFailed
	}
	if s.writeDiags(report.Diagnostics()) || report.Denied() {
		return exitInvalid
	}
	return exitOK
}

// startEngine opens the state database as mode says, and launches and
// configures the host's plugins.
func (s *session) startEngine(ctx context.Context, mode storeMode) int {
	if mode == storePlan {
		st, code := s.openStore(ctx, state.WithReadOnly())
		if code != exitOK {
			return code
		}
		s.store = st
		s.engine = engine.New(s.host, s.store, nil, nil, engine.WithLogger(s.cli.log))
		return exitOK
	}
	opts := []pluginhost.Option{pluginhost.WithBuiltins(builtins()...), pluginhost.WithPluginDir(s.host.PluginDir)}
	if s.cli.pluginExited != nil {
		opts = append(opts, pluginhost.WithObserver(s.cli.pluginExited))
	}
	s.plugins = pluginhost.New(s.cli.log.Named("plugin"), opts...)
	switch mode {
	case storeRead:
		st, code := s.openStore(ctx, state.WithReadOnly())
		if code != exitOK {
			return code
		}
		s.store = st
	case storeWrite:
		if err := engine.PrepareStateDir(s.host); err != nil {
			return s.fail(err)
		}
		st, code := s.openStore(ctx)
		if code != exitOK {
			return code
		}
		s.store = st
	}
	iso, err := newIsolation(s.host, mode)
	if err != nil {
		return s.fail(err)
	}
	s.engine = engine.New(s.host, s.store, s.plugins, iso,
		engine.WithLogger(s.cli.log), engine.WithHooks(newProgress(s.cli.stdout)))
	diags, err := s.engine.Configure(ctx)
	if s.writeDiags(diags) {
		return exitInvalid
	}
	if err != nil {
		return s.fail(err)
	}
	// The instances against their runtimes: settings, permissions, and
	// what the runtime validates.
	diags, err = s.engine.CheckTenants(ctx, s.tenants)
	if s.writeDiags(diags) {
		return exitInvalid
	}
	if err != nil {
		return s.fail(err)
	}
	return exitOK
}

// lockPoll is how long each attempt to open the state database waits for
// its lock; between attempts openStore checks for a signal.
const lockPoll = 200 * time.Millisecond

// openStore opens the state database with opts, waiting up to the
// --lock-timeout for another kigumi process to release it, and giving up
// when ctx ends. A read-only open of a database not yet created yields a
// nil store. Still locked after the timeout, it returns exitBusy.
func (s *session) openStore(ctx context.Context, opts ...state.Option) (*state.Store, int) {
	path := engine.DBPath(s.host)
	for {
		deadline := s.cli.lockDeadline()
		st, err := state.Open(path, append(opts, state.WithLockTimeout(min(lockPoll, max(time.Until(deadline), time.Millisecond))))...)
		switch {
		case err == nil:
			return st, exitOK
		case errors.Is(err, os.ErrNotExist):
			return nil, exitOK
		case !errors.Is(err, state.ErrLocked):
			return nil, s.fail(err)
		case ctx.Err() != nil:
			s.cli.errorf("stopped while waiting for the state database %s: %v", path, context.Cause(ctx))
			return nil, exitFailed
		case !time.Now().Before(deadline):
			s.cli.errorf("%v: still busy after waiting %s (--lock-timeout); try again later", err, s.cli.lockTimeout)
			return nil, exitBusy
		}
		s.cli.noteWaiting()
	}
}

// lockDeadline returns when the command stops waiting for the state
// database: --lock-timeout after it first waited, however many times it
// waits (for an agent that is starting, then for the lock).
func (c *cli) lockDeadline() time.Time {
	if c.lockWaitEnds.IsZero() {
		c.lockWaitEnds = time.Now().Add(c.lockTimeout)
	}
	return c.lockWaitEnds
}

// noteWaiting tells the operator, once, that the command waits for
// another kigumi process.
func (c *cli) noteWaiting() {
	if !c.waitNoted {
		c.waitNoted = true
		fmt.Fprintf(c.stderr, "Waiting up to %s for another kigumi process to release the state database...\n", c.lockTimeout)
	}
}

// fail prints err and returns the exit code for it.
func (s *session) fail(err error) int {
	s.cli.errorf("%v", err)
	return exitFailed
}

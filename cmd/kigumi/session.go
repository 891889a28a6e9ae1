package main

import (
	"context"
	"errors"
	"fmt"
	"os"

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

func (c *cli) session() *session { return &session{cli: c, parser: spec.NewParser()} }

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

// startEngine launches and configures the host's plugins and opens the state
// database (read-only, or not at all when readOnly and nothing is applied).
func (s *session) startEngine(ctx context.Context, readOnly bool) int {
	s.plugins = pluginhost.New(s.cli.log.Named("plugin"),
		pluginhost.WithBuiltins(builtins()...),
		pluginhost.WithPluginDir(s.host.PluginDir))
	if !readOnly {
		if err := engine.PrepareStateDir(s.host); err != nil {
			s.cli.errorf("%v", err)
			return exitFailed
		}
	}
	if readOnly {
		st, err := state.Open(engine.DBPath(s.host), state.WithReadOnly())
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s.cli.errorf("%v", err)
			return exitFailed
		}
		s.store = st
	} else {
		st, err := state.Open(engine.DBPath(s.host))
		if err != nil {
			s.cli.errorf("%v", err)
			return exitFailed
		}
		s.store = st
	}
	iso, err := newIsolation(s.host)
	if err != nil {
		s.cli.errorf("%v", err)
		return exitFailed
	}
	s.engine = engine.New(s.host, s.store, s.plugins, iso,
		engine.WithLogger(s.cli.log), engine.WithProgress(s.cli.stdout))
	if s.writeDiags(s.engine.Configure(ctx)) {
		return exitInvalid
	}
	return exitOK
}

// fail prints err and returns the exit code for it.
func (s *session) fail(err error) int {
	s.cli.errorf("%v", err)
	return exitFailed
}

// errNothingApplied is reported when a command needs recorded state.
var errNothingApplied = fmt.Errorf("nothing has been applied on this host yet")

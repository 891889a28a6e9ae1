package main

import (
	"context"
	"flag"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/kigumi/kigumi/core/agent"
	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/policy"
)

var cmdAgent = &command{
	name:    "agent",
	summary: "Reconcile the host continuously",
	help: `Runs in the foreground until SIGINT or SIGTERM. Watches the tenant spec
directory and reconciles each tenant on its own: a tenant whose spec is
invalid keeps running as it was, a tenant that fails is retried with
backoff without holding up the others, and workloads that end are restarted
as their restart policy says. Stopping the agent leaves every workload
running; the next start adopts them.`,
	run: func(ctx context.Context, c *cli, fs *flag.FlagSet, args []string) int {
		workers := fs.Int("workers", agent.DefaultWorkers, "how many tenants reconcile at once")
		resync := fs.Duration("resync", 30*time.Second, "period of the full resync")
		if code, done := c.parse(fs, args, 0, 0); done {
			return code
		}
		if *workers < 1 || *resync < 100*time.Millisecond {
			c.errorf("-workers must be at least 1 and -resync at least 100ms")
			return exitInvalid
		}
		// Plugin processes that die are reported to the agent, once it
		// exists; the host logs those before.
		var running atomic.Pointer[agent.Agent]
		c.pluginExited = func(e pluginhost.Event) {
			if a := running.Load(); a != nil {
				a.PluginExited(e)
			}
		}
		s, code := c.open(ctx, false, storeWrite)
		defer s.close()
		if code != exitOK {
			return code
		}
		set, diags := policy.Load(s.parser, s.host.PolicyFiles)
		if s.writeDiags(diags) {
			return exitInvalid
		}
		bus := events.NewBus()
		defer bus.Close()
		iso, err := newIsolation(s.host, storeWrite)
		if err != nil {
			return s.fail(err)
		}
		// The agent's engine reports to the bus, not the terminal.
		s.engine = engine.New(s.host, s.store, s.plugins, iso, engine.WithLogger(c.log), engine.WithHooks(engine.BusHook{Bus: bus}))
		if diags, err := s.engine.Configure(ctx); s.writeDiags(diags) {
			return exitInvalid
		} else if err != nil {
			return s.fail(err)
		}
		a := agent.New(agent.Config{Host: s.host, Engine: s.engine, Store: s.store, Policies: set, Bus: bus,
			Log: c.log.Named("agent"), Workers: *workers, Resync: *resync})
		running.Store(a)
		sub := bus.Subscribe(256)
		go logEvents(c, sub)
		sctx, stopServing := context.WithCancel(ctx)
		wait, err := serveAgent(sctx, c, s.host, a, s.store)
		if err != nil {
			stopServing()
			return s.fail(err)
		}
		defer func() {
			stopServing()
			wait()
		}()
		fmt.Fprintf(c.stdout, "Agent for host %q: watching %s.\n", s.host.Name, s.host.TenantDir)
		if err := a.Run(ctx); err != nil {
			return s.fail(err)
		}
		fmt.Fprintln(c.stdout, "Agent stopped; workloads keep running.")
		return exitOK
	},
}

// logEvents prints the agent's events, one line each. Their text may come
// from tenants (spec diagnostics, exit messages), so it is escaped as
// `kigumi logs` escapes output on a terminal, wherever it goes.
func logEvents(c *cli, sub *events.Subscription) {
	out := &escapeWriter{w: c.stdout}
	for e := range sub.C() {
		target := e.Tenant
		if e.Instance != "" {
			target += "/" + e.Instance
		}
		line := fmt.Sprintf("%s %s %s", e.Time.Format(time.RFC3339), e.Type, target)
		if e.Op != "" {
			line += " " + e.Op
		}
		if e.Cause != "" {
			line += " (" + e.Cause + ")"
		}
		if e.Message != "" {
			line += ": " + e.Message
		}
		if e.Error != "" {
			line += ": " + e.Error
		}
		for _, d := range e.Diagnostics {
			line += "\n    " + d.Summary
			if d.Range != nil {
				line += fmt.Sprintf(" at %s:%d,%d", d.Range.Filename, d.Range.Start.Line, d.Range.Start.Column)
			}
			if d.Detail != "" {
				line += ": " + d.Detail
			}
		}
		fmt.Fprintln(out, line)
	}
}

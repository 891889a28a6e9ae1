package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/kigumi/kigumi/core/api"
	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
)

// version is kigumi's version, set at build time with
// -ldflags "-X main.version=..." (the Makefile uses git describe).
var version = "dev"

// agent returns a client of the host's agent when one answers on its
// socket, and nil when none runs (or the host spec does not load: the
// command then reports that itself). ok is false after an error was
// printed: an agent runs but cannot be reached.
func (c *cli) agent(ctx context.Context) (client *api.Client, host *spec.Host, ok bool) {
	h, diags := spec.NewParser().LoadHost(c.config)
	if diags.HasErrors() || h == nil {
		return nil, nil, true
	}
	client, err := api.Dial(ctx, api.SocketPath(h.StateDir))
	if errors.Is(err, api.ErrNoAgent) {
		client, err = c.awaitAgent(ctx, h)
	}
	switch {
	case ctx.Err() != nil:
		c.errorf("stopped while waiting for the state database %s: %v", engine.DBPath(h), context.Cause(ctx))
		return nil, h, false
	case errors.Is(err, api.ErrNoAgent):
		return nil, h, true
	case err != nil:
		c.errorf("%v\n\nAn agent runs on this host, and only root and members of the group %q may use it.", err, api.DefaultGroup)
		return nil, h, false
	}
	return client, h, true
}

// awaitAgent covers an agent that is starting: it holds the state database
// before its socket answers. While the database is held by another process,
// it dials the agent again, up to --lock-timeout; it returns ErrNoAgent as
// soon as the database is free (no agent: the command works on its own) or
// when the wait is over (both waits share one deadline: the command then
// tries the lock once more and reports it busy).
func (c *cli) awaitAgent(ctx context.Context, h *spec.Host) (*api.Client, error) {
	for {
		st, err := state.Open(engine.DBPath(h), state.WithReadOnly(), state.WithLockTimeout(time.Millisecond))
		if err == nil {
			st.Close()
		}
		if !errors.Is(err, state.ErrLocked) {
			return nil, api.ErrNoAgent
		}
		client, err := api.Dial(ctx, api.SocketPath(h.StateDir))
		if !errors.Is(err, api.ErrNoAgent) || !time.Now().Before(c.lockDeadline()) {
			return client, err
		}
		c.noteWaiting()
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-time.After(agentPoll):
		}
	}
}

// agentPoll is how often awaitAgent dials an agent that is starting.
const agentPoll = 100 * time.Millisecond

// agentFail prints an error of the agent's API and returns its exit code.
func (c *cli) agentFail(err error) int {
	c.errorf("%v", err)
	switch {
	case errors.Is(err, api.ErrNotFound), errors.Is(err, api.ErrInvalid), errors.Is(err, api.ErrForbidden):
		return exitInvalid
	case errors.Is(err, context.Canceled):
		return exitFailed
	}
	return exitFailed
}

// printJSON writes v as indented JSON.
func (c *cli) printJSON(v any) int {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		c.errorf("%v", err)
		return exitFailed
	}
	return exitOK
}

var cmdVersion = &command{
	name:    "version",
	summary: "Print kigumi's version",
	help:    `Prints the version of this kigumi binary, of its control API and of its event schema.`,
	run: func(ctx context.Context, c *cli, fs *flag.FlagSet, args []string) int {
		fs.BoolVar(&c.jsonOut, "json", false, "print JSON")
		if code, done := c.parse(fs, args, 0, 0); done {
			return code
		}
		v := api.VersionInfo{Version: version, API: api.Version, EventSchema: events.SchemaVersion}
		if c.jsonOut {
			return c.printJSON(v)
		}
		fmt.Fprintf(c.stdout, "kigumi %s (control API v%d, event schema v%d)\n", v.Version, v.API, v.EventSchema)
		return exitOK
	},
}

var cmdJournal = &command{
	name:    "journal",
	summary: "Show the journal of apply steps",
	help: `Prints the last journal entries: every step an apply or the agent took,
begun, done or failed. Reads through the agent when one runs, otherwise
the state database, read-only.`,
	run: func(ctx context.Context, c *cli, fs *flag.FlagSet, args []string) int {
		n := fs.Int("n", 50, "how many of the last entries to print (0: all that are kept)")
		fs.BoolVar(&c.jsonOut, "json", false, "print JSON lines, one entry a line")
		if code, done := c.parse(fs, args, 0, 0); done {
			return code
		}
		if *n < 0 {
			c.errorf("-n must not be negative")
			return exitInvalid
		}
		client, h, ok := c.agent(ctx)
		if !ok {
			return exitFailed
		}
		var entries []api.JournalEntry
		if client != nil {
			defer client.Close()
			var err error
			if entries, err = client.Journal(ctx, *n); err != nil {
				return c.agentFail(err)
			}
		} else {
			if h == nil {
				s := &session{cli: c, parser: spec.NewParser()}
				return s.loadHost() // prints the diagnostics
			}
			st, code := (&session{cli: c, host: h}).openStore(ctx, state.WithReadOnly())
			if code != exitOK {
				return code
			}
			if st != nil {
				all, err := st.Journal(*n)
				st.Close()
				if err != nil {
					c.errorf("%v", err)
					return exitFailed
				}
				entries = api.JournalEntries(all)
			}
		}
		if c.jsonOut {
			enc := json.NewEncoder(c.stdout)
			for _, e := range entries {
				if err := enc.Encode(e); err != nil {
					c.errorf("%v", err)
					return exitFailed
				}
			}
			return exitOK
		}
		if len(entries) == 0 {
			fmt.Fprintln(c.stdout, "The journal is empty.")
			return exitOK
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SEQ\tTIME\tTARGET\tSTEP\tEVENT\tERROR")
		for _, e := range entries {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Format("2006-01-02T15:04:05.000Z07:00"), e.Target, e.Step, e.Event, e.Error)
		}
		if err := tw.Flush(); err != nil {
			c.errorf("%v", err)
			return exitFailed
		}
		return exitOK
	},
}

// instanceCommand returns the stop, start or restart command.
func instanceCommand(name, summary string, act func(*api.Client) func(context.Context, string, string) error) *command {
	return &command{
		name:    name,
		args:    "TENANT/INSTANCE",
		summary: summary,
		help: fmt.Sprintf(`Asks the host's agent to %s one instance. It needs a running agent
('kigumi agent'): without one, nothing would keep a stopped instance stopped
or restart it, so the command refuses.`, name),
		run: func(ctx context.Context, c *cli, fs *flag.FlagSet, args []string) int {
			if code, done := c.parse(fs, args, 1, 1); done {
				return code
			}
			tenant, instance, ok := splitInstance(c, fs.Arg(0), name)
			if !ok {
				return exitInvalid
			}
			client, h, ok := c.agent(ctx)
			if !ok {
				return exitFailed
			}
			if client == nil {
				if h == nil {
					s := &session{cli: c, parser: spec.NewParser()}
					return s.loadHost()
				}
				c.errorf("%s needs a running agent, and none answers on %s.\n\nStart one with: kigumi agent -c %s",
					name, api.SocketPath(h.StateDir), c.config)
				return exitInvalid
			}
			defer client.Close()
			if err := act(client)(ctx, tenant, instance); err != nil {
				return c.agentFail(err)
			}
			fmt.Fprintf(c.stdout, "%s/%s: %s done.\n", tenant, instance, name)
			return exitOK
		},
	}
}

var (
	cmdStop    = instanceCommand("stop", "Stop an instance (needs the agent)", func(c *api.Client) func(context.Context, string, string) error { return c.Stop })
	cmdStart   = instanceCommand("start", "Start a stopped instance (needs the agent)", func(c *api.Client) func(context.Context, string, string) error { return c.Start })
	cmdRestart = instanceCommand("restart", "Restart an instance (needs the agent)", func(c *api.Client) func(context.Context, string, string) error { return c.Restart })
)

// splitInstance splits TENANT/INSTANCE, printing an error when it is not.
func splitInstance(c *cli, arg, cmd string) (tenant, instance string, ok bool) {
	tenant, instance, ok = strings.Cut(arg, "/")
	if !ok || tenant == "" || instance == "" || strings.Contains(instance, "/") {
		c.errorf("%s takes TENANT/INSTANCE, got %q", cmd, arg)
		return "", "", false
	}
	return tenant, instance, true
}

// logWriter returns where an instance's output goes: escaped when stdout
// is a terminal, unless raw; and a function to call once it ends.
func (c *cli) logWriter(raw bool) (w interface{ Write([]byte) (int, error) }, done func() error) {
	if f, ok := c.stdout.(*os.File); ok && !raw && term.IsTerminal(int(f.Fd())) {
		ew := &escapeWriter{w: c.stdout}
		return ew, ew.Close
	}
	return c.stdout, func() error { return nil }
}

// logsViaAgent streams an instance's output through the agent.
func logsViaAgent(ctx context.Context, c *cli, client *api.Client, tenant, instance string, opts sdk.LogOptions, raw bool) int {
	w, done := c.logWriter(raw)
	err := client.Logs(ctx, tenant, instance, opts, func(b []byte) error {
		_, err := w.Write(b)
		return err
	})
	if derr := done(); err == nil {
		err = derr
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return c.agentFail(err)
	}
	return exitOK
}

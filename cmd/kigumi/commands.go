package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"text/tabwriter"

	"github.com/kigumi/kigumi/core/api"
	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

var cmdValidate = &command{
	name:    "validate",
	summary: "Check the host spec, tenant specs and policies",
	help: `Decodes the host spec and every tenant spec, loads the policies and
evaluates them, and checks each plugin's settings against the schema the
plugin declares. Changes nothing.`,
	run: func(ctx context.Context, c *cli, fs *flag.FlagSet, args []string) int {
		fs.BoolVar(&c.jsonOut, "json", false, "print the result and diagnostics as JSON")
		if code, done := c.parse(fs, args, 0, 0); done {
			return code
		}
		if c.jsonOut {
			return validateJSON(ctx, c)
		}
		s, code := c.open(ctx, true, storeNone)
		defer s.close()
		if code != exitOK {
			return code
		}
		n := 0
		for _, t := range s.tenants {
			n += len(t.Instances)
		}
		fmt.Fprintf(c.stdout, "Valid: host %q, %d tenants, %d instances, %d plugins.\n", s.host.Name, len(s.tenants), n, len(s.host.Plugins))
		return exitOK
	},
}

var cmdPlan = &command{
	name:    "plan",
	summary: "Show what apply would change",
	help: `Compares the tenant specs with what is recorded on this host and prints
the instances and tenants that apply would create, update and destroy.
Changes nothing.`,
	run: func(ctx context.Context, c *cli, fs *flag.FlagSet, args []string) int {
		fs.BoolVar(&c.jsonOut, "json", false, "print the plan as JSON")
		if code, done := c.parse(fs, args, 0, 0); done {
			return code
		}
		client, _, ok := c.agent(ctx)
		if !ok {
			return exitFailed
		}
		var p *plan.Plan
		if client != nil {
			defer client.Close()
			var err error
			if p, err = client.Plan(ctx); err != nil {
				return c.agentFail(err)
			}
		} else {
			s, sp, code := planFromSpecs(ctx, c, storeRead)
			defer s.close()
			if code != exitOK {
				return code
			}
			p = sp
		}
		if c.jsonOut {
			return c.printJSON(planJSON(p))
		}
		if err := p.Render(c.stdout); err != nil {
			c.errorf("%v", err)
			return exitFailed
		}
		return exitOK
	},
}

// planFromSpecs loads everything and plans the specs against the state.
func planFromSpecs(ctx context.Context, c *cli, mode storeMode) (*session, *plan.Plan, int) {
	s, code := c.open(ctx, true, mode)
	if code != exitOK {
		return s, nil, code
	}
	owners, err := s.engine.Owners(ctx)
	if err != nil {
		return s, nil, s.fail(err)
	}
	if s.writeDiags(engine.OwnershipDiagnostics(owners, state.SourceFile, s.tenants)) {
		return s, nil, exitInvalid
	}
	desired, err := engine.Desired(s.host, s.tenants)
	if err != nil {
		c.errorf("%v", err)
		return s, nil, exitInvalid
	}
	p, err := s.engine.Plan(ctx, state.SourceFile, desired)
	if err != nil {
		return s, nil, s.fail(err)
	}
	return s, p, exitOK
}

var cmdApply = &command{
	name:    "apply",
	summary: "Create, update and destroy tenants and instances to match the specs",
	help: `Plans like 'kigumi plan', asks for confirmation, then carries the plan
out through the plugins. Every step is recorded before and after it runs:
an interrupted apply is resumed by the next one. A failed create is rolled
back. A second apply with no spec change does nothing.`,
	run: func(ctx context.Context, c *cli, fs *flag.FlagSet, args []string) int {
		fs.BoolVar(&c.autoApprove, "auto-approve", false, "apply without asking for confirmation")
		fs.BoolVar(&c.jsonOut, "json", false, "print a stream of JSON events, one a line (needs --auto-approve)")
		if code, done := c.parse(fs, args, 0, 0); done {
			return code
		}
		return apply(ctx, c)
	},
}

func applyPlan(ctx context.Context, s *session, p *plan.Plan, question string) int {
	c := s.cli
	if err := p.Render(c.stdout); err != nil {
		return s.fail(err)
	}
	if p.Empty() {
		return exitOK
	}
	if code, ok := confirmPlan(ctx, c, question); !ok {
		return code
	}
	return execute(ctx, s, p)
}

// confirmPlan asks whether to carry out the plan just shown; when not, it
// says so and returns the exit code. A signal while it asks cancels.
func confirmPlan(ctx context.Context, c *cli, question string) (int, bool) {
	ok, err := c.confirm(ctx, question)
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(c.stdout, "Cancelled: nothing was changed.")
		return exitFailed, false
	}
	if err != nil {
		c.errorf("%v", err)
		return exitInvalid, false
	}
	if !ok {
		fmt.Fprintln(c.stdout, "Cancelled: nothing was changed.")
		return exitInvalid, false
	}
	return exitOK, true
}

// execute carries out a confirmed plan.
func execute(ctx context.Context, s *session, p *plan.Plan) int {
	c := s.cli
	fmt.Fprintln(c.stdout)
	if err := s.engine.Apply(ctx, p); err != nil {
		c.errorf("%v", err)
		return applyExit(err)
	}
	fmt.Fprintf(c.stdout, "\nApply complete: %d created, %d updated, %d destroyed, %d restarted.\n",
		p.Count(plan.Create), p.Count(plan.Update), p.Count(plan.Destroy), p.Count(plan.Restart))
	return exitOK
}

// applyExit returns the exit code of a failed apply.
func applyExit(err error) int {
	if engine.Refused(err) {
		return exitInvalid // a plugin refused what the spec asks for; rolled back
	}
	return exitFailed
}

var cmdDestroy = &command{
	name:    "destroy",
	args:    "[TENANT...]",
	summary: "Destroy tenants and everything they own",
	help: `Destroys the named tenants, or every tenant on this host when none is
named: their instances, state, cgroups, Linux users and home directories.
Reads only the host spec, not the tenant specs.`,
	run: func(ctx context.Context, c *cli, fs *flag.FlagSet, args []string) int {
		fs.BoolVar(&c.autoApprove, "auto-approve", false, "destroy without asking for confirmation")
		fs.BoolVar(&c.jsonOut, "json", false, "print a stream of JSON events, one a line (needs --auto-approve)")
		if code, done := c.parse(fs, args, 0, -1); done {
			return code
		}
		if c.jsonOut {
			if !c.autoApprove {
				c.errorf("destroy -json prints no prompt: pass --auto-approve as well")
				return exitInvalid
			}
			return executeJSON(ctx, c, func() (*session, *plan.Plan, int) { return destroyPlan(ctx, c, fs.Args()) },
				"the host spec or the tenants named are invalid, or the host cannot be read: nothing was destroyed")
		}
		s, p, code := destroyPlan(ctx, c, fs.Args())
		defer s.close()
		if code != exitOK {
			return code
		}
		return applyPlan(ctx, s, p, "Destroy these tenants and everything they own? There is no undo.")
	},
}

// destroyPlan opens the host for writing and plans the destruction of the
// named tenants (all when none is named).
func destroyPlan(ctx context.Context, c *cli, tenants []string) (*session, *plan.Plan, int) {
	s, code := c.open(ctx, false, storeWrite)
	if code != exitOK {
		return s, nil, code
	}
	p, err := s.engine.DestroyPlan(ctx, tenants)
	if errors.Is(err, engine.ErrUnknownTenant) {
		c.errorf("%v", err)
		return s, nil, exitInvalid
	} else if err != nil {
		return s, nil, s.fail(err)
	}
	return s, p, exitOK
}

var cmdStatus = &command{
	name:    "status",
	summary: "Show tenants and instances on this host",
	help:    `Lists every recorded tenant and instance, asking the runtimes how each instance is doing.`,
	run: func(ctx context.Context, c *cli, fs *flag.FlagSet, args []string) int {
		fs.BoolVar(&c.jsonOut, "json", false, "print JSON")
		if code, done := c.parse(fs, args, 0, 0); done {
			return code
		}
		client, _, ok := c.agent(ctx)
		if !ok {
			return exitFailed
		}
		var report api.StatusReport
		if client != nil {
			defer client.Close()
			var err error
			if report, err = client.Status(ctx); err != nil {
				return c.agentFail(err)
			}
		} else {
			s, code := c.open(ctx, false, storeRead)
			defer s.close()
			if code != exitOK {
				return code
			}
			st, err := s.engine.Status(ctx)
			if err != nil {
				return s.fail(err)
			}
			report = api.StatusReport{Host: s.host.Name, Tenants: st}
		}
		if c.jsonOut {
			return c.printJSON(report)
		}
		st := report.Tenants
		if len(st) == 0 {
			fmt.Fprintf(c.stdout, "Host %q runs no tenants.\n", report.Host)
			return exitOK
		}
		tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TENANT\tUSER\tINSTANCE\tRUNTIME\tSTATE\tPID\tEXIT\tSTATE USE\tMESSAGE")
		for _, t := range st {
			user := fmt.Sprintf("%s(%d)", t.User, t.UID)
			if len(t.Instances) == 0 {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t%s\t\t\t\t\n", t.Name, user, t.Phase)
			}
			for _, i := range t.Instances {
				pid, exit := "-", "-"
				if i.Pid != 0 {
					pid = fmt.Sprint(i.Pid)
				}
				if i.State == sdk.StateExited || i.State == sdk.StateStopped {
					exit = fmt.Sprint(i.ExitCode)
				}
				state := string(i.State)
				if i.Phase != "ready" {
					state += " (" + string(i.Phase) + ")"
				}
				use, msg := stateUseText(i), i.Message
				if i.StateError != "" {
					if msg != "" {
						msg += "; "
					}
					msg += "state: " + i.StateError
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, user, i.Name, i.Runtime, state, pid, exit, use, msg)
			}
		}
		if err := tw.Flush(); err != nil {
			c.errorf("%v", err)
			return exitFailed
		}
		return exitOK
	},
}

// stateUseText shows an instance's state use against its quotas, as
// "BYTES/SIZE, INODES/LIMIT inodes": "-" without state, "?" when the
// StateFS could not tell (the message says why).
func stateUseText(i engine.InstanceStatus) string {
	u := i.StateUsage
	switch {
	case u != nil:
		limit := func(n int64, text string) string {
			if n == 0 {
				return "-"
			}
			return text
		}
		return fmt.Sprintf("%s/%s, %d/%s inodes", bytesText(u.Bytes), limit(u.BytesLimit, bytesText(u.BytesLimit)),
			u.Inodes, limit(u.InodesLimit, fmt.Sprint(u.InodesLimit)))
	case i.StateError != "":
		return "?"
	}
	return "-"
}

var cmdLogs = &command{
	name:    "logs",
	args:    "TENANT/INSTANCE",
	summary: "Print an instance's output",
	help: `Prints what an instance wrote to its standard output (or, with --stderr, its
standard error). On a terminal, control characters and invalid UTF-8 are
escaped so that an instance cannot drive your terminal; into a pipe or a
file, or with --raw, the bytes pass unchanged.`,
	run: func(ctx context.Context, c *cli, fs *flag.FlagSet, args []string) int {
		stderr := fs.Bool("stderr", false, "print standard error instead of standard output")
		follow := fs.Bool("f", false, "keep printing new output until the instance ends or you press Ctrl-C")
		raw := fs.Bool("raw", false, "write the output unescaped, even to a terminal")
		if code, done := c.parse(fs, args, 1, 1); done {
			return code
		}
		tenant, instance, ok := splitInstance(c, fs.Arg(0), "logs")
		if !ok {
			return exitInvalid
		}
		opts := sdk.LogOptions{Stream: sdk.Stdout, Follow: *follow}
		if *stderr {
			opts.Stream = sdk.Stderr
		}
		client, _, ok := c.agent(ctx)
		if !ok {
			return exitFailed
		}
		if client != nil {
			defer client.Close()
			return logsViaAgent(ctx, c, client, tenant, instance, opts, *raw)
		}
		s, code := c.open(ctx, false, storeRead)
		defer s.close()
		if code != exitOK {
			return code
		}
		w, done := c.logWriter(*raw)
		err := s.engine.Logs(ctx, tenant, instance, opts, func(b []byte) error {
			_, err := w.Write(b)
			return err
		})
		if derr := done(); err == nil {
			err = derr
		}
		switch {
		case errors.Is(err, engine.ErrUnknownInstance):
			c.errorf("%v", err)
			return exitInvalid
		case err != nil && !errors.Is(err, context.Canceled):
			return s.fail(err)
		}
		return exitOK
	},
}

package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"

	"text/tabwriter"

	"github.com/dustin/go-humanize"

	"github.com/kigumi/kigumi/core/api"
	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
)

// stateCommand is one subcommand of `kigumi state`. withName says it takes
// a checkpoint name after TENANT/INSTANCE. Through an agent it calls
// viaAgent, otherwise direct on an engine opened with mode.
type stateCommand struct {
	name, summary, help string
	withName            bool
	mode                storeMode
	viaAgent            func(ctx context.Context, cl *api.Client, tenant, instance, name string) (any, error)
	direct              func(ctx context.Context, e *engine.Engine, tenant, instance, name string) (any, error)
	// text prints the result for a person.
	text func(c *cli, tenant, instance, name string, v any)
}

var stateCommands = []*stateCommand{
	{
		name:    "hash",
		summary: "Print the Merkle root of an instance's state",
		help: `Prints the Merkle root of the instance's state, in hex. Two states with
the same names, file types, permission bits, symlink targets and contents
have the same root, whatever their owners, timestamps and inode numbers
(the canonical form is in docs/statefs.md).`,
		mode: storeRead,
		viaAgent: func(ctx context.Context, cl *api.Client, t, i, _ string) (any, error) {
			return cl.StateHash(ctx, t, i)
		},
		direct: func(ctx context.Context, e *engine.Engine, t, i, _ string) (any, error) {
			root, err := e.StateHash(ctx, t, i)
			return api.StateHash{Tenant: t, Instance: i, Root: hex.EncodeToString(root)}, err
		},
		text: func(c *cli, _, _, _ string, v any) { fmt.Fprintln(c.stdout, v.(api.StateHash).Root) },
	},
	{
		name:     "checkpoint",
		summary:  "Make a named, read-only checkpoint of an instance's state",
		withName: true,
		help: `Copies the instance's state into a new checkpoint NAME (1 to 64 letters,
digits, '.', '_' and '-', not starting with '.'), kept by the host out of the
tenant's reach. The instance's processes are frozen (cgroup freezer) for the
copy, so that it is of one moment, and thawed after.`,
		mode: storeRead,
		viaAgent: func(ctx context.Context, cl *api.Client, t, i, n string) (any, error) {
			return cl.Checkpoint(ctx, t, i, n)
		},
		direct: func(ctx context.Context, e *engine.Engine, t, i, n string) (any, error) {
			cp, err := e.Checkpoint(ctx, t, i, n)
			return api.Checkpoints([]sdk.Checkpoint{cp})[0], err
		},
		text: func(c *cli, t, i, _ string, v any) {
			cp := v.(api.Checkpoint)
			fmt.Fprintf(c.stdout, "%s/%s: checkpoint %q made: root %s, %s in %d entries.\n", t, i, cp.Name, cp.Root, bytesText(cp.Bytes), cp.Inodes)
		},
	},
	{
		name:    "checkpoints",
		summary: "List an instance's checkpoints",
		help:    `Lists the instance's checkpoints, oldest first: name, time, Merkle root, size, and where each is mounted.`,
		mode:    storeRead,
		viaAgent: func(ctx context.Context, cl *api.Client, t, i, _ string) (any, error) {
			list, err := cl.Checkpoints(ctx, t, i)
			return api.CheckpointList{Checkpoints: list}, err
		},
		direct: func(ctx context.Context, e *engine.Engine, t, i, _ string) (any, error) {
			list, err := e.Checkpoints(ctx, t, i)
			return api.CheckpointList{Checkpoints: api.Checkpoints(list)}, err
		},
		text: func(c *cli, t, i, _ string, v any) {
			list := v.(api.CheckpointList).Checkpoints
			if len(list) == 0 {
				fmt.Fprintf(c.stdout, "%s/%s has no checkpoints.\n", t, i)
				return
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCREATED\tROOT\tSIZE\tINODES\tMOUNTED AT")
			for _, cp := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", cp.Name, cp.CreatedAt.Format("2006-01-02T15:04:05Z07:00"), cp.Root, bytesText(cp.Bytes), cp.Inodes, cp.Mount)
			}
			_ = tw.Flush()
		},
	},
	{
		name:     "rollback",
		summary:  "Return an instance's state to a checkpoint",
		withName: true,
		help: `Returns the instance's state to the checkpoint NAME, which is kept. A
running instance is stopped first (up to 10 s) and started again on the
rolled-back state; one that is not running (stopped by an operator,
exited) is left so. The state is swapped in whole or not at all: when the
rollback fails, the instance runs on its old state.`,
		mode: storeWrite,
		viaAgent: func(ctx context.Context, cl *api.Client, t, i, n string) (any, error) {
			return checkpointResult{t, i, n}, cl.Rollback(ctx, t, i, n)
		},
		direct: func(ctx context.Context, e *engine.Engine, t, i, n string) (any, error) {
			return checkpointResult{t, i, n}, e.Rollback(ctx, t, i, n)
		},
		text: func(c *cli, t, i, n string, _ any) {
			fmt.Fprintf(c.stdout, "%s/%s: state rolled back to checkpoint %q.\n", t, i, n)
		},
	},
	{
		name:     "mount",
		summary:  "Mount a checkpoint read-only next to the live state",
		withName: true,
		help: `Mounts the checkpoint NAME read-only (and nosuid, nodev, noexec) next to
the instance's live state, and prints where: in the host's state
directory, readable by root. Nobody can write it, root included (EROFS).
The mount point is chosen by the host, not the caller, so that members of
the kigumi group cannot mount over host paths. It stays until
'kigumi state unmount', or until the instance is destroyed.`,
		mode: storeRead,
		viaAgent: func(ctx context.Context, cl *api.Client, t, i, n string) (any, error) {
			return cl.MountCheckpoint(ctx, t, i, n)
		},
		direct: func(ctx context.Context, e *engine.Engine, t, i, n string) (any, error) {
			m, err := e.MountCheckpoint(ctx, t, i, n)
			return api.CheckpointMount{Checkpoint: n, Path: m.Source, ReadOnly: m.ReadOnly, Options: m.Options}, err
		},
		text: func(c *cli, _, _, _ string, v any) { fmt.Fprintln(c.stdout, v.(api.CheckpointMount).Path) },
	},
	{
		name:     "unmount",
		summary:  "Unmount a mounted checkpoint",
		withName: true,
		help:     `Unmounts the checkpoint NAME (lazily when it is busy) and removes its mount point. Unmounting a checkpoint that is not mounted succeeds.`,
		mode:     storeRead,
		viaAgent: func(ctx context.Context, cl *api.Client, t, i, n string) (any, error) {
			return checkpointResult{t, i, n}, cl.UnmountCheckpoint(ctx, t, i, n)
		},
		direct: func(ctx context.Context, e *engine.Engine, t, i, n string) (any, error) {
			return checkpointResult{t, i, n}, e.UnmountCheckpoint(ctx, t, i, n)
		},
		text: func(c *cli, t, i, n string, _ any) {
			fmt.Fprintf(c.stdout, "%s/%s: checkpoint %q unmounted.\n", t, i, n)
		},
	},
}

// checkpointResult is what rollback and unmount print with --json: the checkpoint acted on.
type checkpointResult struct {
	Tenant     string `json:"tenant"`
	Instance   string `json:"instance"`
	Checkpoint string `json:"checkpoint"`
}

var cmdState = &command{
	name:    "state",
	args:    "SUBCOMMAND TENANT/INSTANCE [NAME]",
	summary: "Hash, checkpoint, roll back and mount instance state",
	help:    "Acts on the state of one instance.",
	run: func(ctx context.Context, c *cli, fs *flag.FlagSet, args []string) int {
		if len(args) > 0 {
			for _, sc := range stateCommands {
				if sc.name == args[0] {
					return sc.run(ctx, c, args[1:])
				}
			}
		}
		w := c.stdout
		if len(args) == 0 || (args[0] != "-h" && args[0] != "--help" && args[0] != "help") {
			w = c.stderr
			if len(args) > 0 {
				fmt.Fprintf(w, "kigumi state: unknown subcommand %q\n\n", args[0])
			}
		}
		fmt.Fprint(w, "Usage: kigumi state SUBCOMMAND [options] TENANT/INSTANCE [NAME]\n\nSubcommands:\n")
		for _, sc := range stateCommands {
			fmt.Fprintf(w, "  %-11s %s\n", sc.name, sc.summary)
		}
		fmt.Fprint(w, "\nThey go through the agent when one runs, otherwise act on the host directly.\nRun 'kigumi state SUBCOMMAND --help' for one's options.\n")
		if w == c.stdout {
			return exitOK
		}
		return exitInvalid
	},
}

// run runs the subcommand.
func (sc *stateCommand) run(ctx context.Context, c *cli, args []string) int {
	usage := "TENANT/INSTANCE"
	n := 1
	if sc.withName {
		usage, n = "TENANT/INSTANCE NAME", 2
	}
	fs := c.flags(&command{name: "state " + sc.name, args: usage, help: sc.help})
	fs.BoolVar(&c.jsonOut, "json", false, "print JSON")
	if code, done := c.parse(fs, args, n, n); done {
		return code
	}
	tenant, instance, ok := splitInstance(c, fs.Arg(0), "state "+sc.name)
	if !ok {
		return exitInvalid
	}
	name := fs.Arg(1)
	if sc.withName {
		if err := sdk.CheckCheckpointName(name); err != nil {
			c.errorf("%v", err)
			return exitInvalid
		}
	}
	client, h, ok := c.agent(ctx)
	if !ok {
		return exitFailed
	}
	var (
		v   any
		err error
	)
	if client != nil {
		defer client.Close()
		v, err = sc.viaAgent(ctx, client, tenant, instance, name)
	} else {
		if h == nil {
			s := &session{cli: c, parser: spec.NewParser()}
			return s.loadHost() // prints the diagnostics
		}
		s, code := c.open(ctx, false, sc.mode)
		defer s.close()
		if code != exitOK {
			return code
		}
		v, err = sc.direct(ctx, s.engine, tenant, instance, name)
	}
	if err != nil {
		c.errorf("%v", err)
		return stateExit(err)
	}
	if c.jsonOut {
		return c.printJSON(v)
	}
	sc.text(c, tenant, instance, name, v)
	return exitOK
}

// stateExit returns the exit code of a failed state command: invalid input
// (an unknown tenant, instance or checkpoint, a bad name, an instance
// without state, a StateFS that cannot do it) or a runtime failure.
func stateExit(err error) int {
	for _, target := range []error{
		api.ErrNotFound, api.ErrInvalid, api.ErrForbidden,
		engine.ErrUnknownTenant, engine.ErrUnknownInstance, engine.ErrNoState,
		sdk.ErrNotFound, sdk.ErrInvalid, sdk.ErrUnsupported,
	} {
		if errors.Is(err, target) {
			return exitInvalid
		}
	}
	return exitFailed
}

// bytesText prints a size in bytes with a binary unit, as plans do.
func bytesText(n int64) string {
	if n < 0 {
		return fmt.Sprint(n)
	}
	return humanize.IBytes(uint64(n))
}

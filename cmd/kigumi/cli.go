package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
	"golang.org/x/term"

	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/spec"
)

// Exit codes scripts can rely on.
const (
	exitOK      = 0
	exitInvalid = 1 // invalid input or a policy denial
	exitFailed  = 2 // a runtime failure
	exitBusy    = 3 // another kigumi held the state database past --lock-timeout
)

// defaultLockTimeout is how long a command waits for another kigumi
// process to release the state database.
const defaultLockTimeout = 30 * time.Second

// command is one kigumi subcommand.
type command struct {
	name    string
	args    string
	summary string
	help    string
	run     func(ctx context.Context, c *cli, fs *flag.FlagSet, args []string) int
	hidden  bool
}

var commands []*command

func init() {
	commands = []*command{
		cmdValidate, cmdPlan, cmdApply, cmdDestroy, cmdStatus, cmdLogs, cmdStop, cmdStart, cmdRestart,
		cmdState, cmdJournal, cmdAgent, cmdLease, cmdVersion, cmdPlugin,
	}
}

// cli holds what every command shares: its flags and its output streams.
type cli struct {
	config      string
	lockTimeout time.Duration
	// lockWaitEnds is when waiting for the state database ends, once the
	// command started waiting; waitNoted is set once it said so.
	lockWaitEnds time.Time
	waitNoted    bool
	autoApprove  bool
	jsonOut      bool
	stdout       io.Writer
	stderr       io.Writer
	stdin        *os.File
	log          hclog.Logger
	// collected, when set, gathers diagnostics instead of printing them
	// (validate --json).
	collected *hcl.Diagnostics
	// pluginExited, when set, observes plugin processes that exit without
	// being asked to (the agent).
	pluginExited func(pluginhost.Event)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `Usage: kigumi COMMAND [options]

Kigumi hosts untrusted workloads from many tenants on one Linux host. The
host is described in HCL (host.hcl); it names the directory of tenant specs
and the CEL policies that decide what is allowed.

Commands:
`)
	for _, c := range commands {
		if !c.hidden {
			fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
		}
	}
	fmt.Fprint(w, `
Run 'kigumi COMMAND --help' for a command's options.

Exit codes: 0 ok, 1 invalid input or policy denial, 2 runtime failure or
stopped by a signal, 3 busy (another kigumi held the state database past
--lock-timeout).
SIGINT or SIGTERM stops a command at the next safe point; a second one at
once.
Set KIGUMI_LOG_LEVEL (trace, debug, info, warn, error) for more output.
`)
}

func run(args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(os.Stdout)
		if len(args) == 0 {
			return exitInvalid
		}
		return exitOK
	}
	var cmd *command
	for _, c := range commands {
		if c.name == args[0] {
			cmd = c
		}
	}
	if cmd == nil {
		fmt.Fprintf(os.Stderr, "kigumi: unknown command %q\n\n", args[0])
		usage(os.Stderr)
		return exitInvalid
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// The first signal cancels ctx; the next one kills at once.
		<-ctx.Done()
		stop()
	}()
	level := hclog.LevelFromString(os.Getenv("KIGUMI_LOG_LEVEL"))
	if level == hclog.NoLevel {
		level = hclog.Warn
	}
	c := &cli{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin,
		log: hclog.New(&hclog.LoggerOptions{Name: "kigumi", Level: level, Output: os.Stderr})}
	return cmd.run(ctx, c, c.flags(cmd), args[1:])
}

// flags returns a flag set for cmd with the options every command shares.
func (c *cli) flags(cmd *command) *flag.FlagSet {
	fs := flag.NewFlagSet("kigumi "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.StringVar(&c.config, "c", "host.hcl", "path of the host spec")
	fs.DurationVar(&c.lockTimeout, "lock-timeout", defaultLockTimeout, "how long to wait for another kigumi to release the state database")
	fs.Usage = func() {
		fmt.Fprintf(c.stdout, "Usage: kigumi %s [options] %s\n\n%s\n\nOptions:\n", cmd.name, cmd.args, strings.TrimSpace(cmd.help))
		fs.SetOutput(c.stdout)
		fs.PrintDefaults()
		fs.SetOutput(c.stderr)
	}
	return fs
}

// parse parses args; done is set when the command must return code at once
// (after --help, or on a bad flag).
// Flags may come before, between or after the arguments.
func (c *cli) parse(fs *flag.FlagSet, args []string, minArgs, maxArgs int) (code int, done bool) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK, true
			}
			return exitInvalid, true
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	// Parse once more so fs.Args() holds the positional arguments.
	_ = fs.Parse(append([]string{"--"}, positional...))
	if n := fs.NArg(); n < minArgs || (maxArgs >= 0 && n > maxArgs) {
		fmt.Fprintf(c.stderr, "kigumi %s: wrong number of arguments\n", strings.TrimPrefix(fs.Name(), "kigumi "))
		fs.Usage()
		return exitInvalid, true
	}
	return 0, false
}

// confirm asks on the terminal whether to go on. Without a terminal it
// refuses unless --auto-approve was given. It gives up when ctx ends.
func (c *cli) confirm(ctx context.Context, question string) (bool, error) {
	if c.autoApprove {
		return true, nil
	}
	if !term.IsTerminal(int(c.stdin.Fd())) {
		return false, errors.New("standard input is not a terminal: pass --auto-approve to proceed without confirmation")
	}
	fmt.Fprintf(c.stdout, "\n%s\n  Only 'yes' will be accepted.\n\n  Enter a value: ", question)
	answer := make(chan string, 1)
	go func() {
		// Left blocked on the terminal if ctx ends first; the process
		// exits soon after.
		var a string
		fmt.Fscanln(c.stdin, &a)
		answer <- a
	}()
	select {
	case a := <-answer:
		return a == "yes", nil
	case <-ctx.Done():
		fmt.Fprintln(c.stdout)
		return false, ctx.Err()
	}
}

func (c *cli) errorf(format string, args ...any) {
	fmt.Fprintf(c.stderr, "Error: "+format+"\n", args...)
}

// writeDiags prints diagnostics and reports whether any is an error.
func (s *session) writeDiags(diags hcl.Diagnostics) bool {
	if len(diags) == 0 {
		return false
	}
	if s.cli.collected != nil {
		*s.cli.collected = append(*s.cli.collected, diags...)
		return diags.HasErrors()
	}
	color := false
	if f, ok := s.cli.stderr.(*os.File); ok {
		color = term.IsTerminal(int(f.Fd()))
	}
	files := s.parser.Files()
	_ = spec.WriteDiagnostics(s.cli.stderr, files, diags, color)
	return diags.HasErrors()
}

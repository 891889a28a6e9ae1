package pluginhost

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ExecCommand is the hidden first argument that makes the kigumi binary run
// ExecMain: the trampoline that starts a tenant's plugin process. A program
// that hosts plugins must call ExecMain early in main when os.Args[1] is
// ExecCommand, before it does anything else:
//
//	if len(os.Args) > 1 && os.Args[1] == pluginhost.ExecCommand {
//		os.Exit(pluginhost.ExecMain(os.Args[2:]))
//	}
const ExecCommand = "plugin-exec"

// execFailed is the exit status of a trampoline that could not start the
// plugin.
const execFailed = 126

// procsFlag collects repeated -procs flags.
type procsFlag []string

func (p *procsFlag) String() string { return strings.Join(*p, ",") }

func (p *procsFlag) Set(v string) error {
	if !filepath.IsAbs(v) || filepath.Base(v) != "cgroup.procs" {
		return fmt.Errorf("%q is not the absolute path of a cgroup.procs file", v)
	}
	*p = append(*p, v)
	return nil
}

// execArgs returns the trampoline's arguments (after ExecCommand) that run
// path with args as uid and gid, with no supplementary groups, after
// joining the cgroups of procs, as a child of the process parent.
func execArgs(uid, gid uint32, procs []string, parent int, path string, args []string) []string {
	out := []string{
		"-uid", strconv.FormatUint(uint64(uid), 10),
		"-gid", strconv.FormatUint(uint64(gid), 10),
		"-parent", strconv.Itoa(parent),
	}
	for _, p := range procs {
		out = append(out, "-procs", p)
	}
	return append(append(out, "--", path), args...)
}

// ExecMain is the trampoline that starts a tenant's plugin process. Run as
// root by the plugin host with the arguments
//
//	-uid UID -gid GID -parent PID [-procs FILE]... -- PATH [ARG]...
//
// it writes its own pid into each cgroup.procs FILE (cgroup v1 cannot clone
// into a cgroup; on v2 the host clones the trampoline into it instead),
// drops every supplementary group, takes GID and UID, sets no_new_privs and
// the parent-death signal (which the change of uid cleared), marks every fd
// above 2 close-on-exec, and executes PATH with the environment it was
// given. The plugin's runtime thus starts inside the tenant's cgroup, as the
// tenant, holding nothing of the host's. It returns an exit status only
// when that fails.
func ExecMain(args []string) int {
	// no_new_privs and the parent-death signal belong to a thread: set them
	// on the thread that calls execve.
	runtime.LockOSThread()
	if err := execPlugin(args); err != nil {
		fmt.Fprintf(os.Stderr, "kigumi %s: %v\n", ExecCommand, err)
		return execFailed
	}
	return 0 // not reached: execve replaced the process
}

func execPlugin(args []string) error {
	fs := flag.NewFlagSet(ExecCommand, flag.ContinueOnError)
	uid := fs.Uint("uid", 0, "")
	gid := fs.Uint("gid", 0, "")
	parent := fs.Int("parent", 0, "")
	var procs procsFlag
	fs.Var(&procs, "procs", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	argv := fs.Args()
	switch {
	case len(argv) == 0 || !filepath.IsAbs(argv[0]):
		return errors.New("no absolute plugin path after the flags")
	case *uid == 0 || *gid == 0 || *uid > math.MaxUint32 || *gid > math.MaxUint32:
		return fmt.Errorf("invalid uid or gid %d:%d", *uid, *gid)
	case *parent <= 1:
		return errors.New("no parent pid")
	}
	pid := strconv.Itoa(os.Getpid())
	for _, f := range procs {
		if err := os.WriteFile(f, []byte(pid), 0); err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	// Go changes the credentials of every thread of the process.
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("drop supplementary groups: %w", err)
	}
	if err := syscall.Setgid(int(*gid)); err != nil {
		return fmt.Errorf("setgid %d: %w", *gid, err)
	}
	if err := syscall.Setuid(int(*uid)); err != nil {
		return fmt.Errorf("setuid %d: %w", *uid, err)
	}
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("set the parent-death signal: %w", err)
	}
	// The host may have died before the signal was set again.
	if os.Getppid() != *parent {
		return fmt.Errorf("the plugin host (pid %d) is gone", *parent)
	}
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("close inherited files: %w", err)
	}
	if err := unix.Exec(argv[0], argv, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w", argv[0], err)
	}
	return nil
}

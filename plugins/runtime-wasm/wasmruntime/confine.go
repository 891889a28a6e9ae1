package wasmruntime

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"go.uber.org/automaxprocs/maxprocs"
	"golang.org/x/sys/unix"
)

// sandboxCaps are the only capabilities left in a sandbox's bounding set:
// what it needs, as root, before it drops to the tenant's user (chroot,
// setuid and setgid, and searching the tenant-owned state directory it
// chroots into). Dropping to a non-root user clears its effective,
// permitted and ambient sets, and its seccomp filter refuses capset and
// execve, so nothing can raise these again.
var sandboxCaps = []uintptr{unix.CAP_SETUID, unix.CAP_SETGID, unix.CAP_SYS_CHROOT, unix.CAP_DAC_READ_SEARCH}

// limitBoundingSet drops every capability but sandboxCaps from the calling
// thread's bounding set, which the sandbox it then starts inherits on each
// of its threads. The bounding set is per thread, so the caller must be a
// locked thread the Go runtime discards afterwards (see spawn). Without
// CAP_SETPCAP (the plugin not root) there is nothing to drop.
func limitBoundingSet() error {
	keep := map[uintptr]bool{}
	for _, c := range sandboxCaps {
		keep[c] = true
	}
	for c := uintptr(0); c <= unix.CAP_LAST_CAP; c++ {
		if keep[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, c, 0, 0, 0); err != nil {
			if errors.Is(err, unix.EINVAL) { // a kernel older than CAP_LAST_CAP
				return nil
			}
			if errors.Is(err, unix.EPERM) && os.Getuid() != 0 {
				return nil
			}
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	return nil
}

// checkNoCapabilities fails unless the process has no effective, permitted
// or inheritable capability (after dropping to the tenant's user) and no
// ambient one.
func checkNoCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	for _, d := range data {
		if d.Effective != 0 || d.Permitted != 0 || d.Inheritable != 0 {
			return fmt.Errorf("the sandbox kept capabilities (%+v)", data)
		}
	}
	for c := uintptr(0); c <= unix.CAP_LAST_CAP; c++ {
		if n, err := unix.PrctlRetInt(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_IS_SET, c, 0, 0); err == nil && n != 0 {
			return fmt.Errorf("the sandbox kept ambient capability %d", c)
		}
	}
	return nil
}

// setMaxProcs sets GOMAXPROCS from the CPU quota of the cgroups the sandbox
// has just joined: the Go runtime read it at start, outside them.
func setMaxProcs() error {
	if _, err := maxprocs.Set(maxprocs.Logger(func(string, ...any) {})); err != nil {
		return fmt.Errorf("set GOMAXPROCS from the CPU quota: %w", err)
	}
	return nil
}

// allowedSyscalls are what the Go runtime, wazero and the sandbox's own
// WASI host functions call once the sandbox has dropped to the tenant's
// user (traced on the package's tests; threads made by cgo's pthreads
// too). Everything else fails with EPERM: no sockets, no execve, no
// mount, ptrace, capset, setuid, kill of another process and so on.
var allowedSyscalls = []string{
	// memory, threads and signals
	"brk", "mmap", "munmap", "mprotect", "madvise", "mincore", "futex",
	"clone", "clone3", "set_robust_list", "rseq", "exit", "exit_group",
	"gettid", "getpid", "sched_yield", "sched_getaffinity", "rt_sigaction",
	"rt_sigprocmask", "rt_sigreturn", "sigaltstack", "restart_syscall",
	// time
	"nanosleep", "clock_gettime", "clock_nanosleep", "gettimeofday",
	// polling
	"epoll_create1", "epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait",
	"eventfd2", "pipe2", "ppoll", "poll", "pselect6",
	// files already open, and the state directory (the jail)
	"read", "readv", "pread64", "preadv", "write", "writev", "pwrite64",
	"pwritev", "lseek", "close", "dup", "dup3", "fcntl", "fstat",
	"newfstatat", "statx", "openat", "openat2", "getdents64", "readlinkat",
	"mkdirat", "unlinkat", "renameat", "renameat2", "symlinkat", "linkat",
	"fchmod", "fchmodat", "utimensat", "ftruncate", "fsync", "fdatasync",
	"fadvise64", "getrandom", "prlimit64",
	// harmless questions
	"getuid", "geteuid", "getgid", "getegid", "getppid", "getcwd", "uname",
}

// sandboxFilter is the sandbox's seccomp filter. Signals go to the
// sandbox's own pid only (it re-raises a recorded signal, and the Go
// runtime preempts its threads with tgkill); ioctl only asks whether a file
// is a terminal (TCGETS).
func sandboxFilter(pid int) seccomp.Filter {
	self := seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.Equal, Value: uint64(pid)}}
	return seccomp.Filter{
		NoNewPrivs: true,
		Flag:       seccomp.FilterFlagTSync,
		Policy: seccomp.Policy{
			DefaultAction: seccomp.ActionErrno,
			Syscalls: []seccomp.SyscallGroup{{
				Action: seccomp.ActionAllow,
				Names:  allowedSyscalls,
				NamesWithCondtions: []seccomp.NameWithConditions{
					{Name: "kill", Conditions: self},
					{Name: "tgkill", Conditions: self},
					{Name: "ioctl", Conditions: seccomp.ArgumentConditions{{Argument: 1, Operation: seccomp.Equal, Value: unix.TCGETS}}},
				},
			}},
		},
	}
}

// loadFilter installs the sandbox's seccomp filter on all its threads.
func loadFilter() error {
	if err := seccomp.LoadFilter(sandboxFilter(os.Getpid())); err != nil {
		return fmt.Errorf("load seccomp filter: %w", err)
	}
	return nil
}

// withDataLimit runs f with the process's data (RLIMIT_DATA: its heap and
// other private writable mappings) allowed to grow by at most limit bytes,
// and its Go memory limit as high, so that the garbage collector works
// before the rlimit is reached. Past it the Go runtime dies "out of
// memory", which the plugin reports as the compile budget (compilingMark).
// A limit of 0 runs f unlimited. Its error is only about the limits.
func withDataLimit(limit uint64, f func()) error {
	if limit == 0 {
		f()
		return nil
	}
	used, err := vmData()
	if err != nil {
		return err
	}
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_DATA, &old); err != nil {
		return fmt.Errorf("get RLIMIT_DATA: %w", err)
	}
	lim := unix.Rlimit{Cur: min(used+limit, old.Max), Max: old.Max}
	if err := unix.Setrlimit(unix.RLIMIT_DATA, &lim); err != nil {
		return fmt.Errorf("set RLIMIT_DATA: %w", err)
	}
	prev := debug.SetMemoryLimit(int64(min(used+limit, 1<<62)))
	f()
	debug.SetMemoryLimit(prev)
	if err := unix.Setrlimit(unix.RLIMIT_DATA, &old); err != nil {
		return fmt.Errorf("restore RLIMIT_DATA: %w", err)
	}
	return nil
}

// vmData reads the process's data size (VmData in /proc/self/status).
func vmData() (uint64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmData:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse VmData %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no VmData in /proc/self/status")
}

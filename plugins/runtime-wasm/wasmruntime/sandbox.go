package wasmruntime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"

	"github.com/dustin/go-humanize"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// SandboxCommand is the first argument that makes an executable embedding
// this runtime act as an instance's sandbox: it must then call SandboxMain.
const SandboxCommand = "__wasm-sandbox"

// The file descriptors the plugin hands the sandbox (cmd.ExtraFiles).
const (
	fdModule = 3 + iota // the verified module, a sealed memfd
	fdStdout            // stdout.log, append-only
	fdStderr            // stderr.log, append-only
	fdStatus            // status.json, written once at exit
	fdConfig            // read end of the config pipe (JSON sandboxConfig)
	fdReady             // write end of the ready pipe
	// fdGuest is the first of the guest's files: its stdin (if
	// guestConfig.Stdin), then each read-only mount's directory, opened
	// O_PATH, in the order of guestConfig.Mounts.
	fdGuest
)

// readyOK is what the sandbox writes to the ready pipe once the module is
// compiled and linked. Anything else is a JSON readyFailure. Before either,
// it writes compilingMark when it starts compiling, so that the plugin can
// tell a sandbox that died compiling (over its compile memory).
const (
	readyOK       = "ok"
	compilingMark = "compiling\n"
)

// readyFailure is why a sandbox could not get ready.
type readyFailure struct {
	Code      sdk.Code `json:"code"`
	Attribute string   `json:"attribute,omitempty"`
	Message   string   `json:"message"`
}

// sandboxConfig is what the plugin sends the sandbox through the config pipe.
type sandboxConfig struct {
	// Guest is what the module is granted.
	Guest guestConfig `json:"guest"`
	// MemoryPages caps the module's memory in 64 KiB pages; 0 means wazero's
	// maximum.
	MemoryPages uint32 `json:"memory_pages"`
	// Jail is the directory the sandbox chroots into before it drops
	// privileges: the state directory when a state permission is granted
	// (the module sees it at its guest path), else an empty directory.
	Jail string `json:"jail"`
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	// ProcsFiles are the cgroup.procs files the sandbox joins.
	ProcsFiles  []string `json:"procs_files"`
	CacheDir    string   `json:"cache_dir"`
	Interpreter bool     `json:"interpreter"`
	// CompileMemory is the compile budget's memory: how much the sandbox's
	// data may grow while it compiles; 0 means no limit.
	CompileMemory uint64 `json:"compile_memory"`
	// TimeBudget is how long the module may run, wall time from just
	// before its _start; 0 means no budget.
	TimeBudget time.Duration `json:"time_budget,omitempty"`
}

// SandboxMain runs one instance's sandbox; it returns the process exit code.
// args are the command-line arguments after SandboxCommand (there are none).
// It expects the file descriptors and config that Start hands it, and is
// not meant to be run by hand.
func SandboxMain(args []string) int {
	if len(args) != 0 {
		fmt.Fprintf(os.Stderr, "%s takes no arguments\n", SandboxCommand)
		return 2
	}
	ctx := context.Background()
	rec := &exitRecorder{f: os.NewFile(fdStatus, "status")}
	recordSignals(rec)
	defer func() {
		if p := recover(); p != nil {
			rec.record(exitStatus{ExitCode: goFatalExit, FinishedAt: time.Now(), Cause: sdk.CauseUnknown, Message: fmt.Sprintf("the sandbox failed: %v", p)})
			panic(p) // the Go runtime writes its dump to sandbox.log
		}
	}()
	ready := os.NewFile(fdReady, "ready")
	ctx, mod, cfg, err := prepareSandbox(ctx, ready)
	if err != nil {
		f := readyFailure{Code: sdk.CodeInternal, Message: err.Error()}
		if e := (*sdk.Error)(nil); errors.As(err, &e) {
			f = readyFailure{Code: e.Code, Attribute: e.Attribute, Message: e.Message}
			if f.Message == "" && e.Err != nil {
				f.Message = e.Err.Error()
			}
		}
		if b, err := json.Marshal(f); err == nil {
			_, _ = ready.Write(b)
		}
		return 1
	}
	if _, err := io.WriteString(ready, readyOK); err != nil {
		return 1
	}
	ready.Close()

	st := runModule(ctx, mod, cfg.MemoryPages, cfg.TimeBudget)
	rec.record(st)
	if st.ExitCode < 0 || st.ExitCode > 255 {
		return 255
	}
	return st.ExitCode
}

// exitRecorder writes the status file once: how the module ended, or the
// signal that ends the sandbox first.
type exitRecorder struct {
	once sync.Once
	f    *os.File
}

func (r *exitRecorder) record(st exitStatus) {
	r.once.Do(func() {
		if b, err := json.Marshal(st); err == nil {
			_, _ = r.f.Write(b)
		}
	})
}

// recordedSignals are the signals that end a Go program silently. The
// sandbox records them, then dies of them. Other signals a Go program
// either ignores or dies of with a dump on its stderr (sandbox.log), and
// only SIGKILL ends it leaving no trace: Inspect relies on that.
var recordedSignals = []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM}

// recordSignals makes the first of recordedSignals that reaches the sandbox
// end it with an exit record naming the signal, unless the module ended
// first. Stop replaces that record with its own.
func recordSignals(rec *exitRecorder) {
	c := make(chan os.Signal, 1)
	signal.Notify(c, recordedSignals...)
	go func() {
		sig := (<-c).(syscall.Signal)
		rec.record(exitStatus{
			ExitCode:   128 + int(sig),
			FinishedAt: time.Now(),
			Message:    "killed by " + unix.SignalName(sig) + ", not by the runtime",
			Cause:      sdk.CauseSignal,
			Signal:     int(sig),
		})
		signal.Reset(sig)
		_ = unix.Kill(os.Getpid(), sig)
	}()
}

// prepareSandbox reads the sandbox's config and links the module (see
// linkModule); it returns the context to run the module in, the module and
// the config.
func prepareSandbox(ctx context.Context, ready io.Writer) (context.Context, api.Module, sandboxConfig, error) {
	var cfg sandboxConfig
	b, err := io.ReadAll(os.NewFile(fdConfig, "config"))
	if err != nil {
		return ctx, nil, cfg, fmt.Errorf("read config: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return ctx, nil, cfg, fmt.Errorf("decode config: %w", err)
	}
	ctx, mod, err := linkModule(ctx, cfg, ready)
	return ctx, mod, cfg, err
}

// linkModule does everything up to running the module and returns it,
// with the context (carrying its guest) to call it in. Still root, it
// compiles the module on one core within the compile memory (through the
// root-only compilation cache), joins the cgroups (and sets GOMAXPROCS
// from their CPU quota) and chroots into its jail; then it drops to the
// tenant's user, checks that no capability is left, loads its seccomp
// filter (confine.go) and links the module. Nothing of the tenant's runs
// before the jail and the drop, and the jail holds whatever a WASI path in
// the state resolves to, symlinks included; the read-only mounts are open
// directories, inside which the kernel resolves every path (dirFS).
func linkModule(ctx context.Context, cfg sandboxConfig, ready io.Writer) (context.Context, api.Module, error) {
	bin, err := io.ReadAll(io.NewSectionReader(os.NewFile(fdModule, "module"), 0, math.MaxInt64))
	if err != nil {
		return ctx, nil, fmt.Errorf("read module: %w", err)
	}
	if _, err := io.WriteString(ready, compilingMark); err != nil {
		return ctx, nil, err
	}
	// The compile has its own budget, not the instance's limits: a Go
	// module of a few MiB takes hundreds of MiB to compile, far more than
	// the instance needs to run. On one core, within compile_memory and
	// compile_timeout (the plugin kills a sandbox not ready by then).
	runtime.GOMAXPROCS(1)
	var rt wazero.Runtime
	var compiled wazero.CompiledModule
	var cerr error
	if err := withDataLimit(cfg.CompileMemory, func() {
		rt, compiled, cerr = compileCached(ctx, cfg, bin)
	}); err != nil {
		return ctx, nil, err
	}
	if cerr != nil {
		return ctx, nil, &sdk.Error{Code: sdk.CodeInvalid, Attribute: "module", Message: "compile module: " + cerr.Error(), Err: cerr}
	}
	if err := joinCgroups(cfg.ProcsFiles); err != nil {
		return ctx, nil, err
	}
	if err := setMaxProcs(); err != nil {
		return ctx, nil, err
	}
	jailed, err := jail(cfg.Jail)
	if err != nil {
		return ctx, nil, err
	}
	if jailed {
		cfg.Jail = "/" // from now on, the jail is the root
	}
	if err := dropPrivileges(cfg.UID, cfg.GID); err != nil {
		return ctx, nil, err
	}
	if nnp, err := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); err != nil || nnp != 1 {
		return ctx, nil, fmt.Errorf("no_new_privs is not set (%d, %v)", nnp, err)
	}
	if err := checkNoCapabilities(); err != nil {
		return ctx, nil, err
	}
	if err := loadFilter(); err != nil {
		return ctx, nil, err
	}
	if err := instantiateHost(ctx, rt); err != nil {
		return ctx, nil, fmt.Errorf("instantiate host modules: %w", err)
	}
	var stdin io.Reader
	fd := fdGuest
	if cfg.Guest.Stdin {
		stdin = os.NewFile(uintptr(fd), "stdin")
		fd++
	}
	var fsys []experimentalsys.FS
	for _, m := range cfg.Guest.Mounts {
		if m.State {
			fsys = append(fsys, stateFS(cfg.Jail, m.ReadOnly))
			continue
		}
		fsys = append(fsys, readOnlyDir(fd))
		fd++
	}
	g := newGuest(cfg.Guest, fsys)
	ctx = withGuest(ctx, g)
	mc := g.moduleConfig(stdin, capLog(os.NewFile(fdStdout, stdoutFile)), capLog(os.NewFile(fdStderr, stderrFile)))
	mod, err := rt.InstantiateModule(ctx, compiled, mc.WithStartFunctions())
	if err != nil {
		return ctx, nil, sdk.Errorf(sdk.CodeInvalid, "link module: %w", err)
	}
	if mod.ExportedFunction("_start") == nil {
		return ctx, nil, sdk.Errorf(sdk.CodeInvalid, "module exports no _start function")
	}
	return ctx, mod, nil
}

// joinCgroups moves the calling process into each cgroup.procs file's cgroup.
func joinCgroups(procsFiles []string) error {
	pid := strconv.Itoa(os.Getpid())
	for _, p := range procsFiles {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
		_, err = f.WriteString(pid)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("join cgroup %s: %w", p, err)
		}
	}
	return nil
}

// jail makes dir the process's root directory, so that no path the module
// uses, symlinks included, leads out of it; dir itself is opened without
// following symlinks. It reports whether it did: not running as root
// (tenant users off, engine not root), it may not chroot, and the module
// runs unjailed with the engine user's own rights, which that mode
// documents.
func jail(dir string) (bool, error) {
	if os.Getuid() != 0 {
		return false, nil
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS,
	})
	if err != nil {
		return false, fmt.Errorf("open jail %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Fchdir(fd); err != nil {
		return false, fmt.Errorf("enter jail %s: %w", dir, err)
	}
	if err := unix.Chroot("."); err != nil {
		return false, fmt.Errorf("chroot %s: %w", dir, err)
	}
	return true, unix.Chdir("/")
}

// dropPrivileges switches every thread to uid and gid when running as root.
// It refuses to run a workload as root. Not running as root, it keeps the
// current identity, which has nothing to drop.
func dropPrivileges(uid, gid uint32) error {
	if os.Getuid() != 0 {
		return nil
	}
	if uid == 0 || gid == 0 {
		return sdk.Errorf(sdk.CodeInvalid, "refusing to run a workload as root (uid %d, gid %d)", uid, gid)
	}
	if err := syscall.Setgroups([]int{int(gid)}); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(int(gid)); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setuid(int(uid)); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	return nil
}

// runtimeConfig is the sandbox's wazero configuration. closeOnDone
// compiles the checks that stop the module when its context is done, which
// a time budget needs and which cost a little otherwise. wazero keys its
// compilation cache on it too, so that code compiled without the checks
// never runs under a budget.
func runtimeConfig(interpreter bool, memoryPages uint32, closeOnDone bool, cache wazero.CompilationCache) wazero.RuntimeConfig {
	c := wazero.NewRuntimeConfigCompiler()
	if interpreter {
		c = wazero.NewRuntimeConfigInterpreter()
	}
	if memoryPages > 0 {
		c = c.WithMemoryLimitPages(memoryPages)
	}
	if closeOnDone {
		c = c.WithCloseOnContextDone(true)
	}
	if cache != nil {
		c = c.WithCompilationCache(cache)
	}
	return c
}

// compileCached compiles bin with the compilation cache in cfg.CacheDir and,
// if the cache can't be used, without it. The cache directory is named
// after the module's sha256 (cache.go): one named otherwise is not used,
// so that no module's code is ever cached where another's is looked up.
func compileCached(ctx context.Context, cfg sandboxConfig, bin []byte) (wazero.Runtime, wazero.CompiledModule, error) {
	sum := sha256.Sum256(bin)
	if cfg.CacheDir != "" && filepath.Base(cfg.CacheDir) == hex.EncodeToString(sum[:]) {
		if cache, err := wazero.NewCompilationCacheWithDir(cfg.CacheDir); err == nil {
			rt := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(cfg.Interpreter, cfg.MemoryPages, cfg.TimeBudget > 0, cache))
			if compiled, err := rt.CompileModule(ctx, bin); err == nil {
				return rt, compiled, nil
			}
			_ = rt.Close(ctx)
		}
	}
	rt := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(cfg.Interpreter, cfg.MemoryPages, cfg.TimeBudget > 0, nil))
	compiled, err := rt.CompileModule(ctx, bin)
	if err != nil {
		return nil, nil, errors.Join(err, rt.Close(ctx))
	}
	return rt, compiled, nil
}

// maxLogBytes caps each output stream of an instance, so that no workload
// fills the host's disk with logs.
const maxLogBytes = 16 << 20

// cappedWriter passes the first left bytes on to w, then drops the rest,
// saying so once.
type cappedWriter struct {
	w    io.Writer
	left int64
}

func capLog(w io.Writer) io.Writer { return &cappedWriter{w: w, left: maxLogBytes} }

// Write implements io.Writer. It never fails the workload's write.
func (c *cappedWriter) Write(p []byte) (int, error) {
	if c.left <= 0 {
		return len(p), nil
	}
	keep := p
	if int64(len(keep)) > c.left {
		keep = keep[:c.left]
	}
	c.left -= int64(len(keep))
	_, _ = c.w.Write(keep)
	if c.left == 0 {
		_, _ = io.WriteString(c.w, "\n[kigumi: this instance reached its log limit; further output is dropped]\n")
	}
	return len(p), nil
}

// runModule runs the module's _start function and reports how it ended.
// A budget above 0 is its time budget: wazero stops the module once it is
// spent (runtimeConfig's closeOnDone), and a sleep ends then (nanosleep).
// When it failed, the message says how much memory it had of memoryPages,
// since a module that reaches its cap usually fails (a Go module exits
// with code 2, a Rust one traps): wazero refuses the growth silently.
func runModule(ctx context.Context, mod api.Module, memoryPages uint32, budget time.Duration) exitStatus {
	if budget > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, budget)
		defer cancel()
		if g := guestOf(ctx); g != nil {
			g.wake = ctx.Done()
		}
	}
	_, err := mod.ExportedFunction("_start").Call(ctx)
	st := exitStatus{FinishedAt: time.Now(), Cause: sdk.CauseExit}
	var exit *sys.ExitError
	switch {
	case err == nil:
	// A module may exit with wazero's deadline code itself: only the
	// budget's own deadline, passed, makes it the budget.
	case errors.As(err, &exit) && exit.ExitCode() == sys.ExitCodeDeadlineExceeded && budget > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded):
		st.ExitCode, st.Cause = budgetExit, sdk.CauseLimit
		st.Message = fmt.Sprintf("over its time budget of %s", budget)
		return st
	case errors.As(err, &exit):
		st.ExitCode = int(exit.ExitCode())
	default:
		st.ExitCode, st.Cause = 1, sdk.CauseTrap
		st.Message = oneLine(err.Error())
	}
	if mem := moduleMemory(mod); st.ExitCode != 0 && mem != nil {
		limit := "wasm32's 4 GiB"
		if memoryPages > 0 {
			limit = humanize.IBytes(uint64(memoryPages) * pageSize)
		}
		usage := fmt.Sprintf("its memory was %s of its limit of %s", humanize.IBytes(uint64(mem.Size())), limit)
		if st.Message == "" {
			st.Message = fmt.Sprintf("exited with code %d; %s", st.ExitCode, usage)
		} else {
			st.Message += "; " + usage
		}
	}
	return st
}

// budgetExit is the exit code of a module stopped at its time budget, as
// timeout(1)'s.
const budgetExit = 124

// moduleMemory returns mod's memory, or nil if it has none (wazero returns
// a typed nil then).
func moduleMemory(mod api.Module) api.Memory {
	if m := mod.Memory(); m != nil && !reflect.ValueOf(m).IsNil() {
		return m
	}
	return nil
}

// maxMessage caps the length of a status message made of text the workload
// may choose (a trap names the module's functions).
const maxMessage = 1024

// oneLine makes s fit for a status message on an operator's terminal: its
// lines joined with "; ", control characters escaped, and at most
// maxMessage bytes.
func oneLine(s string) string {
	var b strings.Builder
	for l := range strings.Lines(strings.ToValidUTF8(s, "\uFFFD")) {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		for _, r := range l {
			if unicode.IsPrint(r) {
				b.WriteRune(r)
			} else {
				q := strconv.QuoteRune(r)
				b.WriteString(q[1 : len(q)-1])
			}
		}
		if b.Len() > maxMessage {
			break
		}
	}
	if out := b.String(); len(out) > maxMessage {
		return strings.ToValidUTF8(out[:maxMessage], "") + "..."
	}
	return b.String()
}

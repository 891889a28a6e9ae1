package wasmruntime

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"
)

// guestConfig is everything an instance's WASI program is granted, apart
// from how the process that runs it is set up: its argv, env, preopened
// directories, stdin, clocks and random source. Nothing is granted that is
// not named here: no host env, no sockets, no other files.
type guestConfig struct {
	// Argv0 is the module's file name, as wazero and wasmtime set it.
	Argv0 string   `json:"argv0"`
	Args  []string `json:"args"`
	// Env is the spec's env, and nothing of the host's.
	Env map[string]string `json:"env"`
	// Mounts are the preopened directories, in preopen order.
	Mounts []guestMount `json:"mounts"`
	// Clock grants the real wall and monotonic clocks and sleep; without
	// it the clocks are deterministic fakes.
	Clock bool `json:"clock,omitempty"`
	// Random grants the host's random numbers (crypto/rand); without it
	// random numbers are a deterministic sequence seeded by RandomSeed.
	Random     bool   `json:"random,omitempty"`
	RandomSeed string `json:"random_seed,omitempty"`
	// Stdin is set when the instance reads a file as its stdin, handed
	// over as an open file; without it stdin is empty.
	Stdin bool `json:"stdin,omitempty"`
}

// guestMount is a preopened directory.
type guestMount struct {
	// Guest is the path the program sees it at.
	Guest    string `json:"guest"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// State marks the instance's state; the others are read-only
	// directories handed over as open directory file descriptors.
	State bool `json:"state,omitempty"`
}

// fakeWallEpoch is where the fake wall clock starts: midnight UTC
// 2022-01-01, as wazero's.
const fakeWallEpoch = 1640995200 * int64(time.Second)

// guest is one running instance's grants, which it can give up (see the
// kigumi host module in hostmod.go) but never get back. The WASI functions
// find it in the context the module is called with (withGuest).
type guest struct {
	cfg guestConfig
	// env is cfg.Env as "KEY=value" strings, sorted.
	env []string
	// mounts are the preopens, as cfg.Mounts orders them.
	mounts []*revocableFS

	envGone, clockGone, randomGone atomic.Bool
	// start is when the instance started: the real monotonic clock counts
	// from it.
	start time.Time
	// mono is the last monotonic reading, so that the clock goes on
	// from it, never back, once it is fake; wall is the fake wall clock.
	mono, wall atomic.Int64
	// wake, closed once the instance's time budget is spent, ends its
	// sleeps; nil without a budget. Set before the module runs, and read
	// only by the goroutine that runs it.
	wake <-chan struct{}
}

type guestKey struct{}

// withGuest returns ctx carrying g, for the host functions.
func withGuest(ctx context.Context, g *guest) context.Context {
	return context.WithValue(ctx, guestKey{}, g)
}

// guestOf returns the guest a host function was called for, or nil.
func guestOf(ctx context.Context) *guest {
	g, _ := ctx.Value(guestKey{}).(*guest)
	return g
}

// newGuest makes the grants of cfg. fsys are the preopens' file systems,
// as cfg.Mounts orders them.
func newGuest(cfg guestConfig, fsys []experimentalsys.FS) *guest {
	g := &guest{cfg: cfg, start: time.Now()}
	for _, k := range slices.Sorted(maps.Keys(cfg.Env)) {
		g.env = append(g.env, k+"="+cfg.Env[k])
	}
	for _, f := range fsys {
		r := &revocableFS{FS: f}
		// wazero opens a preopen's directory on its first use, and
		// panics if that fails: open it now, while it may be.
		if root, errno := f.OpenFile(".", experimentalsys.O_RDONLY, 0); errno == 0 {
			r.root = root
		}
		g.mounts = append(g.mounts, r)
	}
	g.mono.Store(-int64(time.Millisecond))
	g.wall.Store(fakeWallEpoch - int64(time.Millisecond))
	return g
}

// moduleConfig is the wazero config of g's module.
func (g *guest) moduleConfig(stdin io.Reader, stdout, stderr io.Writer) wazero.ModuleConfig {
	mc := wazero.NewModuleConfig().
		WithName("").
		WithArgs(append([]string{g.cfg.Argv0}, g.cfg.Args...)...).
		WithStdout(stdout).
		WithStderr(stderr).
		WithWalltime(g.walltime, sys.ClockResolution(time.Microsecond)).
		WithNanotime(g.nanotime, sys.ClockResolution(1)).
		WithNanosleep(g.nanosleep).
		WithRandSource(g.randSource())
	if stdin != nil {
		mc = mc.WithStdin(stdin)
	}
	// The env is served by environ_get (hostmod.go), from g.env.
	fc := wazero.NewFSConfig()
	for i, m := range g.cfg.Mounts {
		fc = fc.(sysfs.FSConfig).WithSysFSMount(g.mounts[i], m.Guest)
	}
	return mc.WithFSConfig(fc)
}

func (g *guest) walltime() (int64, int32) {
	if !g.cfg.Clock || g.clockGone.Load() {
		t := g.wall.Add(int64(time.Millisecond))
		return t / 1e9, int32(t % 1e9)
	}
	t := time.Now()
	return t.Unix(), int32(t.Nanosecond())
}

func (g *guest) nanotime() int64 {
	if !g.cfg.Clock || g.clockGone.Load() {
		return g.mono.Add(int64(time.Millisecond))
	}
	n := time.Since(g.start).Nanoseconds()
	// Racing a drop, the fake clock may have moved on: never go back.
	for {
		last := g.mono.Load()
		if n <= last {
			return g.mono.Add(1)
		}
		if g.mono.CompareAndSwap(last, n) {
			return n
		}
	}
}

// nanosleep sleeps with the clock permission, until the time budget is
// spent: then it ends the module, as wazero does at its next check (a
// module that slept till then would else go on as if it had slept).
func (g *guest) nanosleep(ns int64) {
	if !g.cfg.Clock || g.clockGone.Load() {
		return
	}
	t := time.NewTimer(time.Duration(ns))
	defer t.Stop()
	select {
	case <-t.C:
	case <-g.wake:
		panic(sys.NewExitError(sys.ExitCodeDeadlineExceeded))
	}
}

// deterministicSeed seeds the random source of modules without the random
// permission and without a seed of their own.
var deterministicSeed = [32]byte{'k', 'i', 'g', 'u', 'm', 'i'}

// errRandomDropped is what random_get reads once the instance has dropped
// its random source: the call fails with EIO.
var errRandomDropped = errors.New("the instance dropped its random source")

// randSource is the module's random source: the host's (crypto/rand, not
// wazero's per-instance math/rand seeding) with the random permission, else
// ChaCha8 seeded with the spec's seed (or a fixed one), which gives the
// same sequence on every run.
func (g *guest) randSource() io.Reader {
	var r io.Reader = crand.Reader
	if !g.cfg.Random {
		seed := deterministicSeed
		if g.cfg.RandomSeed != "" {
			seed = sha256.Sum256([]byte(g.cfg.RandomSeed))
		}
		r = rand.NewChaCha8(seed)
	}
	return readerFunc(func(p []byte) (int, error) {
		if g.randomGone.Load() {
			return 0, errRandomDropped
		}
		return r.Read(p)
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// dropMount drops the preopen at guest path p for good; ok is false when
// there is none.
func (g *guest) dropMount(p string) bool {
	p = path.Clean(p)
	found := false
	for i, m := range g.cfg.Mounts {
		if m.Guest == p {
			g.mounts[i].gone.Store(true)
			found = true
		}
	}
	return found
}

func (g *guest) dropFS() {
	for _, m := range g.mounts {
		m.gone.Store(true)
	}
}

func (g *guest) dropAll() {
	g.dropFS()
	g.envGone.Store(true)
	g.clockGone.Store(true)
	g.randomGone.Store(true)
}

// instantiateHost instantiates, in rt, the host modules a module may
// import: wasi_snapshot_preview1, with environ_get and environ_sizes_get
// served from the instance's guest (so that it can drop its env), and
// kigumi (hostmod.go).
func instantiateHost(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(wasiModule)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	i32 := api.ValueTypeI32
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(environSizesGet), []api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("result.environc", "result.environv_len").
		Export("environ_sizes_get")
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(environGet), []api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("environ", "environ_buf").
		Export("environ_get")
	if _, err := b.Instantiate(ctx); err != nil {
		return err
	}
	return instantiateKigumi(ctx, rt)
}

// The WASI errno values the runtime's own functions return.
const (
	errnoSuccess = 0
	errnoFault   = 21
	errnoInval   = 28
	errnoNoent   = 44
	errnoNosys   = 52
)

// environ returns what environ_get serves the guest: its env, or nothing
// once dropped.
func (g *guest) environ() []string {
	if g.envGone.Load() {
		return nil
	}
	return g.env
}

func environSizesGet(ctx context.Context, mod api.Module, stack []uint64) {
	g := guestOf(ctx)
	if g == nil {
		stack[0] = errnoNosys
		return
	}
	env := g.environ()
	size := 0
	for _, e := range env {
		size += len(e) + 1
	}
	mem := mod.Memory()
	if !mem.WriteUint32Le(uint32(stack[0]), uint32(len(env))) || !mem.WriteUint32Le(uint32(stack[1]), uint32(size)) {
		stack[0] = errnoFault
		return
	}
	stack[0] = errnoSuccess
}

func environGet(ctx context.Context, mod api.Module, stack []uint64) {
	g := guestOf(ctx)
	if g == nil {
		stack[0] = errnoNosys
		return
	}
	mem := mod.Memory()
	ptrs, buf := uint32(stack[0]), uint32(stack[1])
	for i, e := range g.environ() {
		if !mem.WriteUint32Le(ptrs+uint32(4*i), buf) || !mem.WriteString(buf, e) || !mem.WriteByte(buf+uint32(len(e)), 0) {
			stack[0] = errnoFault
			return
		}
		buf += uint32(len(e)) + 1
	}
	stack[0] = errnoSuccess
}

// revocableFS is a preopen the instance can drop: from then on, every path
// operation on it fails with EPERM and every file opened through it with
// EBADF.
type revocableFS struct {
	experimentalsys.FS
	gone atomic.Bool
	// root is the mount's directory, opened before the instance runs, for
	// wazero's first open of "." (see newGuest); nil once handed out.
	root experimentalsys.File
}

const (
	errDropped     = experimentalsys.EPERM
	errDroppedFile = experimentalsys.EBADF
)

// OpenFile implements experimentalsys.FS.
func (r *revocableFS) OpenFile(p string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	if p == "." && r.root != nil && flag == experimentalsys.O_RDONLY {
		root := r.root
		r.root = nil
		return &revocableFile{File: root, gone: &r.gone}, 0
	}
	if r.gone.Load() {
		return nil, errDropped
	}
	f, errno := r.FS.OpenFile(p, flag, perm)
	if errno != 0 {
		return nil, errno
	}
	return &revocableFile{File: f, gone: &r.gone}, 0
}

// Lstat implements experimentalsys.FS.
func (r *revocableFS) Lstat(p string) (sys.Stat_t, experimentalsys.Errno) {
	if r.gone.Load() {
		return sys.Stat_t{}, errDropped
	}
	return r.FS.Lstat(p)
}

// Stat implements experimentalsys.FS.
func (r *revocableFS) Stat(p string) (sys.Stat_t, experimentalsys.Errno) {
	if r.gone.Load() {
		return sys.Stat_t{}, errDropped
	}
	return r.FS.Stat(p)
}

// Mkdir implements experimentalsys.FS.
func (r *revocableFS) Mkdir(p string, perm fs.FileMode) experimentalsys.Errno {
	if r.gone.Load() {
		return errDropped
	}
	return r.FS.Mkdir(p, perm)
}

// Chmod implements experimentalsys.FS.
func (r *revocableFS) Chmod(p string, perm fs.FileMode) experimentalsys.Errno {
	if r.gone.Load() {
		return errDropped
	}
	return r.FS.Chmod(p, perm)
}

// Rename implements experimentalsys.FS.
func (r *revocableFS) Rename(from, to string) experimentalsys.Errno {
	if r.gone.Load() {
		return errDropped
	}
	return r.FS.Rename(from, to)
}

// Rmdir implements experimentalsys.FS.
func (r *revocableFS) Rmdir(p string) experimentalsys.Errno {
	if r.gone.Load() {
		return errDropped
	}
	return r.FS.Rmdir(p)
}

// Unlink implements experimentalsys.FS.
func (r *revocableFS) Unlink(p string) experimentalsys.Errno {
	if r.gone.Load() {
		return errDropped
	}
	return r.FS.Unlink(p)
}

// Link implements experimentalsys.FS.
func (r *revocableFS) Link(oldPath, newPath string) experimentalsys.Errno {
	if r.gone.Load() {
		return errDropped
	}
	return r.FS.Link(oldPath, newPath)
}

// Symlink implements experimentalsys.FS.
func (r *revocableFS) Symlink(oldPath, linkName string) experimentalsys.Errno {
	if r.gone.Load() {
		return errDropped
	}
	return r.FS.Symlink(oldPath, linkName)
}

// Readlink implements experimentalsys.FS.
func (r *revocableFS) Readlink(p string) (string, experimentalsys.Errno) {
	if r.gone.Load() {
		return "", errDropped
	}
	return r.FS.Readlink(p)
}

// Utimens implements experimentalsys.FS.
func (r *revocableFS) Utimens(p string, atim, mtim int64) experimentalsys.Errno {
	if r.gone.Load() {
		return errDropped
	}
	return r.FS.Utimens(p, atim, mtim)
}

// revocableFile is a file opened through a revocableFS: once the preopen
// is dropped, everything but Close, IsDir and Seek fails with EBADF. (IsDir
// keeps answering, so that path operations on the dropped preopen reach
// revocableFS and fail with its EPERM; Seek moves an offset, and go vet
// insists on io.Seeker's signature for a method of that name.)
type revocableFile struct {
	experimentalsys.File
	gone *atomic.Bool
}

func (f *revocableFile) Dev() (uint64, experimentalsys.Errno) {
	if f.gone.Load() {
		return 0, errDroppedFile
	}
	return f.File.Dev()
}

func (f *revocableFile) Ino() (sys.Inode, experimentalsys.Errno) {
	if f.gone.Load() {
		return 0, errDroppedFile
	}
	return f.File.Ino()
}

func (f *revocableFile) SetAppend(enable bool) experimentalsys.Errno {
	if f.gone.Load() {
		return errDroppedFile
	}
	return f.File.SetAppend(enable)
}

func (f *revocableFile) Stat() (sys.Stat_t, experimentalsys.Errno) {
	if f.gone.Load() {
		return sys.Stat_t{}, errDroppedFile
	}
	return f.File.Stat()
}

func (f *revocableFile) Read(buf []byte) (int, experimentalsys.Errno) {
	if f.gone.Load() {
		return 0, errDroppedFile
	}
	return f.File.Read(buf)
}

func (f *revocableFile) Pread(buf []byte, off int64) (int, experimentalsys.Errno) {
	if f.gone.Load() {
		return 0, errDroppedFile
	}
	return f.File.Pread(buf, off)
}

func (f *revocableFile) Readdir(n int) ([]experimentalsys.Dirent, experimentalsys.Errno) {
	if f.gone.Load() {
		return nil, errDroppedFile
	}
	return f.File.Readdir(n)
}

func (f *revocableFile) Write(buf []byte) (int, experimentalsys.Errno) {
	if f.gone.Load() {
		return 0, errDroppedFile
	}
	return f.File.Write(buf)
}

func (f *revocableFile) Pwrite(buf []byte, off int64) (int, experimentalsys.Errno) {
	if f.gone.Load() {
		return 0, errDroppedFile
	}
	return f.File.Pwrite(buf, off)
}

func (f *revocableFile) Truncate(size int64) experimentalsys.Errno {
	if f.gone.Load() {
		return errDroppedFile
	}
	return f.File.Truncate(size)
}

func (f *revocableFile) Sync() experimentalsys.Errno {
	if f.gone.Load() {
		return errDroppedFile
	}
	return f.File.Sync()
}

func (f *revocableFile) Datasync() experimentalsys.Errno {
	if f.gone.Load() {
		return errDroppedFile
	}
	return f.File.Datasync()
}

func (f *revocableFile) Utimens(atim, mtim int64) experimentalsys.Errno {
	if f.gone.Load() {
		return errDroppedFile
	}
	return f.File.Utimens(atim, mtim)
}

// dirFS is a read-only fs.FS of the directory open as fd: every path is
// resolved by the kernel inside it (openat2 RESOLVE_IN_ROOT), so no path,
// "..", absolute symlink or symlink pointing out, leads out of it, whatever
// the process's root. It serves the read-only mounts, whose directories the
// plugin opens and hands the sandbox (openGuestFiles), so that they are
// reachable from inside its jail.
type dirFS struct{ fd int }

// Open implements fs.FS.
func (d dirFS) Open(name string) (fs.File, error) {
	if name == "" {
		name = "."
	}
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	fd, err := unix.Openat2(d.fd, name, &unix.OpenHow{
		// O_NONBLOCK: a FIFO must not hang the open; files ignore it.
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), name), nil
}

// readOnlyDir is the wazero file system of a read-only mount open as fd.
func readOnlyDir(fd int) experimentalsys.FS {
	return &sysfs.ReadFS{FS: &sysfs.AdaptFS{FS: dirFS{fd: fd}}}
}

// stateFS is the wazero file system of the state at dir (the jail's root
// in the sandbox), read-only or not.
func stateFS(dir string, readOnly bool) experimentalsys.FS {
	if readOnly {
		return &sysfs.ReadFS{FS: sysfs.DirFS(dir)}
	}
	return sysfs.DirFS(dir)
}

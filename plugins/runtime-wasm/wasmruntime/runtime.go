package wasmruntime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kigumi/kigumi/core/logfile"

	"github.com/containerd/log"
	"github.com/dustin/go-humanize"
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/fstree"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/internal/registry"
)

// Version is the plugin's version.
const Version = "0.1.0"

const (
	defaultMaxModuleSize = "64MiB"
	// defaultCompileTimeout is how long a sandbox may take to compile
	// its module and link it, unless compile_timeout says otherwise.
	defaultCompileTimeout = 10 * time.Second
	// defaultCompileMemory is how much more memory a sandbox may use while
	// it compiles, unless compile_memory says otherwise.
	defaultCompileMemory = "512MiB"
	pageSize             = 65536
	maxPages             = 65536 // 4 GiB, wasm32's limit
	// pollInterval is how often Stop and Logs look at a running sandbox.
	pollInterval = 50 * time.Millisecond
	// destroyStopTimeout is how long Destroy lets a sandbox end on SIGTERM.
	destroyStopTimeout = 5 * time.Second
)

// child identifies a sandbox this process started; the start time tells it
// from a later process that reuses the pid.
type child struct {
	pid        int
	startTicks uint64
}

// Runtime runs WASI modules, one sandbox process per instance. It implements
// sdk.Runtime. Its zero value is not usable; call New.
type Runtime struct {
	// log is where housekeeping that fails says so (prune).
	log           hclog.Logger
	interpreter   bool
	maxModuleSize int64
	// compileTimeout is the compile budget: a sandbox not ready within it
	// is killed, and the instance fails.
	compileTimeout time.Duration
	// compileMemory is the compile budget's memory (sandboxConfig).
	compileMemory uint64
	// timeBudget is the time budget of instances that set none; 0 is
	// none. maxTimeBudget is the most an instance may set; 0 is no most.
	timeBudget, maxTimeBudget time.Duration
	// dataDir is the plugin's DataDir; empty until Configure.
	dataDir string
	// cacheDir holds the compilation cache (cache.go), which the
	// sandboxes fill and read while still root, inside the instance's
	// cgroup; empty until Configure.
	cacheDir string
	// grace is how long prune keeps what no live instance uses after its
	// last use (pruneGrace).
	grace time.Duration
	// oci holds the modules pulled from registries (oci.go); nil until
	// Configure.
	oci *ociStore
	// emptyDir is the empty directory a sandbox without state is jailed in.
	emptyDir string

	mu sync.Mutex
	// children maps the sandboxes this process started to a channel closed
	// once they are reaped.
	children map[child]chan struct{}

	exits exitWatch // watch.go
	// scanned holds what Validate read of module files, by version of
	// the file.
	scanned map[moduleID]scannedModule
}

// New returns a Runtime with default settings and no compilation cache
// until Configure.
func New() *Runtime {
	size, _ := humanize.ParseBytes(defaultMaxModuleSize)
	mem, _ := humanize.ParseBytes(defaultCompileMemory)
	return &Runtime{log: sdk.NewLogger(), maxModuleSize: int64(size), compileTimeout: defaultCompileTimeout, compileMemory: mem, grace: pruneGrace, children: map[child]chan struct{}{}, scanned: map[moduleID]scannedModule{}}
}

// Info describes the plugin and its settings.
func (r *Runtime) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{
		Name:    "wasm",
		Kind:    sdk.KindRuntime,
		Version: Version,
		Schema: sdk.Schema{Attributes: []sdk.Attribute{
			{Name: "compiler", Type: sdk.TypeString, Description: `wazero engine: "compiler" (default) or "interpreter"`},
			{Name: "max_module_size", Type: sdk.TypeString, Description: `largest module accepted, file or image layer, such as "64MiB" (default)`},
			{Name: "compile_timeout", Type: sdk.TypeString, Description: `how long an instance's sandbox may take to compile and link its module, such as "10s" (default)`},
			{Name: "compile_memory", Type: sdk.TypeString, Description: `how much more memory an instance's sandbox may take while it compiles its module, such as "512MiB" (default)`},
			{Name: "time_budget", Type: sdk.TypeString, Description: `the time budget of instances that set none, such as "1h" (default: max_time_budget, else none)`},
			{Name: "max_time_budget", Type: sdk.TypeString, Description: `the longest time budget an instance may set, such as "24h" (default: no limit)`},
		}, Blocks: []sdk.Block{registry.Block}},
		InstanceSchema: sdk.Schema{Attributes: []sdk.Attribute{
			{Name: "random_seed", Type: sdk.TypeString, Description: "seeds the deterministic random source of an instance without the random permission"},
			{Name: "time_budget", Type: sdk.TypeString, Description: `how long the module may run, wall time from its _start, such as "30s"; over it, it is stopped with cause "limit"`},
		}},
		Capabilities: sdk.Capabilities{
			Scope:     sdk.ScopeHost,
			Artifacts: []string{sdk.ArtifactWasm},
			Isolation: []string{sdk.IsolationUser, sdk.IsolationCgroup, sdk.IsolationNoNewPrivs, sdk.IsolationSeccomp, sdk.IsolationChroot, sdk.IsolationNoNetwork},
			Permissions: []sdk.PermissionSpec{
				{Name: sdk.PermStateRead, Description: "read the instance's state, preopened at its guest path (/ by default)"},
				{Name: sdk.PermStateWrite, Description: "read and write the instance's state, preopened at its guest path (/ by default)"},
				{Name: sdk.PermClock, Description: "the real wall and monotonic clocks, and sleep"},
				{Name: sdk.PermRandom, Description: "random numbers from the host (else a fixed seed)"},
			},
			Features: []string{sdk.FeatureTenantLifecycle, sdk.FeatureValidate, sdk.FeatureWatch},
		},
	}, nil
}

// Configure applies the settings, creates the compilation cache and the
// module store in DataDir, and prunes them of what no live instance uses
// (a crashed plugin may have left some).
func (r *Runtime) Configure(ctx context.Context, req sdk.ConfigureRequest) error {
	if v, ok := req.Settings["compiler"]; ok {
		switch s, _ := v.(string); s {
		case "compiler":
			r.interpreter = false
		case "interpreter":
			r.interpreter = true
		default:
			return sdk.InvalidAttribute("compiler", `must be "compiler" or "interpreter", not %v`, v)
		}
	}
	if v, ok := req.Settings["max_module_size"]; ok {
		s, _ := v.(string)
		n, err := humanize.ParseBytes(s)
		if err != nil || n == 0 || n > 1<<32 {
			return sdk.InvalidAttribute("max_module_size", "must be a size between 1B and 4GiB, not %v", v)
		}
		r.maxModuleSize = int64(n)
	}
	if v, ok := req.Settings["compile_timeout"]; ok {
		s, _ := v.(string)
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return sdk.InvalidAttribute("compile_timeout", "must be a positive duration such as \"10s\", not %v", v)
		}
		r.compileTimeout = d
	}
	if v, ok := req.Settings["compile_memory"]; ok {
		s, _ := v.(string)
		n, err := humanize.ParseBytes(s)
		if err != nil || n < 1<<20 {
			return sdk.InvalidAttribute("compile_memory", "must be a size of at least 1MiB, such as \"512MiB\", not %v", v)
		}
		r.compileMemory = n
	}
	for _, s := range []struct {
		name string
		d    *time.Duration
	}{{"time_budget", &r.timeBudget}, {"max_time_budget", &r.maxTimeBudget}} {
		if v, ok := req.Settings[s.name]; ok {
			if *s.d, ok = positiveDuration(v); !ok {
				return sdk.InvalidAttribute(s.name, "must be a positive duration such as \"30s\", not %v", v)
			}
		}
	}
	if r.maxTimeBudget > 0 && r.timeBudget > r.maxTimeBudget {
		return sdk.InvalidAttribute("time_budget", "%s is over max_time_budget (%s)", r.timeBudget, r.maxTimeBudget)
	}
	reg, err := registry.Parse(req.Settings["registry"])
	if err != nil {
		return err
	}
	if !filepath.IsAbs(req.DataDir) {
		return sdk.Errorf(sdk.CodeInvalid, "data dir %q is not an absolute path", req.DataDir)
	}
	store, err := newOCIStore(filepath.Join(req.DataDir, "oci"), reg, r.maxModuleSize)
	if err != nil {
		return err
	}
	dir := filepath.Join(req.DataDir, cacheDirName)
	for _, d := range []string{dir, filepath.Join(req.DataDir, instancesDirName)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create compilation cache: %w", err)
		}
		// Root's alone, whatever made it before.
		if err := os.Chmod(d, 0o700); err != nil {
			return fmt.Errorf("create compilation cache: %w", err)
		}
	}
	// The jail of sandboxes without state: empty, and unreadable to them.
	empty := filepath.Join(req.DataDir, "empty")
	if err := os.MkdirAll(empty, 0o111); err != nil {
		return fmt.Errorf("create empty jail: %w", err)
	}
	if err := os.Chmod(empty, 0o111); err != nil {
		return fmt.Errorf("create empty jail: %w", err)
	}
	r.dataDir, r.cacheDir, r.emptyDir, r.oci = req.DataDir, dir, empty, store
	// containerd's resolver logs every registry host it tries at info level.
	_ = log.SetLevel("warn")
	r.pruneOrWarn(ctx)
	return nil
}

// Start verifies the module, then launches the instance's sandbox and waits
// until it has compiled and linked the module, within the compile budget.
func (r *Runtime) Start(ctx context.Context, req *sdk.StartRequest) (sdk.Handle, error) {
	cfg, err := r.sandboxConfig(req)
	if err != nil {
		return sdk.Handle{}, err
	}
	bin, err := r.checkedModule(ctx, req.Artifact, cfg.MemoryPages)
	if err != nil {
		return sdk.Handle{}, err
	}
	module, err := sealedMemfd(bin)
	if err != nil {
		return sdk.Handle{}, err
	}
	defer module.Close()
	guestFiles, err := openGuestFiles(req)
	if err != nil {
		return sdk.Handle{}, err
	}
	defer closeAll(guestFiles)

	// Counted before the sandbox joins the cgroup, so that its OOM kills
	// are all counted after.
	limits, err := watchLimits(req.Cgroup.Path, req.Cgroup.ProcsFiles)
	if err != nil {
		return sdk.Handle{}, fmt.Errorf("instance %s: %w", req.Instance, err)
	}
	rf, err := openRunFiles(req.RunDir)
	if err != nil {
		return sdk.Handle{}, err
	}
	defer rf.close()
	// Once the RunDir exists, so that no prune takes the instance for
	// gone before the sandbox has compiled.
	if cfg.CacheDir, err = r.markUsed(req.RunDir, sha256.Sum256(bin)); err != nil {
		rf.remove()
		return sdk.Handle{}, fmt.Errorf("instance %s: %w", req.Instance, err)
	}
	d, err := r.launch(ctx, cfg, append([]*os.File{module}, rf.files[:3]...), guestFiles, rf.files[3])
	if err != nil {
		// A RunDir left behind keeps its record: the instance, if the
		// engine keeps it, is what uses the module now.
		rf.remove()
		if rf.madeDir {
			_ = r.forget(req.RunDir)
		}
		return sdk.Handle{}, fmt.Errorf("instance %s: %w", req.Instance, err)
	}
	d.RunDir, d.Instance, d.Limits = req.RunDir, req.Instance, limits
	h, err := d.encode()
	if err == nil {
		r.watch(d, h)
	}
	return h, err
}

// checkedModule reads the artifact's module, pulling it first if it is
// an image, and checks its sections (scanModule): the plugin never compiles
// it; the sandbox does, in the instance's cgroup.
func (r *Runtime) checkedModule(ctx context.Context, a sdk.Artifact, memoryPages uint32) ([]byte, error) {
	local, err := r.localModule(ctx, a)
	if err != nil {
		return nil, err
	}
	bin, err := r.readModule(local)
	if err == nil {
		var info moduleInfo
		if info, err = scanModule(bytes.NewReader(bin), servedImport); err != nil {
			err = scanError(local.Module, err)
		} else {
			err = info.check(local.Module, memoryPages)
		}
	}
	return bin, imageError(a, local, err)
}

// sandboxConfig validates req and turns it into the sandbox's config.
func (r *Runtime) sandboxConfig(req *sdk.StartRequest) (sandboxConfig, error) {
	cfg, state, err := r.check(req)
	if err != nil {
		return cfg, err
	}
	if !filepath.IsAbs(req.RunDir) {
		return cfg, sdk.Errorf(sdk.CodeInvalid, "run dir %q is not an absolute path", req.RunDir)
	}
	if err := checkTenantHandle(req); err != nil {
		return cfg, err
	}
	if req.Permissions.Has(sdk.PermStateRead) || req.Permissions.Has(sdk.PermStateWrite) {
		if state == nil {
			return cfg, sdk.InvalidAttribute("state.guest", "a state permission needs a state mount")
		}
		if !filepath.IsAbs(state.Source) {
			return cfg, sdk.InvalidAttribute("state.guest", "the state mount's source %q is not an absolute path", state.Source)
		}
		cfg.Jail = state.Source
	}
	if req.Stdin != "" && !filepath.IsAbs(req.Stdin) {
		return cfg, sdk.InvalidAttribute("stdin", "stdin %q is not an absolute path", req.Stdin)
	}
	for _, m := range req.Mounts {
		if !m.State && !filepath.IsAbs(m.Source) {
			return cfg, sdk.InvalidAttribute("mount."+m.Target, "mount source %q is not an absolute path", m.Source)
		}
	}
	if cfg.Jail == "" {
		return cfg, sdk.Errorf(sdk.CodeUnavailable, "the runtime is not configured")
	}
	return cfg, nil
}

// check checks what a StartRequest asks of the runtime, apart from the
// places Start alone needs (run dir, tenant), and returns the sandbox's
// config without a jail, and the state mount if there is one. Refusals
// name the spec attribute at fault.
func (r *Runtime) check(req *sdk.StartRequest) (sandboxConfig, *sdk.Mount, error) {
	cfg := sandboxConfig{
		Guest: guestConfig{
			Argv0:  filepath.Base(req.Artifact.Module),
			Args:   req.Args,
			Env:    req.Env,
			Clock:  req.Permissions.Has(sdk.PermClock),
			Random: req.Permissions.Has(sdk.PermRandom),
			Stdin:  req.Stdin != "",
		},
		Jail:          r.emptyDir,
		UID:           req.User.UID,
		GID:           req.User.GID,
		ProcsFiles:    req.Cgroup.ProcsFiles,
		Interpreter:   r.interpreter,
		CompileMemory: r.compileMemory,
	}
	if req.Instance.Name == "" {
		return cfg, nil, sdk.Errorf(sdk.CodeInvalid, "instance has no name")
	}
	if req.Artifact.Archive != "" {
		return cfg, nil, sdk.InvalidAttribute("archive", "the wasm runtime does not run image archives: push %s to a registry (skopeo copy oci-archive:... docker://...) and set image", req.Artifact.Archive)
	}
	if req.Artifact.Image != "" && req.Artifact.Module != "" {
		return cfg, nil, sdk.InvalidAttribute("image", "an instance runs either a module or an image, not both")
	}
	if req.Artifact.Image != "" {
		if _, err := registry.Reference(req.Artifact); err != nil {
			return cfg, nil, err
		}
		cfg.Guest.Argv0 = imageName(req.Artifact.Image)
	}
	cfg.TimeBudget = r.timeBudget
	if cfg.TimeBudget == 0 {
		cfg.TimeBudget = r.maxTimeBudget
	}
	for k, v := range req.Settings {
		if k == "time_budget" {
			d, ok := positiveDuration(v)
			if !ok {
				return cfg, nil, sdk.InvalidAttribute("settings."+k, "time_budget must be a positive duration such as \"30s\", not %v", v)
			}
			if r.maxTimeBudget > 0 && d > r.maxTimeBudget {
				return cfg, nil, sdk.InvalidAttribute("settings."+k, "time_budget %s is over the runtime's max_time_budget of %s", d, r.maxTimeBudget)
			}
			cfg.TimeBudget = d
			continue
		}
		s, ok := v.(string)
		switch {
		case k != "random_seed":
			return cfg, nil, sdk.InvalidAttribute("settings."+k, "the wasm runtime has no instance setting %q", k)
		case !ok || s == "":
			return cfg, nil, sdk.InvalidAttribute("settings."+k, "random_seed must be a non-empty string")
		case req.Permissions.Has(sdk.PermRandom):
			return cfg, nil, sdk.InvalidAttribute("settings."+k, "random_seed seeds the deterministic random source of an instance without the random permission; this one has the host's")
		}
		cfg.Guest.RandomSeed = s
	}
	for _, p := range req.Permissions {
		switch p.Name {
		case sdk.PermStateRead, sdk.PermStateWrite, sdk.PermClock, sdk.PermRandom:
		default:
			return cfg, nil, sdk.InvalidAttribute("permission."+p.Name, "the wasm runtime offers no permission %q", p.Name)
		}
		for k := range p.Params {
			return cfg, nil, sdk.InvalidAttribute("permission."+p.Name+"."+k, "the permission %q takes no parameters", p.Name)
		}
	}
	state, err := guestMounts(&cfg.Guest, req)
	if err != nil {
		return cfg, nil, err
	}
	switch mem := req.Resources.MemoryBytes; {
	case mem < 0 || (mem > 0 && mem < pageSize):
		return cfg, nil, sdk.InvalidAttribute("resources.memory", "memory limit %d is under one wasm page (64KiB)", mem)
	case mem >= maxPages*pageSize:
		cfg.MemoryPages = maxPages
	default:
		cfg.MemoryPages = uint32(mem / pageSize)
	}
	return cfg, state, nil
}

// guestMounts checks req's mounts and sets g's preopens from them: the
// state first, if a state permission is granted (read-only unless the
// mount is writable and state.write granted), then the read-only mounts
// in order. It returns the state mount, if any.
func guestMounts(g *guestConfig, req *sdk.StartRequest) (*sdk.Mount, error) {
	var state *sdk.Mount
	seen := map[string]bool{}
	for i, m := range req.Mounts {
		attr := "mount." + m.Target
		if m.State {
			attr = "state.guest"
		}
		switch {
		case !validGuestPath(m.Target):
			return nil, sdk.InvalidAttribute(attr, "guest path %q is not an absolute, clean path", m.Target)
		case seen[m.Target]:
			return nil, sdk.InvalidAttribute(attr, "two mounts at %s", m.Target)
		case m.Type != "" && m.Type != sdk.MountDir && m.Type != sdk.MountBind && m.Type != sdk.MountFUSE:
			return nil, sdk.InvalidAttribute(attr, "unsupported mount type %q", m.Type)
		case m.State && state != nil:
			return nil, sdk.InvalidAttribute(attr, "two state mounts")
		case !m.State && !m.ReadOnly:
			return nil, sdk.InvalidAttribute(attr, "the wasm runtime mounts only the state writable; the mount at %s must be read-only", m.Target)
		}
		seen[m.Target] = true
		if m.State {
			state = &req.Mounts[i]
			continue
		}
		g.Mounts = append(g.Mounts, guestMount{Guest: m.Target, ReadOnly: true})
	}
	read, write := req.Permissions.Has(sdk.PermStateRead), req.Permissions.Has(sdk.PermStateWrite)
	if state != nil && (read || write) {
		sm := guestMount{Guest: state.Target, ReadOnly: state.ReadOnly || !write, State: true}
		g.Mounts = append([]guestMount{sm}, g.Mounts...)
	}
	return state, nil
}

// positiveDuration parses v, a setting, as a positive duration.
func positiveDuration(v any) (time.Duration, bool) {
	s, _ := v.(string)
	d, err := time.ParseDuration(s)
	return d, err == nil && d > 0
}

// validGuestPath reports whether p is an absolute, clean guest path.
func validGuestPath(p string) bool {
	return strings.HasPrefix(p, "/") && path.Clean(p) == p && !strings.ContainsRune(p, 0)
}

// Validate checks the request as Start would, and reads the module (its
// size, digest, imports, exports and memory) without compiling it.
func (r *Runtime) Validate(ctx context.Context, req *sdk.StartRequest) error {
	cfg, _, err := r.check(req)
	if err != nil {
		return err
	}
	local, err := r.localModule(ctx, req.Artifact)
	if err != nil {
		return err
	}
	return imageError(req.Artifact, local, r.validateModule(local, cfg.MemoryPages))
}

// validateModule reads the module file a names, once per version of the
// file, and checks it against the memory limit.
func (r *Runtime) validateModule(a sdk.Artifact, memoryPages uint32) error {
	f, fi, err := r.openModule(a)
	if err != nil {
		return err
	}
	defer f.Close()
	// Many instances share a module: it is read once per version of the
	// file. Start checks the bytes it runs again, whatever this says.
	id, ok := identify(fi, time.Now())
	r.mu.Lock()
	sm, known := r.scanned[id]
	r.mu.Unlock()
	if !ok || !known {
		if sm, err = r.scanOpenModule(f); err != nil {
			return err
		}
		if ok {
			r.mu.Lock()
			r.scanned[id] = sm
			r.mu.Unlock()
		}
	}
	if sm.err != nil {
		return scanError(a.Module, sm.err)
	}
	if err := checkDigest(a, sm.sum); err != nil {
		return err
	}
	return sm.info.check(a.Module, memoryPages)
}

// scannedModule is what Validate read of a version of a module file.
type scannedModule struct {
	sum  [sha256.Size]byte
	info moduleInfo
	// err is why the module could not be scanned.
	err error
}

// scanOpenModule reads an opened module once, through the size limit,
// hashing it and scanning its sections.
func (r *Runtime) scanOpenModule(f *os.File) (scannedModule, error) {
	var sm scannedModule
	h := sha256.New()
	lr := &io.LimitedReader{R: f, N: r.maxModuleSize + 1}
	sm.info, sm.err = scanModule(io.TeeReader(lr, h), servedImport)
	// The rest of the file, for the digest.
	if _, err := io.Copy(h, lr); err != nil {
		return sm, fmt.Errorf("read module: %w", err)
	}
	if lr.N <= 0 {
		return sm, sdk.InvalidAttribute("module", "module %s is larger than %s", f.Name(), humanize.IBytes(uint64(r.maxModuleSize)))
	}
	h.Sum(sm.sum[:0])
	return sm, nil
}

// moduleID identifies a version of a module file: a rewrite, a rename over
// it or a swap changes its inode or its ctime, which userspace cannot set.
type moduleID struct {
	dev, ino, size   uint64
	mtimeNS, ctimeNS int64
}

// identify returns fi's moduleID; ok is false when fi has no stat data or
// the file changed too recently (within the ctime's granularity) to trust
// that a later write would change the ctime.
func identify(fi os.FileInfo, now time.Time) (id moduleID, ok bool) {
	st, isStat := fi.Sys().(*syscall.Stat_t)
	if !isStat {
		return id, false
	}
	ctime := time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	id = moduleID{dev: st.Dev, ino: st.Ino, size: uint64(st.Size),
		mtimeNS: time.Unix(st.Mtim.Sec, st.Mtim.Nsec).UnixNano(), ctimeNS: ctime.UnixNano()}
	return id, now.Sub(ctime) > 2*time.Second
}

// readModule reads the module file, enforcing the size limit and the digest.
func (r *Runtime) readModule(a sdk.Artifact) ([]byte, error) {
	f, _, err := r.openModule(a)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	bin, err := r.readOpenModule(f)
	if err != nil {
		return nil, err
	}
	if err := checkDigest(a, sha256.Sum256(bin)); err != nil {
		return nil, err
	}
	return bin, nil
}

// openModule opens the module file: an absolute path to a regular file no
// larger than the size limit.
func (r *Runtime) openModule(a sdk.Artifact) (*os.File, os.FileInfo, error) {
	if !filepath.IsAbs(a.Module) {
		return nil, nil, sdk.InvalidAttribute("module", "module %q is not an absolute path", a.Module)
	}
	// O_NONBLOCK: opening a FIFO must not hang; regular files ignore it.
	f, err := os.OpenFile(a.Module, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, &sdk.Error{Code: sdk.CodeInvalid, Attribute: "module", Message: "open module: " + err.Error(), Err: err}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat module: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, sdk.InvalidAttribute("module", "module %s is not a regular file", a.Module)
	}
	if fi.Size() > r.maxModuleSize {
		f.Close()
		return nil, nil, sdk.InvalidAttribute("module", "module %s is larger than %s", a.Module, humanize.IBytes(uint64(r.maxModuleSize)))
	}
	return f, fi, nil
}

// readOpenModule reads an opened module through the size limit (the file
// may grow after its stat).
func (r *Runtime) readOpenModule(f *os.File) ([]byte, error) {
	bin, err := io.ReadAll(io.LimitReader(f, r.maxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("read module: %w", err)
	}
	if int64(len(bin)) > r.maxModuleSize {
		return nil, sdk.InvalidAttribute("module", "module %s is larger than %s", f.Name(), humanize.IBytes(uint64(r.maxModuleSize)))
	}
	return bin, nil
}

// checkDigest checks a module's sha256 against the digest the artifact
// pins, if any.
func checkDigest(a sdk.Artifact, sum [sha256.Size]byte) error {
	if a.Digest == "" {
		return nil
	}
	algo, want, _ := strings.Cut(a.Digest, ":")
	if algo != "sha256" {
		return sdk.InvalidAttribute("digest", "module digest %q: only sha256 is supported", a.Digest)
	}
	if got := hex.EncodeToString(sum[:]); got != strings.ToLower(want) {
		return sdk.InvalidAttribute("digest", "module %s has digest sha256:%s, want %s", a.Module, got, a.Digest)
	}
	return nil
}

// openGuestFiles opens, as the sandbox expects them from fdGuest on, the
// file the instance reads as stdin, if any, and each read-only mount's
// directory (O_PATH), in the order of req.Mounts.
func openGuestFiles(req *sdk.StartRequest) ([]*os.File, error) {
	var files []*os.File
	if req.Stdin != "" {
		// O_NONBLOCK: opening a FIFO must not hang; it is refused below.
		f, err := os.OpenFile(req.Stdin, os.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, &sdk.Error{Code: sdk.CodeInvalid, Attribute: "stdin", Message: "open stdin: " + err.Error(), Err: err}
		}
		files = append(files, f)
		if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
			closeAll(files)
			return nil, sdk.InvalidAttribute("stdin", "stdin %s is not a regular file", req.Stdin)
		}
		// Reads must block as on any file: clear O_NONBLOCK.
		if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
			closeAll(files)
			return nil, fmt.Errorf("open stdin: %w", err)
		}
	}
	for _, m := range req.Mounts {
		if m.State {
			continue
		}
		fd, err := unix.Open(m.Source, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			closeAll(files)
			return nil, &sdk.Error{Code: sdk.CodeInvalid, Attribute: "mount." + m.Target, Message: "open mount " + m.Source + ": " + err.Error(), Err: err}
		}
		files = append(files, os.NewFile(uintptr(fd), m.Source))
	}
	return files, nil
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// sealedMemfd returns an in-memory file holding bin that nobody can change.
func sealedMemfd(bin []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("kigumi-module", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "module")
	if _, err := f.Write(bin); err != nil {
		f.Close()
		return nil, fmt.Errorf("write memfd: %w", err)
	}
	seals := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL
	// The kernel refuses F_SEAL_WRITE with EBUSY while something still
	// holds a page of the file, which can be its own short-lived
	// references to pages just written (CI saw it once): that passes.
	for try := 0; ; try++ {
		_, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EBUSY) || try == sealTries-1 {
			f.Close()
			return nil, fmt.Errorf("seal memfd: %w", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sealTries bounds the tries to seal a module's memfd.
const sealTries = 20

// runFiles are the files Start opens in an instance's RunDir: stdout,
// stderr and status, in the order the sandbox expects them after the
// module, then the sandbox's own stderr.
type runFiles struct {
	dir     string
	madeDir bool
	files   []*os.File
	// made lists the files Start created, when the RunDir already existed.
	made []string
}

func openRunFiles(dir string) (*runFiles, error) {
	rf := &runFiles{dir: dir}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create run dir: %w", err)
		}
		rf.madeDir = true
	}
	for _, f := range []struct {
		name string
		flag int
	}{
		{stdoutFile, os.O_WRONLY | os.O_APPEND},
		{stderrFile, os.O_WRONLY | os.O_APPEND},
		{statusFile, os.O_RDWR | os.O_TRUNC},
		{sandboxLogFile, os.O_WRONLY | os.O_TRUNC},
	} {
		if err := rf.open(f.name, f.flag); err != nil {
			rf.close()
			rf.remove()
			return nil, err
		}
	}
	return rf, nil
}

func (rf *runFiles) open(name string, flag int) error {
	p := filepath.Join(rf.dir, name)
	f, err := os.OpenFile(p, flag|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		rf.made = append(rf.made, p)
	} else if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(p, flag|syscall.O_NOFOLLOW, 0)
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", name, err)
	}
	rf.files = append(rf.files, f)
	return nil
}

func (rf *runFiles) close() {
	for _, f := range rf.files {
		f.Close()
	}
}

// remove removes what openRunFiles made.
func (rf *runFiles) remove() {
	if rf.madeDir {
		fstree.RemoveAll(context.Background(), rf.dir)
		return
	}
	for _, p := range rf.made {
		os.Remove(p)
	}
}

// launch starts a sandbox with files (module, stdout, stderr, status), the
// guest's files after its config and ready pipes, and stderr as its own,
// sends it cfg and waits until it is ready. On failure it leaves no
// process behind.
func (r *Runtime) launch(ctx context.Context, cfg sandboxConfig, files, guestFiles []*os.File, stderr *os.File) (handleData, error) {
	exe, err := os.Executable()
	if err != nil {
		return handleData{}, fmt.Errorf("find sandbox executable: %w", err)
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return handleData{}, err
	}
	defer cfgW.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		return handleData{}, err
	}
	defer readyR.Close()

	cmd := exec.Command(exe, SandboxCommand)
	// The workload's env goes to WASI only. TZ keeps the Go runtime from
	// reading a time zone file inside the jail, where the tenant writes.
	cmd.Env = []string{"TZ=UTC"}
	cmd.Dir = "/"
	cmd.Stderr = stderr
	cmd.ExtraFiles = append(append(files, cfgR, readyW), guestFiles...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	d, err := r.spawn(cmd)
	cfgR.Close()
	readyW.Close()
	if err != nil {
		return d, fmt.Errorf("start sandbox: %w", err)
	}
	if err := r.awaitReady(ctx, cfg, cfgW, readyR); err != nil {
		_ = syscall.Kill(-d.Pid, syscall.SIGKILL)
		r.reap(d)
		return d, err
	}
	return d, nil
}

// spawn starts cmd with no_new_privs set and its capability bounding set
// limited (limitBoundingSet), and reaps it when it ends. Both are per
// thread and inherited by the child, so they are set on a thread
// locked to a goroutine that starts the child and then ends, which makes
// the Go runtime discard the thread.
func (r *Runtime) spawn(cmd *exec.Cmd) (handleData, error) {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			errc <- fmt.Errorf("set no_new_privs: %w", err)
			return
		}
		if err := limitBoundingSet(); err != nil {
			errc <- err
			return
		}
		errc <- cmd.Start()
	}()
	if err := <-errc; err != nil {
		return handleData{}, err
	}
	// Not reaped before the Wait below, the child's /proc entry is there.
	_, ticks, err := procStat(cmd.Process.Pid)
	c := child{pid: cmd.Process.Pid, startTicks: ticks}
	done := make(chan struct{})
	r.mu.Lock()
	r.children[c] = done
	r.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		r.mu.Lock()
		delete(r.children, c)
		r.mu.Unlock()
		close(done)
	}()
	d := handleData{Pid: c.pid, StartTicks: ticks, StartedAt: time.Now()}
	if err != nil {
		_ = syscall.Kill(-d.Pid, syscall.SIGKILL)
		<-done
		return d, err
	}
	return d, nil
}

// awaitReady sends the sandbox its config and reads its ready message.
func (r *Runtime) awaitReady(ctx context.Context, cfg sandboxConfig, cfgW, readyR *os.File) error {
	b, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode sandbox config: %w", err)
	}
	type result struct {
		msg []byte
		err error
	}
	rc := make(chan result, 1)
	go func() {
		msg, err := io.ReadAll(io.LimitReader(readyR, 64<<10))
		rc <- result{msg, err}
	}()
	// The sandbox reads its config first: if it died instead, the write
	// fails and the ready pipe is at its end.
	_, _ = cfgW.Write(b)
	cfgW.Close()
	var res result
	budget := time.NewTimer(r.compileTimeout)
	defer budget.Stop()
	select {
	case res = <-rc:
	case <-ctx.Done():
		return ctx.Err()
	case <-budget.C:
		return &sdk.Error{Code: sdk.CodeInvalid, Attribute: "module", Message: fmt.Sprintf("the module was not compiled and linked within the compile budget (compile_timeout = %s)", r.compileTimeout)}
	}
	msg, compiling := strings.CutPrefix(string(res.msg), compilingMark)
	switch {
	case res.err != nil:
		return fmt.Errorf("read sandbox ready: %w", res.err)
	case msg == readyOK:
		return nil
	case msg == "" && compiling:
		return &sdk.Error{Code: sdk.CodeInvalid, Attribute: "module", Message: fmt.Sprintf("the sandbox died compiling the module: over the compile budget (compile_memory = %s) or the instance's memory limit", humanize.IBytes(r.compileMemory))}
	case msg == "":
		return sdk.Errorf(sdk.CodeInternal, "sandbox ended before it was ready")
	default:
		var f readyFailure
		if err := json.Unmarshal([]byte(msg), &f); err != nil {
			return sdk.Errorf(sdk.CodeInternal, "sandbox not ready: %q", oneLine(msg))
		}
		if f.Code != sdk.CodeInvalid {
			f.Code, f.Attribute = sdk.CodeInternal, ""
		}
		return &sdk.Error{Code: f.Code, Attribute: f.Attribute, Message: f.Message}
	}
}

// signal sends sig to the sandbox's process group if the sandbox is alive.
func (d handleData) signal(sig syscall.Signal) {
	if d.alive() {
		_ = syscall.Kill(-d.Pid, sig)
	}
}

// waitGone waits until the sandbox is no longer alive and, if this process
// started it, reaped.
func (r *Runtime) waitGone(ctx context.Context, d handleData) error {
	for d.alive() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
	r.mu.Lock()
	done, ok := r.children[child{d.Pid, d.StartTicks}]
	r.mu.Unlock()
	if ok {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// reap waits, without a deadline, for a sandbox that was sent SIGKILL.
func (r *Runtime) reap(d handleData) {
	_ = r.waitGone(context.Background(), d)
}

// Stop sends the sandbox's process group SIGTERM, then SIGKILL after
// timeout, waits until it is gone and records that it was stopped.
func (r *Runtime) Stop(ctx context.Context, h sdk.Handle, timeout time.Duration) error {
	d, err := decodeHandle(h)
	if err != nil {
		return err
	}
	if !d.alive() {
		return r.waitGone(ctx, d)
	}
	sig := syscall.SIGTERM
	d.signal(sig)
	tctx, cancel := context.WithTimeout(ctx, timeout)
	err = r.waitGone(tctx, d)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sig = syscall.SIGKILL
		d.signal(sig)
		if err := r.waitGone(ctx, d); err != nil {
			return err
		}
	}
	return recordStopped(d.RunDir, sig)
}

// recordStopped records in dir's status file that the sandbox was killed by
// sig, unless the module ended by itself first. It replaces the record of
// the signal that the sandbox made as it died.
func recordStopped(dir string, sig syscall.Signal) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if st, ok, err := readStatus(dir); err != nil || (ok && st.Cause != sdk.CauseSignal) {
		return err
	}
	return writeStatus(dir, exitStatus{
		ExitCode:   128 + int(sig),
		FinishedAt: time.Now(),
		Message:    "stopped by " + unix.SignalName(sig),
		Cause:      sdk.CauseKilled,
		Stopped:    true,
		Signal:     int(sig),
	})
}

// writeStatus records st in dir's status file.
func writeStatus(dir string, st exitStatus) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("record exit: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, statusFile), b, 0o600); err != nil {
		return fmt.Errorf("record exit: %w", err)
	}
	return nil
}

// Destroy stops the instance, removes its RunDir and its record, and
// prunes the compilation cache and the module store of what no live
// instance uses any more.
func (r *Runtime) Destroy(ctx context.Context, h sdk.Handle) error {
	d, err := decodeHandle(h)
	if err != nil {
		return err
	}
	if err := r.Stop(ctx, h, destroyStopTimeout); err != nil {
		return err
	}
	if err := fstree.RemoveAll(ctx, d.RunDir); err != nil {
		return fmt.Errorf("remove run dir: %w", err)
	}
	if r.dataDir == "" {
		return nil // not configured: nothing cached
	}
	if err := r.forget(d.RunDir); err != nil {
		return err
	}
	r.pruneOrWarn(ctx)
	return nil
}

// Inspect reports whether the sandbox runs and, once it has ended, how.
func (r *Runtime) Inspect(_ context.Context, h sdk.Handle) (sdk.Status, error) {
	d, err := decodeHandle(h)
	if err != nil {
		return sdk.Status{}, err
	}
	if err := d.checkRunDir(); err != nil {
		return sdk.Status{}, err
	}
	s := sdk.Status{State: sdk.StateRunning, Pid: d.Pid, StartedAt: d.StartedAt}
	if d.alive() {
		return s, nil
	}
	st, ok, err := readStatus(d.RunDir)
	if err != nil {
		return sdk.Status{}, err
	}
	if !ok {
		// Recorded, so that later calls say the same even once the
		// cgroup is gone. Failing to record changes nothing of the answer.
		st = d.unrecordedEnd()
		_ = writeStatus(d.RunDir, st)
	}
	s.State, s.ExitCode, s.FinishedAt, s.Message = sdk.StateExited, st.ExitCode, st.FinishedAt, st.Message
	s.Cause, s.Signal = st.Cause, st.Signal
	if s.Cause == "" {
		s.Cause = sdk.CauseExit // recorded before causes were
	}
	if st.Stopped {
		s.State = sdk.StateStopped
	}
	return s, nil
}

// unrecordedEnd works out how a sandbox that recorded no exit ended. The
// sandbox records the module's end and the signals that would end it
// silently, so it was killed from outside: by its cgroup's OOM killer (the
// cgroup's count of OOM kills grew since Start), by its Go runtime dying
// (refused a thread by the pids limit, or a crash, which the runtime writes
// to sandbox.log), or else by SIGKILL, the one signal that leaves no trace.
func (d handleData) unrecordedEnd() exitStatus {
	// As it reads back from the status file, so that every Inspect says
	// the same.
	st := exitStatus{FinishedAt: time.Now().UTC().Round(0)}
	if end, ok := d.Limits.ended(); ok {
		st.Message = end.message
		if end.oom {
			st.Cause, st.Signal, st.ExitCode = sdk.CauseOOM, int(syscall.SIGKILL), 128+int(syscall.SIGKILL)
		} else {
			st.Cause, st.ExitCode = sdk.CauseLimit, goFatalExit
		}
		return st
	}
	if crash := sandboxCrash(d.RunDir); crash != "" {
		st.ExitCode, st.Cause, st.Message = goFatalExit, sdk.CauseUnknown, "the sandbox crashed: "+crash
		// A signal the Go runtime dies of with a dump: "SIGQUIT: quit".
		if name, _, ok := strings.Cut(crash, ":"); ok {
			if sig := unix.SignalNum(name); sig != 0 {
				st.Cause, st.Signal, st.Message = sdk.CauseSignal, int(sig), "killed by "+name+", not by the runtime"
			}
		}
		return st
	}
	st.Cause, st.Signal, st.ExitCode = sdk.CauseSignal, int(syscall.SIGKILL), 128+int(syscall.SIGKILL)
	st.Message = "killed by SIGKILL, not by the runtime: the sandbox recorded no exit, and the OOM killer did not kill it"
	if d.Limits.MemoryDir == "" {
		st.Message = "killed by SIGKILL, not by the runtime: the sandbox recorded no exit (whether by the OOM killer is unknown: its cgroup counts no OOM kills)"
	}
	return st
}

// goFatalExit is the exit code of a Go program that dies of a fatal error.
const goFatalExit = 2

// sandboxCrash returns the first line the sandbox's Go runtime wrote as it
// died, or "".
func sandboxCrash(dir string) string {
	f, err := os.Open(filepath.Join(dir, sandboxLogFile))
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, 4<<10))
	for l := range strings.Lines(string(b)) {
		if l = oneLine(l); l != "" {
			return l
		}
	}
	return ""
}

// Recover checks that the instance still has its RunDir, watches its
// sandbox for its exit, and returns the same handle: all the runtime's
// state is in the RunDir and the sandbox.
func (r *Runtime) Recover(_ context.Context, h sdk.Handle) (sdk.Handle, error) {
	d, err := decodeHandle(h)
	if err != nil {
		return sdk.Handle{}, err
	}
	if err := d.checkRunDir(); err != nil {
		return sdk.Handle{}, err
	}
	r.watch(d, h)
	return h, nil
}

// Logs streams the instance's stdout.log or stderr.log into fn. With Follow
// it polls for more until the sandbox is gone, then sends the rest.
func (r *Runtime) Logs(ctx context.Context, h sdk.Handle, opts sdk.LogOptions, fn func([]byte) error) error {
	d, err := decodeHandle(h)
	if err != nil {
		return err
	}
	alive := func(context.Context) bool { return d.alive() }
	return logfile.Stream(ctx, d.RunDir, d.Instance, opts, pollInterval, alive, fn)
}

package ctrruntime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kigumi/kigumi/core/logfile"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/log"
	"github.com/dustin/go-humanize"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/internal/registry"
)

// Version is the plugin's version.
const Version = "0.1.0"

// Defaults of the host settings.
const (
	defaultAddress   = "/run/containerd/containerd.sock"
	defaultNamespace = "kigumi"
	defaultTmpSize   = "64MiB"
	// dialTimeout bounds how long a call waits for containerd to answer.
	dialTimeout = 5 * time.Second
	// pollInterval is how often Logs looks at a running container.
	pollInterval = 100 * time.Millisecond
	// destroyStopTimeout is how long Destroy lets a container end on
	// SIGTERM.
	destroyStopTimeout = 5 * time.Second
)

// Runtime runs OCI images on containerd, one container per instance. It
// implements sdk.Runtime. Its zero value is not usable; call New.
type Runtime struct {
	address   string
	namespace string
	tmpBytes  int64
	registry  registry.Settings
	// mode is the default daemon mode, and modes the tenants' own.
	mode  string
	modes map[string]string
	// exe is the executable the shim runs as the logging process.
	exe string

	net hostNetwork
	// netMu serializes the networked Starts, from allocating ports until
	// the container records them.
	netMu sync.Mutex

	mu sync.Mutex
	// clients are the clients of the daemons, by socket and listener.
	clients map[clientKey]*containerd.Client
	// daemonMu serializes starting and stopping tenants' daemons.
	daemonMu sync.Mutex
	// exits are the containers whose exits WatchExits reports.
	exits exitWatch
}

// New returns a Runtime with default settings.
func New() *Runtime {
	tmp, _ := humanize.ParseBytes(defaultTmpSize)
	return &Runtime{address: defaultAddress, namespace: defaultNamespace, tmpBytes: int64(tmp), mode: ModeShared, clients: map[clientKey]*containerd.Client{}}
}

// Info describes the plugin and its settings.
func (r *Runtime) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{
		Name:    "containerd",
		Kind:    sdk.KindRuntime,
		Version: Version,
		Schema: sdk.Schema{
			Attributes: []sdk.Attribute{
				{Name: "address", Type: sdk.TypeString, Description: "containerd's socket (default " + defaultAddress + ")"},
				{Name: "namespace", Type: sdk.TypeString, Description: "the containerd namespace of Kigumi's containers and images (default " + defaultNamespace + ")"},
				{Name: "tmp_size", Type: sdk.TypeString, Description: `size cap of each container's tmpfs /tmp, such as "64MiB" (default)`},
				{Name: "daemon", Type: sdk.TypeString, Description: `"shared" (default): one root containerd at address; "per-tenant": each tenant's own rootless containerd`},
				{Name: "daemons", Type: sdk.TypeStringMap, Description: `the daemon mode of some tenants, by tenant name, instead of daemon's`},
			},
			Blocks: append([]sdk.Block{registry.Block}, netBlocks...),
		},
		InstanceSchema: sdk.Schema{Attributes: []sdk.Attribute{
			{Name: "entrypoint", Type: sdk.TypeStringList, Description: "the command, instead of the image's entrypoint; the instance's args follow it"},
			{Name: "workload_uid", Type: sdk.TypeNumber, Description: "the uid (and gid) the workload runs as in the container, not 0 (default 10000)"},
		}, Blocks: []sdk.Block{instanceNetBlock}},
		Capabilities: sdk.Capabilities{
			Scope:     sdk.ScopeHost,
			Artifacts: []string{sdk.ArtifactOCI},
			Isolation: []string{sdk.IsolationUser, sdk.IsolationUserNS, sdk.IsolationCgroup, sdk.IsolationNoNewPrivs, sdk.IsolationSeccomp, sdk.IsolationNoNetwork},
			Permissions: []sdk.PermissionSpec{
				{Name: sdk.PermStateRead, Description: "read the instance's state at its state path"},
				{Name: sdk.PermStateWrite, Description: "read and write the instance's state at its state path"},
			},
			Features: []string{sdk.FeatureValidate, sdk.FeatureWatch, sdk.FeatureTenantLifecycle, sdk.FeatureProgress},
		},
	}, nil
}

// Configure applies the settings. It does not dial containerd: a host
// whose containerd is down still configures, and each call that needs
// containerd says so.
func (r *Runtime) Configure(_ context.Context, req sdk.ConfigureRequest) error {
	if v, ok := req.Settings["address"]; ok {
		s, _ := v.(string)
		if !filepath.IsAbs(s) {
			return sdk.InvalidAttribute("address", "must be the absolute path of containerd's socket, not %q", s)
		}
		r.address = s
	}
	if v, ok := req.Settings["namespace"]; ok {
		s, _ := v.(string)
		if !containerID.MatchString(s) {
			return sdk.InvalidAttribute("namespace", "%q is not a containerd namespace name", s)
		}
		r.namespace = s
	}
	if v, ok := req.Settings["tmp_size"]; ok {
		s, _ := v.(string)
		n, err := humanize.ParseBytes(s)
		if err != nil || n < 1<<20 || n > 1<<40 {
			return sdk.InvalidAttribute("tmp_size", "must be a size between 1MiB and 1TiB, not %q", s)
		}
		r.tmpBytes = int64(n)
	}
	if err := r.configureModes(req.Settings); err != nil {
		return err
	}
	reg, err := registry.Parse(req.Settings["registry"])
	if err != nil {
		return err
	}
	r.registry = reg
	if r.net, err = parseHostNetwork(req.Settings); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the plugin's executable: %w", err)
	}
	r.exe = exe
	// The client logs every registry host it tries at info level.
	_ = log.SetLevel("warn")
	return nil
}

// clientKey names a daemon's client: its socket and, for a per-tenant
// daemon, who must listen on it.
type clientKey struct {
	address string
	peer    daemonPeer
}

// connect returns the client of the containerd at address (the shared
// one when empty), dialing it when there is none or it stopped answering.
// Its context carries the runtime's namespace. A per-tenant daemon's
// socket, in a tenant-owned directory, comes with peer, who must listen
// on it: each connection of its client, the first and any redial, is
// checked (dialTenantSocket), so that root drives no daemon but that one.
func (r *Runtime) connect(ctx context.Context, address string, peer *daemonPeer) (context.Context, *containerd.Client, error) {
	key := clientKey{address: address}
	if address == "" {
		key.address, peer = r.address, nil
	}
	if peer != nil {
		key.peer = *peer
	}
	address = key.address
	ctx = namespaces.WithNamespace(ctx, r.namespace)
	// r.mu is not held while a daemon is waited for: a tenant can stop its
	// own daemon, and the other daemons' callers must not wait on it.
	r.mu.Lock()
	c := r.clients[key]
	r.mu.Unlock()
	if c != nil {
		// IsServing waits for the connection to be ready: bounded, so that
		// a containerd gone since the last call is noticed.
		hctx, cancel := context.WithTimeout(ctx, dialTimeout)
		ok, err := c.IsServing(hctx)
		cancel()
		if ok && err == nil {
			return ctx, c, nil
		}
		r.mu.Lock()
		if r.clients[key] == c {
			delete(r.clients, key)
		}
		r.mu.Unlock()
		c.Close()
	}
	opts := []containerd.ClientOpt{containerd.WithTimeout(dialTimeout), containerd.WithDefaultNamespace(r.namespace)}
	var refusal refusals
	if peer != nil {
		opts = append(opts, containerd.WithDialOpts(tenantDialOpts(address, *peer, &refusal)))
	}
	c, err := containerd.New(address, opts...)
	if err != nil {
		if rerr := refusal.last(); rerr != nil {
			return ctx, nil, rerr
		}
		return ctx, nil, sdk.Errorf(sdk.CodeUnavailable, "containerd at %s is not reachable: %w", address, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Another caller may have dialed it meanwhile: one client per daemon.
	if other := r.clients[key]; other != nil {
		c.Close()
		return ctx, other, nil
	}
	r.clients[key] = c
	return ctx, c, nil
}

// tenantDialOpts are containerd.New's dial options for a per-tenant
// daemon: its own (WithDialOpts replaces them all), with a dialer that
// connects through dialTenantSocket alone. A refused dial is kept in
// refusal, for connect to tell, and is not retried: gRPC gives up at a
// dial error that says it is not temporary.
func tenantDialOpts(address string, peer daemonPeer, refusal *refusals) []grpc.DialOption {
	backoffConfig := backoff.DefaultConfig
	backoffConfig.MaxDelay = 3 * time.Second
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		c, err := dialTenantSocket(ctx, address, peer.UID, peer.checkDaemon)
		if err != nil {
			refusal.set(err)
			return nil, permanent{err}
		}
		return c, nil
	}
	return []grpc.DialOption{
		grpc.WithBlock(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.FailOnNonTempDialError(true),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoffConfig}),
		grpc.WithContextDialer(dial),
		grpc.WithReturnConnectionError(),
	}
}

// permanent is a dial error that gRPC does not retry.
type permanent struct{ error }

// Temporary tells gRPC not to retry.
func (permanent) Temporary() bool { return false }

func (p permanent) Unwrap() error { return p.error }

// refusals holds the last error of a client's dials.
type refusals struct {
	mu  sync.Mutex
	err error
}

func (r *refusals) set(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

func (r *refusals) last() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// dropClient closes the clients of the containerd at address, if any.
func (r *Runtime) dropClient(address string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, c := range r.clients {
		if k.address == address {
			c.Close()
			delete(r.clients, k)
		}
	}
}

// Close closes the clients of containerd.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for a, c := range r.clients {
		errs = append(errs, c.Close())
		delete(r.clients, a)
	}
	return errors.Join(errs...)
}

// Validate checks the request as Start would, without containerd.
func (r *Runtime) Validate(_ context.Context, req *sdk.StartRequest) error {
	_, err := r.check(req)
	return err
}

// Start pulls the image, creates the instance's container and starts its
// task. A failed Start leaves no container, task or snapshot behind.
func (r *Runtime) Start(ctx context.Context, req *sdk.StartRequest) (_ sdk.Handle, err error) {
	set, err := r.check(req)
	if err != nil {
		return sdk.Handle{}, err
	}
	if !filepath.IsAbs(req.RunDir) {
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInvalid, "run dir %q is not an absolute path", req.RunDir)
	}
	if req.User.Count < set.workloadUID+1 || req.User.SubUID == 0 || req.User.SubGID == 0 {
		return sdk.Handle{}, sdk.Errorf(sdk.CodeInvalid, "instance %s: the tenant's subordinate id range (%d ids) does not hold the workload uid %d", req.Instance, req.User.Count, set.workloadUID)
	}
	td, err := r.daemonOf(req)
	if err != nil {
		return sdk.Handle{}, err
	}
	daemon, peer := td.Address, (*daemonPeer)(nil)
	if daemon != "" {
		peer = td.peer()
	}
	ctx, c, err := r.connect(ctx, daemon, peer)
	if err != nil {
		return sdk.Handle{}, err
	}
	img, err := r.image(ctx, c, req.Artifact)
	if err != nil {
		return sdk.Handle{}, err
	}
	d := handleData{
		ID: idOf(req.Instance), Namespace: r.namespace, Instance: req.Instance,
		RunDir: req.RunDir, Cgroup: containerCgroup(req.Cgroup.Path), Daemon: daemon, Peer: peer,
		TenantRunDir: td.RunDir,
	}
	if daemon != "" {
		d.LogDir = rootlessLogDir(daemon, d.ID)
	}
	if err := r.removeLeftover(ctx, c, d); err != nil {
		return sdk.Handle{}, err
	}
	if err := os.MkdirAll(req.RunDir, 0o700); err != nil {
		return sdk.Handle{}, fmt.Errorf("instance %s: create run dir: %w", req.Instance, err)
	}
	for _, name := range []string{stdoutFile, stderrFile, stoppedFile} {
		if err := os.Remove(filepath.Join(req.RunDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return sdk.Handle{}, fmt.Errorf("instance %s: %w", req.Instance, err)
		}
	}
	labels := d.labels()
	var block portBlock
	if set.network != nil {
		// Held until the container records its block: the pool is the
		// containers' labels.
		r.netMu.Lock()
		defer r.netMu.Unlock()
		if block, err = r.allocBlock(ctx, len(set.network.ports)); err != nil {
			return sdk.Handle{}, fmt.Errorf("instance %s: %w", req.Instance, err)
		}
		d.Ports = set.network.hostPorts(block)
		for k, v := range set.network.labels(block) {
			labels[k] = v
		}
	}
	snapshot := containerd.WithRemappedSnapshot(d.ID, img, req.User.SubUID, req.User.SubGID)
	if daemon != "" {
		// The container runs in the daemon's user namespace, where
		// rootlesskit maps the image's ids into the tenant's range.
		snapshot = containerd.WithNewSnapshot(d.ID, img)
		if err := makeLogDir(d.LogDir, req.User); err != nil {
			return sdk.Handle{}, fmt.Errorf("instance %s: log dir: %w", req.Instance, err)
		}
		if set.state != nil {
			if err := r.shareState(req, set, &d); err != nil {
				_ = r.unshareState(d)
				return sdk.Handle{}, fmt.Errorf("instance %s: %w", req.Instance, err)
			}
			// The daemon binds the state from where it was shown.
			shown := *set.state
			shown.Source, set.state = stateMountPoint(d), &shown
		}
	}
	ctr, err := c.NewContainer(ctx, d.ID,
		snapshot,
		containerd.WithNewSpec(r.specOpts(img, req, set, d)...),
		containerd.WithContainerLabels(labels),
		containerd.WithRuntime("io.containerd.runc.v2", nil),
	)
	if err != nil {
		return sdk.Handle{}, fmt.Errorf("instance %s: create container: %w", req.Instance, err)
	}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if t, terr := ctr.Task(cctx, nil); terr == nil && daemon == "" {
				_, _ = t.Delete(cctx, containerd.WithProcessKill)
			} else if terr == nil {
				// runc of a rootless daemon knows no cgroup to kill all
				// of (stopTask): the task's init is killed alone.
				if exited, werr := t.Wait(cctx); werr == nil && t.Kill(cctx, syscall.SIGKILL) == nil {
					select {
					case <-exited:
					case <-cctx.Done():
					}
				}
				_, _ = t.Delete(cctx)
			}
			_ = ctr.Delete(cctx, containerd.WithSnapshotCleanup)
			if daemon != "" {
				_ = removeCgroup(d.Cgroup)
				_ = os.RemoveAll(d.LogDir)
				_ = r.unshareState(d)
			}
		}
	}()
	spec, err := ctr.Spec(ctx)
	if err != nil {
		return sdk.Handle{}, fmt.Errorf("instance %s: read spec: %w", req.Instance, err)
	}
	if err := writeSpec(filepath.Join(req.RunDir, specFile), spec); err != nil {
		return sdk.Handle{}, fmt.Errorf("instance %s: %w", req.Instance, err)
	}
	logURI, err := cio.LogURIGenerator("binary", r.exe, map[string]string{LogCommand: d.logDir()})
	if err != nil {
		return sdk.Handle{}, err
	}
	task, err := ctr.NewTask(ctx, cio.LogURI(logURI))
	if err != nil {
		return sdk.Handle{}, fmt.Errorf("instance %s: create task: %w", req.Instance, err)
	}
	if set.network != nil && daemon == "" {
		// The task's own network namespace, owned by its user namespace
		// (which lets runc mount /sys), is attached before it starts.
		var netLabels map[string]string
		netLabels, err = r.setupNetwork(ctx, ctr, task.Pid(), set.network, block)
		defer func() {
			if err != nil {
				_ = r.teardownNetwork(context.WithoutCancel(ctx), d.ID, netLabels)
			}
		}()
		if err != nil {
			return sdk.Handle{}, fmt.Errorf("instance %s: %w", req.Instance, err)
		}
	}
	if set.network != nil && daemon != "" {
		defer func() {
			if err != nil {
				_ = stopSlirp(d.RunDir)
			}
		}()
		if err = r.startSlirp(ctx, req, d, task.Pid(), set.network, labels); err != nil {
			return sdk.Handle{}, fmt.Errorf("instance %s: %w", req.Instance, err)
		}
	}
	if daemon != "" {
		if err := joinCgroup(d.Cgroup, linuxResources(req.Resources), task); err != nil {
			return sdk.Handle{}, fmt.Errorf("instance %s: %w", req.Instance, err)
		}
	}
	d.StartedAt = time.Now().UTC()
	h, err := d.encode()
	if err != nil {
		return sdk.Handle{}, err
	}
	// Tracked first: a task that ends at once must not end untracked, its
	// exit unreported.
	r.exits.track(d.ID, h)
	if err := task.Start(ctx); err != nil {
		r.exits.untrack(d.ID)
		return sdk.Handle{}, fmt.Errorf("instance %s: start task: %w", req.Instance, err)
	}
	return h, nil
}

// removeLeftover removes a container of the instance that no handle
// refers to any more, such as one an interrupted Start made: the core
// starts an instance only when it has no workload. A container of the id
// that is not the instance's is refused.
func (r *Runtime) removeLeftover(ctx context.Context, c *containerd.Client, d handleData) error {
	ctr, err := c.LoadContainer(ctx, d.ID)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("instance %s: load container: %w", d.Instance, err)
	}
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return fmt.Errorf("instance %s: container labels: %w", d.Instance, err)
	}
	if labels[labelTenant] != d.Instance.Tenant || labels[labelInstance] != d.Instance.Name {
		return sdk.Errorf(sdk.CodeInvalid, "instance %s: namespace %s holds a container %s that is not the instance's", d.Instance, r.namespace, d.ID)
	}
	old := d
	old.RunDir = labels[labelRunDir]
	h, err := old.encode()
	if err != nil {
		return err
	}
	return r.Destroy(ctx, h)
}

// load returns the handle's container, checking that its labels are the
// handle's. It fails with CodeNotFound when the container is gone.
func (r *Runtime) load(ctx context.Context, h sdk.Handle) (context.Context, handleData, containerd.Container, error) {
	d, err := decodeHandle(h)
	if err != nil {
		return ctx, d, nil, err
	}
	if d.legacy() {
		return ctx, d, nil, sdk.Errorf(sdk.CodeUnavailable, "instance %s: its handle, from before the plugin checked who listens on a tenant's daemon, names no daemon to check: only Destroy works, without the daemon", d.Instance)
	}
	ctx, c, err := r.connect(ctx, d.Daemon, d.daemonPeer())
	if err != nil {
		return ctx, d, nil, err
	}
	ctx = namespaces.WithNamespace(ctx, d.Namespace)
	ctr, err := c.LoadContainer(ctx, d.ID)
	if errdefs.IsNotFound(err) {
		return ctx, d, nil, sdk.Errorf(sdk.CodeNotFound, "instance %s: no container %s", d.Instance, d.ID)
	}
	if err != nil {
		return ctx, d, nil, fmt.Errorf("instance %s: load container: %w", d.Instance, err)
	}
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return ctx, d, nil, fmt.Errorf("instance %s: container labels: %w", d.Instance, err)
	}
	for k, v := range d.labels() {
		if labels[k] != v {
			return ctx, d, nil, sdk.Errorf(sdk.CodeInvalid, "instance %s: container %s is not the handle's (label %s is %q)", d.Instance, d.ID, k, labels[k])
		}
	}
	return ctx, d, ctr, nil
}

// Stop sends SIGTERM to the container's task, and SIGKILL after timeout.
// Stopping a stopped instance succeeds.
func (r *Runtime) Stop(ctx context.Context, h sdk.Handle, timeout time.Duration) error {
	ctx, d, ctr, err := r.load(ctx, h)
	if err != nil {
		return err
	}
	if err := stopTask(ctx, d, ctr, timeout); err != nil {
		return err
	}
	return stopSlirp(d.RunDir)
}

func stopTask(ctx context.Context, d handleData, ctr containerd.Container, timeout time.Duration) error {
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("instance %s: task: %w", d.Instance, err)
	}
	st, err := task.Status(ctx)
	if err != nil {
		return fmt.Errorf("instance %s: task status: %w", d.Instance, err)
	}
	if st.Status == containerd.Stopped {
		return nil
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		return fmt.Errorf("instance %s: wait: %w", d.Instance, err)
	}
	if err := os.WriteFile(filepath.Join(d.RunDir, stoppedFile), nil, 0o600); err != nil {
		return fmt.Errorf("instance %s: %w", d.Instance, err)
	}
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("instance %s: SIGTERM: %w", d.Instance, err)
	}
	select {
	case <-exited:
		return nil
	case <-time.After(timeout):
	case <-ctx.Done():
		return ctx.Err()
	}
	// In a rootless daemon runc knows no cgroup of the container to kill
	// all of; the end of its pid namespace's init ends the rest.
	var killOpts []containerd.KillOpts
	if d.Daemon == "" {
		killOpts = append(killOpts, containerd.WithKillAll)
	}
	if err := task.Kill(ctx, syscall.SIGKILL, killOpts...); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("instance %s: SIGKILL: %w", d.Instance, err)
	}
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Destroy stops the instance and removes its task, container and
// snapshot. Destroying a destroyed instance succeeds.
func (r *Runtime) Destroy(ctx context.Context, h sdk.Handle) error {
	if d, err := decodeHandle(h); err == nil && d.legacy() {
		return r.destroyLegacy(d)
	}
	ctx, d, ctr, err := r.load(ctx, h)
	if errors.Is(err, sdk.ErrNotFound) {
		r.exits.untrack(d.ID)
		return stopSlirp(d.RunDir)
	}
	if err != nil {
		return err
	}
	if err := stopTask(ctx, d, ctr, destroyStopTimeout); err != nil {
		return err
	}
	if task, err := ctr.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("instance %s: delete task: %w", d.Instance, err)
		}
	} else if !errdefs.IsNotFound(err) {
		return fmt.Errorf("instance %s: task: %w", d.Instance, err)
	}
	labels, err := ctr.Labels(ctx)
	if err != nil {
		return fmt.Errorf("instance %s: container labels: %w", d.Instance, err)
	}
	if err := r.teardownNetwork(ctx, d.ID, labels); err != nil {
		return fmt.Errorf("instance %s: %w", d.Instance, err)
	}
	if err := stopSlirp(d.RunDir); err != nil {
		return fmt.Errorf("instance %s: %w", d.Instance, err)
	}
	if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("instance %s: delete container: %w", d.Instance, err)
	}
	r.exits.untrack(d.ID)
	if d.Daemon == "" {
		return nil
	}
	return r.removeRootless(d)
}

// destroyLegacy destroys an instance whose handle names no daemon peer
// (from before the plugin checked it), without its daemon, which root
// will not dial unchecked: it kills the processes of the container's
// cgroup (root's) and removes the cgroup, the slirp4netns, the logs and
// the state's mount. The container's record stays in the tenant's daemon
// until ReleaseTenant stops it and removes its directory.
func (r *Runtime) destroyLegacy(d handleData) error {
	r.exits.untrack(d.ID)
	if err := stopSlirp(d.RunDir); err != nil {
		return fmt.Errorf("instance %s: %w", d.Instance, err)
	}
	if err := killCgroup(d.Cgroup); err != nil {
		return fmt.Errorf("instance %s: %w", d.Instance, err)
	}
	return r.removeRootless(d)
}

// removeRootless removes what a per-tenant instance has outside its
// daemon: its cgroup (root's), its logs and its state's mount.
func (r *Runtime) removeRootless(d handleData) error {
	if err := removeCgroup(d.Cgroup); err != nil {
		return fmt.Errorf("instance %s: %w", d.Instance, err)
	}
	if err := os.RemoveAll(d.LogDir); err != nil {
		return fmt.Errorf("instance %s: remove logs: %w", d.Instance, err)
	}
	if err := r.unshareState(d); err != nil {
		return fmt.Errorf("instance %s: %w", d.Instance, err)
	}
	return nil
}

// Inspect reports the instance's status from its task. An ended task's
// slirp4netns, in the per-tenant mode, is stopped.
func (r *Runtime) Inspect(ctx context.Context, h sdk.Handle) (sdk.Status, error) {
	ctx, d, ctr, err := r.load(ctx, h)
	if err != nil {
		return sdk.Status{}, err
	}
	st := sdk.Status{State: sdk.StateUnknown, StartedAt: d.StartedAt}
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		st.State, st.Cause, st.Message = sdk.StateExited, sdk.CauseUnknown, "the container has no task"
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("instance %s: task: %w", d.Instance, err)
	}
	ts, err := task.Status(ctx)
	if err != nil {
		return st, fmt.Errorf("instance %s: task status: %w", d.Instance, err)
	}
	st.Pid = int(task.Pid())
	switch ts.Status {
	case containerd.Running, containerd.Created, containerd.Paused, containerd.Pausing:
		st.State, st.Message = sdk.StateRunning, portsMessage(d.Ports)
		return st, nil
	case containerd.Stopped:
	default:
		return st, nil
	}
	st.Pid, st.FinishedAt, st.ExitCode = 0, ts.ExitTime, int(ts.ExitStatus)
	// An ended task's slirp4netns would keep its network namespace.
	if err := stopSlirp(d.RunDir); err != nil {
		return st, fmt.Errorf("instance %s: %w", d.Instance, err)
	}
	_, stopErr := os.Stat(filepath.Join(d.RunDir, stoppedFile))
	switch oom := oomKills(d.Cgroup); {
	case stopErr == nil:
		st.State, st.Cause, st.Message = sdk.StateStopped, sdk.CauseKilled, "stopped by the runtime"
	case oom > 0:
		st.State, st.Cause, st.Message = sdk.StateExited, sdk.CauseOOM, "killed by the kernel's OOM killer at its memory limit"
	case ts.ExitStatus > 128 && ts.ExitStatus < 128+65:
		st.State, st.Cause, st.Signal = sdk.StateExited, sdk.CauseSignal, int(ts.ExitStatus-128)
		st.Message = fmt.Sprintf("killed by signal %d", st.Signal)
	default:
		st.State, st.Cause = sdk.StateExited, sdk.CauseExit
	}
	return st, nil
}

// Recover adopts the instance's container as it is: a running task goes
// on running, with its slirp4netns in the per-tenant mode (adoptSlirp),
// and on the shared bridge with its anti-spoofing filter restored if it
// was lost (a flushed firewall). It fails with CodeNotFound when the
// container is gone.
func (r *Runtime) Recover(ctx context.Context, h sdk.Handle) (sdk.Handle, error) {
	ctx, d, ctr, err := r.load(ctx, h)
	if err != nil {
		return sdk.Handle{}, err
	}
	if err := adoptSlirp(ctx, d, ctr); err != nil {
		return sdk.Handle{}, fmt.Errorf("instance %s: %w", d.Instance, err)
	}
	if d.Daemon == "" {
		labels, err := ctr.Labels(ctx)
		if err != nil {
			return sdk.Handle{}, fmt.Errorf("instance %s: container labels: %w", d.Instance, err)
		}
		f, ok, err := spoofFilterOf(labels)
		if err == nil && ok {
			err = f.install(ctx)
		}
		if err != nil {
			return sdk.Handle{}, fmt.Errorf("instance %s: anti-spoofing filter: %w", d.Instance, err)
		}
	}
	r.exits.track(d.ID, h)
	return h, nil
}

// Logs streams the instance's stdout or stderr from its log file. With
// Follow it polls for more until the task has ended, then sends the rest.
func (r *Runtime) Logs(ctx context.Context, h sdk.Handle, opts sdk.LogOptions, fn func([]byte) error) error {
	d, err := decodeHandle(h)
	if err != nil {
		return err
	}
	running := func(ctx context.Context) bool {
		st, err := r.Inspect(ctx, h)
		return err == nil && st.State == sdk.StateRunning
	}
	return logfile.Stream(ctx, d.logDir(), d.Instance, opts, pollInterval, running, fn)
}

// oomKills returns the OOM kill count of the container's memory cgroup
// (v1 memory.oom_control, v2 memory.events), 0 when unknown.
func oomKills(cgroup string) int64 {
	for _, p := range []string{
		filepath.Join("/sys/fs/cgroup/memory", cgroup, "memory.oom_control"),
		filepath.Join("/sys/fs/cgroup", cgroup, "memory.events"),
	} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			var n int64
			if _, err := fmt.Sscanf(line, "oom_kill %d", &n); err == nil {
				return n
			}
		}
	}
	return 0
}

package sdk

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Kind names a plugin kind.
type Kind string

// The plugin kinds.
const (
	KindRuntime Kind = "runtime"
	KindStateFS Kind = "statefs"
	KindLedger  Kind = "ledger"
)

// AttrType is the type of one plugin setting.
type AttrType string

// The setting types a plugin can declare.
const (
	TypeString     AttrType = "string"
	TypeNumber     AttrType = "number"
	TypeBool       AttrType = "bool"
	TypeStringList AttrType = "list(string)"
	TypeStringMap  AttrType = "map(string)"
)

// Attribute declares one setting: an argument such as `path = "/srv"`.
type Attribute struct {
	Name        string
	Type        AttrType
	Required    bool
	Description string
}

// Nesting says how often a block may appear and how its values are keyed.
type Nesting string

// The block nestings, as in Terraform's and Nomad's schemas.
const (
	// NestingSingle: at most one block, `name { ... }`; its value is a Config.
	NestingSingle Nesting = "single"
	// NestingList: any number of blocks, `name { ... }`, in file order; its
	// value is a []Config.
	NestingList Nesting = "list"
	// NestingMap: any number of labeled blocks, `name "key" { ... }`, each
	// label once; its value is a map[string]Config.
	NestingMap Nesting = "map"
)

// Block declares a nested block of settings.
type Block struct {
	Name    string
	Nesting Nesting
	// Required: a single block must be present, a list or map must hold at
	// least one block.
	Required    bool
	Description string
	// Schema declares the block's own settings; it may nest further.
	Schema Schema
}

// Schema declares settings: arguments and nested blocks. The core decodes
// the settings a spec writes against it with hcldec, keeping source ranges,
// so that a bad setting is reported at its place in the spec.
type Schema struct {
	Attributes []Attribute
	Blocks     []Block
}

// Scope is where a plugin's process runs.
type Scope string

// The scopes.
const (
	// ScopeHost: one process for the host, run by the agent as root.
	ScopeHost Scope = "host"
	// ScopeTenant: one process per tenant, run as the tenant's user inside
	// the tenant's cgroup.
	ScopeTenant Scope = "tenant"
)

// The artifact kinds a runtime can declare it runs.
const (
	ArtifactWasm = "wasm"
	ArtifactOCI  = "oci"
)

// Names of isolation features a runtime can declare it enforces. Other
// names are allowed; these are the ones the core and policies know.
const (
	IsolationUser       = "user"         // workloads run as the tenant's user
	IsolationCgroup     = "cgroup"       // workloads run in their instance's cgroup
	IsolationNoNewPrivs = "no_new_privs" // no privilege gain through exec
	IsolationSeccomp    = "seccomp"      // a syscall filter
	IsolationUserNS     = "userns"       // a user namespace
	IsolationChroot     = "chroot"       // a filesystem jail
	IsolationNoNetwork  = "no-network"   // no network access
)

// Feature names of the optional calls and behaviours of protocol version 2.
// A feature name is versioned by its kind's protocol namespace; a plugin
// declares the ones it implements, and the host calls an optional call only
// on a plugin that declares its feature. A plugin answers a call whose
// feature it does not declare with CodeUnsupported.
const (
	// FeatureTenantLifecycle: the runtime needs PrepareTenant before a
	// tenant's first Start and ReleaseTenant after its last Destroy.
	FeatureTenantLifecycle = "kigumi.runtime.v2/tenant-lifecycle"
	// FeatureValidate: the runtime checks instances in Validate.
	FeatureValidate = "kigumi.runtime.v2/validate"
	// FeatureWatch: the runtime implements ExitWatcher, reporting each
	// instance's exit as it happens, so that the core need not wait for its
	// next periodic refresh to notice it.
	FeatureWatch = "kigumi.runtime.v2/watch"
	// FeatureProgress: the runtime reports the progress of a long Start,
	// such as an image pull, with ReportProgress.
	FeatureProgress = "kigumi.runtime.v2/progress"
	// FeatureUsage: the StateFS reports Usage.
	FeatureUsage = "kigumi.statefs.v2/usage"
	// FeatureCheckpoint: the StateFS implements Checkpoint, Checkpoints and
	// Rollback.
	FeatureCheckpoint = "kigumi.statefs.v2/checkpoint"
	// FeatureCheckpointMount: the StateFS implements CheckpointMounter,
	// mounting a checkpoint read-only next to the live state.
	FeatureCheckpointMount = "kigumi.statefs.v2/checkpoint-mount"
	// FeatureEncryptedReplies: the ledger encrypts a reply's Payload to
	// the tenant.
	FeatureEncryptedReplies = "kigumi.ledger.v2/encrypted-replies"
)

// PermissionParam declares one parameter of a permission. Parameter values
// are strings.
type PermissionParam struct {
	Name        string
	Required    bool
	Description string
}

// PermissionSpec declares a permission a runtime can grant to workloads.
type PermissionSpec struct {
	Name        string
	Description string
	// Params are the parameters the permission takes; a permission without
	// any is written in the spec's permissions list.
	Params []PermissionParam
}

// Capabilities declare what a plugin is and does. The host reads them from
// Info and passes its own in ConfigureRequest: capabilities and features,
// not version numbers, are how both sides adapt to each other within a
// major protocol version.
type Capabilities struct {
	// Scope is where the plugin's process runs; empty means ScopeHost.
	Scope Scope
	// Artifacts are the artifact kinds a runtime runs (ArtifactWasm, ...).
	Artifacts []string
	// Isolation names the isolation features a runtime enforces
	// (IsolationUser, ...).
	Isolation []string
	// Permissions are the permissions a runtime can grant. The core
	// refuses a spec that asks for any other.
	Permissions []PermissionSpec
	// Features name the optional calls and behaviours the plugin
	// implements (FeatureTenantLifecycle, ...).
	Features []string
}

// Has reports whether c declares feature.
func (c Capabilities) Has(feature string) bool { return slices.Contains(c.Features, feature) }

// Permission looks up a declared permission by name.
func (c Capabilities) Permission(name string) (PermissionSpec, bool) {
	i := slices.IndexFunc(c.Permissions, func(p PermissionSpec) bool { return p.Name == name })
	if i < 0 {
		return PermissionSpec{}, false
	}
	return c.Permissions[i], true
}

// Info describes a plugin.
type Info struct {
	// Name is the plugin's name, as used in the host spec's block label.
	Name string
	// Kind is the plugin kind.
	Kind Kind
	// Version is the plugin's own version string.
	Version string
	// Schema declares the plugin's settings in its host-spec block.
	Schema Schema
	// InstanceSchema declares, for a runtime, the runtime-specific settings
	// of one instance (ports, entrypoint, workload uid...), which a tenant
	// writes in the instance's `settings { ... }` block. They reach the
	// runtime as StartRequest.Settings.
	InstanceSchema Schema
	// Capabilities declare what the plugin is and does.
	Capabilities Capabilities
}

// Config holds decoded settings. Values are string, float64, bool,
// []string or map[string]string for arguments, as the schema declares, and
// Config, []Config or map[string]Config for single, list and map blocks.
// Arguments absent from the spec are absent from the map; so are single
// blocks, while an absent list or map block is an empty []Config or
// map[string]Config.
type Config map[string]any

// HostCapabilities are the host's side of capability negotiation.
type HostCapabilities struct {
	// ProtocolMinor is the minor protocol version the host speaks.
	ProtocolMinor uint32
	// Features name what the host supports, in the same versioned
	// namespace as a plugin's features.
	Features []string
}

// ConfigureRequest hands a plugin its settings.
type ConfigureRequest struct {
	// Host is the host's name.
	Host string
	// Settings are the plugin's decoded settings.
	Settings Config
	// DataDir is a root-owned directory, kept across runs, where the plugin
	// may keep its own data (caches, indexes). It exists when Configure is
	// called.
	DataDir string
	// HostCapabilities say what the host supports, so a plugin can adapt.
	HostCapabilities HostCapabilities
}

// Plugin is what every plugin kind implements.
type Plugin interface {
	// Info describes the plugin and declares its settings schema.
	Info(ctx context.Context) (Info, error)
	// Configure hands the plugin its decoded settings. It is called once,
	// before any other call but Info. An invalid setting is reported as an
	// *Error with code CodeInvalid and Attribute set to the setting's name
	// (a nested one as "block.name", or "block[index].name" and
	// "block[\"key\"].name" for list and map blocks).
	Configure(ctx context.Context, req ConfigureRequest) error
}

// Handle is a plugin's opaque, versioned reference to something it made.
// The core stores handles and hands them back; only the plugin reads Data.
// A plugin must accept every Version it ever produced, or fail with
// CodeInvalid.
type Handle struct {
	Version uint32
	Data    []byte
}

// User is the Linux identity that a tenant's workloads run as.
type User struct {
	Name string
	UID  uint32
	GID  uint32
	// SubUID and SubGID are the first ids of the tenant's subordinate id
	// ranges, each Count long (zero when not allocated).
	SubUID uint32
	SubGID uint32
	Count  uint32
	// Home is the tenant's home directory.
	Home string
}

// Cgroup is the cgroup that a tenant's or an instance's processes must be
// placed in.
type Cgroup struct {
	// Path is the cgroup's path relative to the hierarchy root,
	// such as "/kigumi/alice/web".
	Path string
	// ProcsFiles are the absolute paths of the cgroup.procs files to write a
	// process id into: one per v1 hierarchy, or one for the v2 hierarchy.
	ProcsFiles []string
}

// Resources are the limits of an instance, or of a tenant in all.
type Resources struct {
	MemoryBytes int64
	// MilliCPU is CPU in thousandths of a core.
	MilliCPU  int64
	DiskBytes int64
	Pids      int64
	// IO limits the rates of disk I/O.
	IO IOLimits
}

// IOLimits are disk I/O rates: bytes and operations per second, read and
// written. Zero means unlimited.
type IOLimits struct {
	ReadBPS, WriteBPS   int64
	ReadIOPS, WriteIOPS int64
}

// Artifact is what an instance runs: a wasm module file or a container image.
type Artifact struct {
	// Module is an absolute path to a .wasm file.
	Module string
	// Image is an OCI image reference.
	Image string
	// Archive is an absolute path to an OCI image-layout tar file (as
	// `skopeo copy ... oci-archive:PATH` makes), holding one image.
	Archive string
	// Digest optionally pins the artifact's content ("sha256:..."): the
	// image's manifest digest for Image and Archive.
	Digest string
}

// The names of the permissions every runtime that offers state or time is
// expected to use for them. A runtime declares the permissions it supports
// in Capabilities.Permissions; these are names, not a closed list.
const (
	PermStateRead  = "state.read"
	PermStateWrite = "state.write"
	PermClock      = "clock"
	PermRandom     = "random"
)

// Permission is a capability granted to a workload, by name, with its
// parameters. Workloads get nothing that is not granted.
type Permission struct {
	Name string
	// Params are the permission's parameters; nil when it has none.
	Params map[string]string
}

// String returns the permission as a spec would grant it: its name, then
// its parameters in braces, sorted, such as `net{host="db", port="5432"}`.
func (p Permission) String() string {
	if len(p.Params) == 0 {
		return p.Name
	}
	parts := make([]string, 0, len(p.Params))
	for _, k := range slices.Sorted(maps.Keys(p.Params)) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, p.Params[k]))
	}
	return p.Name + "{" + strings.Join(parts, ", ") + "}"
}

// Permissions is a list of granted permissions, each name at most once.
type Permissions []Permission

// Has reports whether ps grants the permission name.
func (ps Permissions) Has(name string) bool {
	_, ok := ps.Get(name)
	return ok
}

// Get returns the granted permission name.
func (ps Permissions) Get(name string) (Permission, bool) {
	i := slices.IndexFunc(ps, func(p Permission) bool { return p.Name == name })
	if i < 0 {
		return Permission{}, false
	}
	return ps[i], true
}

// Names returns the names of ps, in order.
func (ps Permissions) Names() []string {
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.Name
	}
	return names
}

// The mount types.
const (
	// MountBind: Source is a host directory to bind into the workload.
	MountBind = "bind"
	// MountFUSE: Source is a FUSE mount point served on the host.
	MountFUSE = "fuse"
	// MountDir: Source is a plain host directory; a runtime that cannot
	// bind (wasm) preopens it.
	MountDir = "dir"
)

// Mount is a filesystem handed to a workload.
type Mount struct {
	// Source is the host path.
	Source string
	// Target is the path the workload sees it at, such as "/state".
	Target   string
	ReadOnly bool
	// Type is MountBind, MountFUSE, MountDir or a runtime-specific type.
	Type string
	// Options are mount options, such as "nosuid".
	Options []string
	// State marks the instance's own state, of which there is at most
	// one; the other mounts are read-only directories the host hands out
	// (from its artifacts).
	State bool
}

// StateTarget is the guest path the core mounts an instance's state at.
const StateTarget = "/state"

// Instance identifies an instance.
type Instance struct {
	Tenant string
	Name   string
}

// String returns "tenant/name".
func (i Instance) String() string { return i.Tenant + "/" + i.Name }

// TenantRequest asks a runtime to prepare for a tenant's instances, for
// example by starting a per-tenant daemon or sandbox.
type TenantRequest struct {
	Tenant string
	User   User
	// Cgroup is the tenant's cgroup; its instances' cgroups lie inside.
	Cgroup Cgroup
	// RunDir is a root-owned directory the runtime may use for the tenant's
	// bookkeeping. It is removed once the tenant is released.
	RunDir string
	// Resources are the tenant's limits: the sums over its instances.
	Resources Resources
}

// StartRequest asks a runtime to start an instance.
type StartRequest struct {
	Instance  Instance
	User      User
	Cgroup    Cgroup
	Artifact  Artifact
	Args      []string
	Env       map[string]string
	Resources Resources
	// Permissions are what the workload is granted.
	Permissions Permissions
	// Mounts are the filesystems to hand to the workload, such as its
	// state at StateTarget. They are chosen by the engine, never by the
	// tenant.
	Mounts []Mount
	// Settings are the instance's runtime-specific settings, decoded
	// against the runtime's InstanceSchema.
	Settings Config
	// Tenant is the handle PrepareTenant returned for the instance's
	// tenant; zero for a runtime without FeatureTenantLifecycle.
	Tenant Handle
	// RunDir is a root-owned directory the runtime may use for the
	// instance's logs and bookkeeping. It is removed on destroy.
	RunDir string
	// Stdin is the host path of the file the workload reads as its
	// standard input; empty for none (an empty input).
	Stdin string
}

// State is an instance's run state.
type State string

// The run states.
const (
	StateRunning State = "running"
	StateExited  State = "exited"
	StateStopped State = "stopped"
	StateUnknown State = "unknown"
)

// Cause says why an instance is no longer running.
type Cause string

// The causes. A running instance has none.
const (
	// CauseExit: the workload exited by itself, with ExitCode.
	CauseExit Cause = "exit"
	// CauseSignal: the workload was killed by Signal, not by the runtime.
	CauseSignal Cause = "signal"
	// CauseOOM: the workload was killed for going over its memory limit.
	CauseOOM Cause = "oom"
	// CauseLimit: the workload was stopped for going over another limit
	// (a CPU or time budget, pids...); Message says which.
	CauseLimit Cause = "limit"
	// CauseTrap: the workload trapped (a wasm trap, a fault).
	CauseTrap Cause = "trap"
	// CauseKilled: the runtime stopped the workload, through Stop or
	// Destroy.
	CauseKilled Cause = "killed"
	// CauseUnknown: the workload ended, and the runtime cannot tell how.
	CauseUnknown Cause = "unknown"
)

// Status is what Inspect reports of an instance.
type Status struct {
	State State
	// Cause says why an exited or stopped instance ended.
	Cause Cause
	// ExitCode is the workload's exit code, for CauseExit.
	ExitCode int
	// Signal is the number of the signal that ended the workload, if any.
	Signal     int
	Pid        int
	StartedAt  time.Time
	FinishedAt time.Time
	// Message explains the state, for example why an instance failed.
	Message string
}

// LogStream selects an instance's output stream.
type LogStream string

// The log streams.
const (
	Stdout LogStream = "stdout"
	Stderr LogStream = "stderr"
)

// LogOptions select what Logs returns.
type LogOptions struct {
	Stream LogStream
	// Follow keeps the stream open, sending new output, until the instance
	// ends or the context is cancelled.
	Follow bool
}

// Runtime runs instances.
type Runtime interface {
	Plugin
	// PrepareTenant readies the runtime for a tenant's instances and
	// returns the tenant's handle, which every StartRequest of the tenant
	// carries. It is idempotent: preparing a prepared tenant returns its
	// handle. The core calls it only on a runtime that declares
	// FeatureTenantLifecycle.
	PrepareTenant(ctx context.Context, req *TenantRequest) (Handle, error)
	// ReleaseTenant undoes PrepareTenant once the tenant has no instances
	// left on the runtime. Releasing a released tenant succeeds.
	ReleaseTenant(ctx context.Context, h Handle) error
	// Validate checks, without starting anything, what Start would refuse
	// in req: the artifact, permissions and settings. req has no Mounts,
	// Tenant or RunDir. A refusal is an *Error with CodeInvalid whose
	// Attribute names the spec's attribute ("module", "permissions",
	// "settings.port"), which the core reports at that place in the spec.
	// The core calls it only on a runtime that declares FeatureValidate.
	Validate(ctx context.Context, req *StartRequest) error
	// Start creates and starts an instance and returns its handle. A failed
	// Start leaves nothing behind.
	Start(ctx context.Context, req *StartRequest) (Handle, error)
	// Stop stops an instance, forcefully after timeout. Stopping a stopped
	// instance succeeds.
	Stop(ctx context.Context, h Handle, timeout time.Duration) error
	// Destroy stops an instance if needed and removes everything the runtime
	// made for it. Destroying a destroyed instance succeeds.
	Destroy(ctx context.Context, h Handle) error
	// Inspect reports an instance's status.
	Inspect(ctx context.Context, h Handle) (Status, error)
	// Recover re-attaches to an instance after the plugin or engine
	// restarted. It is idempotent, and may return an upgraded handle.
	// It fails with CodeNotFound when the instance is gone.
	Recover(ctx context.Context, h Handle) (Handle, error)
	// Logs streams an instance's output into fn, one chunk per call, until
	// the output ends, fn fails, or ctx is cancelled.
	Logs(ctx context.Context, h Handle, opts LogOptions, fn func([]byte) error) error
}

// ExitEvent reports that an instance's workload ended.
type ExitEvent struct {
	Instance Instance
	// Handle is the instance's handle, as Start or Recover returned it.
	Handle Handle
	// Status is what Inspect reported of the instance once it ended. The
	// core inspects the instance again before it acts.
	Status Status
}

// ExitWatcher is the optional call of FeatureWatch. It is apart from
// Runtime so that a runtime without the feature need not implement it; a
// runtime that declares the feature implements both. The host's client of
// every runtime implements it, and the host calls it only on a runtime that
// declares the feature.
type ExitWatcher interface {
	// WatchExits reports the exits of the runtime's instances: those this
	// plugin process started or recovered. It calls ready once it reports
	// every later exit, then fn with each exit as it happens, until ctx
	// ends (it returns ctx's error) or fn fails (it returns fn's error).
	// Exits before ready are not reported, so the core refreshes the
	// runtime's instances after ready. Several watchers may watch at once;
	// each sees every exit.
	WatchExits(ctx context.Context, ready func(), fn func(ExitEvent) error) error
}

// ProvisionRequest asks a StateFS to create an instance's state.
type ProvisionRequest struct {
	Instance  Instance
	User      User
	SizeBytes int64
	// InodeLimit caps the number of files and directories; 0 lets the
	// StateFS derive one from SizeBytes.
	InodeLimit int64
	// Dir is an engine-chosen directory the StateFS may keep the state in.
	Dir string
	// IO limits the rates of the state's reads and writes; a StateFS
	// that serves the state itself enforces them.
	IO IOLimits
}

// Usage is how much of its quota a state uses.
type Usage struct {
	Bytes  int64
	Inodes int64
	// BytesLimit and InodesLimit are the quotas; 0 means none.
	BytesLimit  int64
	InodesLimit int64
}

// Checkpoint is a named, read-only snapshot of a state.
type Checkpoint struct {
	Name      string
	CreatedAt time.Time
	// Root is the digest of the state's content when the checkpoint was
	// made, as Hash reports it.
	Root []byte
	// Bytes and Inodes are the checkpoint's size, counted as Usage counts.
	Bytes  int64
	Inodes int64
	// Mount is where the checkpoint is mounted read-only
	// (FeatureCheckpointMount); empty when it is not.
	Mount string
}

// maxCheckpointName is the longest checkpoint name.
const maxCheckpointName = 64

// CheckCheckpointName checks that name may name a checkpoint: 1 to 64
// letters, digits, '.', '_' and '-', not starting with '.'. It fails with
// CodeInvalid on the attribute "name".
func CheckCheckpointName(name string) error {
	ok := name != "" && len(name) <= maxCheckpointName && name[0] != '.'
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
	}
	if !ok {
		return InvalidAttribute("name", "%q is not a checkpoint name: 1 to %d letters, digits, '.', '_' or '-', not starting with '.'", name, maxCheckpointName)
	}
	return nil
}

// StateFS provides per-instance state filesystems.
type StateFS interface {
	Plugin
	// Provision creates an instance's state. A failed Provision leaves
	// nothing behind.
	Provision(ctx context.Context, req *ProvisionRequest) (Handle, error)
	// Mount makes the state available and returns it as a mount, whose
	// Target the core sets. Mounting a mounted state returns the same mount.
	Mount(ctx context.Context, h Handle) (Mount, error)
	// Unmount releases the mount. Unmounting an unmounted state succeeds.
	Unmount(ctx context.Context, h Handle) error
	// Hash returns a digest of the state's current content.
	Hash(ctx context.Context, h Handle) ([]byte, error)
	// Usage reports the state's use against its quotas (FeatureUsage).
	Usage(ctx context.Context, h Handle) (Usage, error)
	// Checkpoint snapshots the state under name, which must be new
	// (FeatureCheckpoint). Names are as CheckCheckpointName says.
	Checkpoint(ctx context.Context, h Handle, name string) (Checkpoint, error)
	// Checkpoints lists the state's checkpoints, oldest first
	// (FeatureCheckpoint).
	Checkpoints(ctx context.Context, h Handle) ([]Checkpoint, error)
	// Rollback returns the state's content to the checkpoint name, which
	// is kept (FeatureCheckpoint). The instance should be stopped.
	Rollback(ctx context.Context, h Handle, name string) error
	// Recover re-attaches to a state after a restart. It is idempotent.
	Recover(ctx context.Context, h Handle) (Handle, error)
	// Deprovision unmounts and deletes an instance's state and its
	// checkpoints. Deprovisioning deleted state succeeds.
	Deprovision(ctx context.Context, h Handle) error
}

// CheckpointMounter is the optional pair of calls of
// FeatureCheckpointMount, apart from StateFS so that a StateFS without the
// feature need not implement it. The host's client of every StateFS
// implements it, and the host calls it only on a StateFS that declares the
// feature.
type CheckpointMounter interface {
	// MountCheckpoint mounts the checkpoint name read-only, at a place the
	// StateFS chooses next to the live state, where nobody can write it
	// (root included: EROFS), and returns the mount. Mounting a mounted
	// checkpoint returns the same mount. It fails with CodeNotFound when
	// there is no such checkpoint.
	MountCheckpoint(ctx context.Context, h Handle, name string) (Mount, error)
	// UnmountCheckpoint undoes MountCheckpoint. Unmounting a checkpoint
	// that is not mounted succeeds; an unknown one fails with CodeNotFound.
	UnmountCheckpoint(ctx context.Context, h Handle, name string) error
}

// LeaseEventKind says what happened to a lease.
type LeaseEventKind string

// The lease event kinds.
const (
	LeaseAcquired   LeaseEventKind = "acquired"
	LeaseExtended   LeaseEventKind = "extended"
	LeaseTerminated LeaseEventKind = "terminated"
	// LeaseProgress concerns no lease: the ledger has validated up to
	// Ledger, closed at LedgerTime. It has no ID and no Cursor, and is not
	// answered. A ledger sends it only once every event of the ledgers up
	// to Ledger was sent; the core expires the leases with an
	// ExpiresLedger below it.
	LeaseProgress LeaseEventKind = "progress"
)

// LeaseEvent is one event of a ledger's lease stream.
type LeaseEvent struct {
	// ID identifies the event uniquely and for good, such as the hash of
	// the transaction that carried it. The core handles each ID once.
	ID string
	// Cursor resumes the stream just after this event.
	Cursor string
	Kind   LeaseEventKind
	// Lease identifies the lease.
	Lease string
	// Tenant is the tenant the lease is for.
	Tenant string
	// Spec is the tenant spec (HCL) carried by an acquire, decrypted.
	Spec []byte
	// ExpiresAt is when the lease ends (acquired, extended), in wall-clock
	// time: the core's expiry clock when ExpiresLedger is 0, an estimate
	// otherwise.
	ExpiresAt time.Time
	// Ledger is the ledger's own clock at this event, such as a validated
	// ledger's index: the ledger that carried a lease's event, or, for
	// LeaseProgress, the last ledger validated. 0 when the ledger keeps no
	// such clock.
	Ledger uint64
	// LedgerTime is the close time of Ledger.
	LedgerTime time.Time
	// ExpiresLedger, when not 0, is the last ledger of the lease (acquired,
	// extended): the lease expires once a LeaseProgress passes it, so
	// that its clock stops while the ledger stalls.
	ExpiresLedger uint64
}

// LeaseReply answers a lease event.
type LeaseReply struct {
	// EventID is the ID of the event answered.
	EventID string
	// IdempotencyKey identifies this reply. The core sends a reply again
	// with the same key when it cannot know whether a first attempt went
	// out (it crashed, the call failed). A plugin must answer a key it has
	// already sent without sending again, and with the same result.
	IdempotencyKey string
	Lease          string
	OK             bool
	// Message is sent to the tenant; it must hold no secrets.
	Message string
	// Payload holds details for the tenant only (such as how to reach the
	// instance). A plugin declaring FeatureEncryptedReplies encrypts it to
	// the tenant; others refuse a non-empty Payload with CodeInvalid.
	Payload []byte
}

// Ledger is a source of lease events and a sink for replies.
type Ledger interface {
	Plugin
	// Events streams lease events after cursor ("" for the start) into fn
	// until ctx is cancelled or fn fails. The engine stores each event's
	// Cursor once it has handled the event.
	Events(ctx context.Context, cursor string, fn func(LeaseEvent) error) error
	// Reply answers a lease event, at most once per IdempotencyKey.
	Reply(ctx context.Context, r LeaseReply) error
}

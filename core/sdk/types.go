package sdk

import (
	"context"
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

// Attribute declares one setting of a plugin's block in the host spec.
type Attribute struct {
	Name        string
	Type        AttrType
	Required    bool
	Description string
}

// Schema declares the settings a plugin accepts in its host-spec block.
// The core decodes the block against it with hcldec, keeping source ranges.
type Schema struct {
	Attributes []Attribute
}

// Info describes a plugin.
type Info struct {
	// Name is the plugin's name, as used in the host spec's block label.
	Name string
	// Kind is the plugin kind.
	Kind Kind
	// Version is the plugin's own version string.
	Version string
	// Schema declares the plugin's settings.
	Schema Schema
}

// Config holds a plugin's decoded settings. Values are string, float64,
// bool, []string or map[string]string, as the schema declares. Attributes
// absent from the spec are absent from the map.
type Config map[string]any

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
}

// Plugin is what every plugin kind implements.
type Plugin interface {
	// Info describes the plugin and declares its settings schema.
	Info(ctx context.Context) (Info, error)
	// Configure hands the plugin its decoded settings. It is called once,
	// before any other call but Info. An invalid setting is reported as an
	// *Error with code CodeInvalid and Attribute set to the setting's name.
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

// Cgroup is the cgroup that an instance's processes must be placed in.
type Cgroup struct {
	// Path is the cgroup's path relative to the hierarchy root,
	// such as "/kigumi/alice/web".
	Path string
	// ProcsFiles are the absolute paths of the cgroup.procs files to write a
	// process id into: one per v1 hierarchy, or one for the v2 hierarchy.
	ProcsFiles []string
}

// Resources are the limits of one instance.
type Resources struct {
	MemoryBytes int64
	// MilliCPU is CPU in thousandths of a core.
	MilliCPU  int64
	DiskBytes int64
	Pids      int64
}

// Artifact is what an instance runs: a wasm module file or a container image.
type Artifact struct {
	// Module is an absolute path to a .wasm file.
	Module string
	// Image is an OCI image reference.
	Image string
	// Digest optionally pins the artifact's content ("sha256:...").
	Digest string
}

// Permission names a capability granted to a workload. Workloads get nothing
// that is not granted.
type Permission string

// The permissions a spec can grant.
const (
	PermStateRead  Permission = "state.read"
	PermStateWrite Permission = "state.write"
	PermClock      Permission = "clock"
	PermRandom     Permission = "random"
)

// Permissions lists every permission the SDK knows.
var Permissions = []Permission{PermStateRead, PermStateWrite, PermClock, PermRandom}

// Instance identifies an instance.
type Instance struct {
	Tenant string
	Name   string
}

// String returns "tenant/name".
func (i Instance) String() string { return i.Tenant + "/" + i.Name }

// StartRequest asks a runtime to start an instance.
type StartRequest struct {
	Instance    Instance
	User        User
	Cgroup      Cgroup
	Artifact    Artifact
	Args        []string
	Env         map[string]string
	Resources   Resources
	Permissions []Permission
	// StateDir is the state mount source from the StateFS plugin; it is
	// chosen by the engine, never by the tenant. Empty means no state.
	StateDir string
	// RunDir is a root-owned directory the runtime may use for the
	// instance's logs and bookkeeping. It is removed on destroy.
	RunDir string
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

// Status is what Inspect reports of an instance.
type Status struct {
	State      State
	ExitCode   int
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

// ProvisionRequest asks a StateFS to create an instance's state.
type ProvisionRequest struct {
	Instance  Instance
	User      User
	SizeBytes int64
	// Dir is an engine-chosen directory the StateFS may keep the state in.
	Dir string
}

// Mount is a mounted state filesystem.
type Mount struct {
	// Source is the host path to hand to the runtime.
	Source string
}

// StateFS provides per-instance state filesystems.
type StateFS interface {
	Plugin
	// Provision creates an instance's state. A failed Provision leaves
	// nothing behind.
	Provision(ctx context.Context, req *ProvisionRequest) (Handle, error)
	// Mount makes the state available and returns where. Mounting a
	// mounted state returns the same mount.
	Mount(ctx context.Context, h Handle) (Mount, error)
	// Unmount releases the mount. Unmounting an unmounted state succeeds.
	Unmount(ctx context.Context, h Handle) error
	// Hash returns a digest of the state's current content.
	Hash(ctx context.Context, h Handle) ([]byte, error)
	// Recover re-attaches to a state after a restart. It is idempotent.
	Recover(ctx context.Context, h Handle) (Handle, error)
	// Deprovision unmounts and deletes an instance's state. Deprovisioning
	// deleted state succeeds.
	Deprovision(ctx context.Context, h Handle) error
}

// LeaseEventKind says what happened to a lease.
type LeaseEventKind string

// The lease event kinds.
const (
	LeaseAcquired   LeaseEventKind = "acquired"
	LeaseExtended   LeaseEventKind = "extended"
	LeaseTerminated LeaseEventKind = "terminated"
)

// LeaseEvent is one event of a ledger's lease stream.
type LeaseEvent struct {
	// Cursor resumes the stream just after this event.
	Cursor string
	Kind   LeaseEventKind
	// Lease identifies the lease.
	Lease string
	// Tenant is the tenant the lease is for.
	Tenant string
	// Spec is the tenant spec (HCL) carried by an acquire.
	Spec      []byte
	ExpiresAt time.Time
}

// LeaseReply answers a lease event.
type LeaseReply struct {
	Lease string
	OK    bool
	// Message is sent to the tenant; it must hold no secrets.
	Message string
}

// Ledger is a source of lease events and a sink for replies.
type Ledger interface {
	Plugin
	// Events streams lease events after cursor ("" for the start) into fn
	// until ctx is cancelled or fn fails. The engine stores each event's
	// Cursor once it has handled the event.
	Events(ctx context.Context, cursor string, fn func(LeaseEvent) error) error
	// Reply answers a lease event.
	Reply(ctx context.Context, r LeaseReply) error
}

package spec

import (
	"github.com/hashicorp/hcl/v2"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// Host is a decoded host spec.
type Host struct {
	// Name is the host's identity.
	Name string
	// File is the absolute path of the host spec file.
	File string
	// StateDir is the absolute path of the host's state directory.
	StateDir string
	// PluginDir is the absolute path of the third-party plugin directory.
	PluginDir string
	Capacity  Capacity
	Isolation Isolation
	// Agent holds the settings of `kigumi agent`.
	Agent Agent
	// PolicyFiles are the absolute paths of the policy files to load,
	// with directories expanded to the *.hcl files they hold, sorted.
	PolicyFiles []string
	// TenantDir is the absolute path of the directory of tenant *.hcl specs.
	TenantDir string
	// ArtifactDir is the absolute path of the directory that every module
	// must lie in (symlinks resolved), so that a tenant spec cannot name an
	// arbitrary host file. It defaults to the host spec's directory.
	ArtifactDir string
	// Plugins are the plugin blocks, in file order.
	Plugins []PluginBlock
	// DeclRange is the range of the host block's header.
	DeclRange hcl.Range
}

// Capacity is what the host offers to all tenants together.
type Capacity struct {
	MilliCPU     int64
	MemoryBytes  int64
	DiskBytes    int64
	MaxInstances int64
}

// Agent holds the settings of `kigumi agent`, from the host's agent block.
type Agent struct {
	// MetricsAddress is the loopback host:port the Prometheus metrics are
	// served on; empty when they are not served.
	MetricsAddress string
}

// Isolation holds tenant isolation settings.
type Isolation struct {
	// TenantUsers binds each tenant to its own Linux user.
	TenantUsers bool
	// UIDBase is the first uid (and gid) given to tenant users.
	UIDBase uint32
	// SubIDBase is the first subordinate id handed out to tenants.
	SubIDBase uint32
	// SubIDCount is the size of each tenant's subordinate id range.
	SubIDCount uint32
}

// PluginBlock is one plugin block of the host spec, such as
// `runtime "wasm" { ... }`. Its body is decoded later, against the schema the
// plugin declares, by DecodePluginConfig.
type PluginBlock struct {
	Kind sdk.Kind
	Name string
	Body hcl.Body
	// DeclRange is the range of the block header.
	DeclRange hcl.Range
}

// Tenant is a decoded tenant spec.
type Tenant struct {
	Name string
	// File is the absolute path of the spec file.
	File      string
	Instances []Instance
	DeclRange hcl.Range
}

// Instance is one instance of a tenant.
type Instance struct {
	Name    string
	Runtime string
	// Module is the absolute path of the wasm module, resolved against the
	// spec file's directory. Exactly one of Module, Image and Archive is
	// set.
	Module string
	Image  string
	// Archive is the absolute path of an OCI image-layout tar, resolved
	// and checked as Module is.
	Archive    string
	Digest     string
	Args       []string
	Env        map[string]string
	Resources  sdk.Resources
	StateBytes int64
	// Permissions are granted by the permissions list (names without
	// parameters) and by permission blocks (names with parameters).
	Permissions sdk.Permissions
	// Settings are the runtime-specific settings of the settings block,
	// decoded against the runtime's instance schema by
	// DecodeInstanceSettings; nil until then.
	Settings sdk.Config
	// SettingsBody is the body of the settings block; nil without one.
	SettingsBody hcl.Body
	// Restart is the restart policy (RestartOnFailure unless set).
	Restart string
	// Guest is what the workload sees of the host's files: mounts, stdin,
	// and where its state is and what fills it first (tenant.go).
	Guest
	// DeclRange is the range of the instance block header; Ranges maps
	// attribute names (such as "module" or "resources.memory") to the
	// range of their expression, "permission.NAME" to the place a
	// permission is granted, "permission.NAME.PARAM" to a parameter's
	// value, and "settings" to the settings block's header.
	DeclRange hcl.Range
	Ranges    map[string]hcl.Range
}

// The restart policies of an instance: when its workload ends, never start
// it again, start it again only if it failed (exited non-zero, was killed
// or hit a limit), or always.
const (
	RestartNever     = "never"
	RestartOnFailure = "on-failure"
	RestartAlways    = "always"
)

// RestartPolicies lists the restart policies.
var RestartPolicies = []string{RestartNever, RestartOnFailure, RestartAlways}

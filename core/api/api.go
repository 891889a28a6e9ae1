// Package api is the agent's local control API: HTTP with JSON bodies over
// a unix socket, open to root and to members of the kigumi admin group.
// Streams (logs, events) are JSON lines. The package holds the server, the
// interface of the agent it serves, and the client the CLI uses.
package api

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/state"
)

// Version is the version of the API; every path starts with /v1.
const Version = 1

// DefaultGroup is the admin group whose members may use the API.
const DefaultGroup = "kigumi"

// SocketName is the name of the agent's socket in the host's state directory.
const SocketName = "agent.sock"

// Agent is what the API serves. Its methods must honour cancellation of ctx.
type Agent interface {
	// Status reports every tenant and instance.
	Status(ctx context.Context) ([]engine.TenantStatus, error)
	// Tenants reports each tenant's source and last reconcile.
	Tenants(ctx context.Context) ([]Tenant, error)
	// Plan reports what a reconcile of every tenant would do now.
	Plan(ctx context.Context) (*plan.Plan, error)
	// Reconcile reconciles the named tenants (all when none is named) now,
	// and waits for the results.
	Reconcile(ctx context.Context, tenants ...string) ([]ReconcileResult, error)
	// Stop, Start and Restart act on one instance.
	Stop(ctx context.Context, tenant, instance string) error
	Start(ctx context.Context, tenant, instance string) error
	Restart(ctx context.Context, tenant, instance string) error
	// Logs streams an instance's output into fn.
	Logs(ctx context.Context, tenant, instance string, opts sdk.LogOptions, fn func([]byte) error) error
	// Journal returns the last n journal entries, oldest first.
	Journal(ctx context.Context, n int) ([]state.Entry, error)
	// StateHash returns the Merkle root of an instance's state.
	StateHash(ctx context.Context, tenant, instance string) ([]byte, error)
	// Checkpoint snapshots an instance's state under name.
	Checkpoint(ctx context.Context, tenant, instance, name string) (sdk.Checkpoint, error)
	// Checkpoints lists an instance's checkpoints, oldest first.
	Checkpoints(ctx context.Context, tenant, instance string) ([]sdk.Checkpoint, error)
	// Rollback returns an instance's state to a checkpoint, stopping and
	// starting a running workload around it.
	Rollback(ctx context.Context, tenant, instance, name string) error
	// MountCheckpoint mounts a checkpoint read-only next to the state.
	MountCheckpoint(ctx context.Context, tenant, instance, name string) (sdk.Mount, error)
	// UnmountCheckpoint unmounts a checkpoint.
	UnmountCheckpoint(ctx context.Context, tenant, instance, name string) error
	// Events is the bus the event stream reads.
	Events() *events.Bus
}

// Tenant is a tenant as the agent sees it.
type Tenant struct {
	Name string `json:"name"`
	// Source names the desired-state source that owns the tenant.
	Source string `json:"source"`
	// Generation is the source's generation last reconciled.
	Generation    uint64      `json:"generation"`
	Phase         state.Phase `json:"phase"`
	LastReconcile time.Time   `json:"last_reconcile,omitzero"`
	// Error is the last reconcile's error; empty when it succeeded.
	Error string `json:"error,omitempty"`
}

// ReconcileResult is the outcome of one tenant's reconcile.
type ReconcileResult struct {
	Tenant    string `json:"tenant"`
	Created   int    `json:"created"`
	Updated   int    `json:"updated"`
	Destroyed int    `json:"destroyed"`
	// Duration is in seconds.
	Duration float64 `json:"duration"`
	// Error is empty when the reconcile succeeded.
	Error string `json:"error,omitempty"`
}

// StatusReport is the answer of /v1/status and `kigumi status --json`.
type StatusReport struct {
	Host    string                `json:"host"`
	Tenants []engine.TenantStatus `json:"tenants"`
}

// VersionInfo is the answer of /v1/version and `kigumi version --json`.
type VersionInfo struct {
	// Version is kigumi's version.
	Version string `json:"version"`
	// API is the control API's version.
	API int `json:"api"`
	// EventSchema is events.SchemaVersion.
	EventSchema int `json:"event_schema"`
}

// JournalEntry is a journal entry on the wire.
type JournalEntry struct {
	Seq    uint64      `json:"seq"`
	Time   time.Time   `json:"time"`
	Target string      `json:"target"`
	Step   string      `json:"step"`
	Event  state.Event `json:"event"`
	Error  string      `json:"error,omitempty"`
}

// StateHash is the answer of GET /v1/instances/{tenant}/{instance}/state
// and `kigumi state hash --json`.
type StateHash struct {
	Tenant   string `json:"tenant"`
	Instance string `json:"instance"`
	// Root is the Merkle root of the state, in hex.
	Root string `json:"root"`
}

// Checkpoint is a checkpoint on the wire.
type Checkpoint struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// Root is the Merkle root of the state when the checkpoint was made,
	// in hex.
	Root   string `json:"root"`
	Bytes  int64  `json:"bytes"`
	Inodes int64  `json:"inodes"`
	// Mount is where the checkpoint is mounted read-only, if it is.
	Mount string `json:"mount,omitempty"`
}

// Checkpoints converts checkpoints for the wire.
func Checkpoints(in []sdk.Checkpoint) []Checkpoint {
	out := make([]Checkpoint, len(in))
	for i, c := range in {
		out[i] = Checkpoint{Name: c.Name, CreatedAt: c.CreatedAt, Root: hex.EncodeToString(c.Root), Bytes: c.Bytes, Inodes: c.Inodes, Mount: c.Mount}
	}
	return out
}

// CheckpointList is the answer of GET .../checkpoints and `kigumi state
// checkpoints --json`.
type CheckpointList struct {
	Checkpoints []Checkpoint `json:"checkpoints"`
}

// CheckpointRequest is the body of POST .../checkpoints.
type CheckpointRequest struct {
	Name string `json:"name"`
}

// CheckpointMount is the answer of POST .../checkpoints/{name}/mount and
// `kigumi state mount --json`.
type CheckpointMount struct {
	Checkpoint string `json:"checkpoint"`
	// Path is where the checkpoint is mounted, read-only.
	Path     string   `json:"path"`
	ReadOnly bool     `json:"read_only"`
	Options  []string `json:"options,omitempty"`
}

// JournalEntries converts journal entries for the wire.
func JournalEntries(in []state.Entry) []JournalEntry {
	out := make([]JournalEntry, len(in))
	for i, e := range in {
		out[i] = JournalEntry{Seq: e.Seq, Time: e.Time, Target: e.Target, Step: e.Step, Event: e.Event, Error: e.Error}
	}
	return out
}

// Sentinel errors. The server maps them (and the engine's, state's and
// SDK's equivalents) to HTTP statuses; the client maps the statuses back,
// so errors.Is works on both sides.
var (
	ErrNotFound  = errors.New("not found")
	ErrInvalid   = errors.New("invalid request")
	ErrBusy      = errors.New("busy")
	ErrForbidden = errors.New("forbidden")
	// ErrNoAgent is returned by Dial when no agent listens on the socket.
	ErrNoAgent = errors.New("no agent is running")
)

// Code names an error class on the wire.
type Code string

// The error codes.
const (
	CodeNotFound  Code = "not_found"
	CodeInvalid   Code = "invalid"
	CodeBusy      Code = "busy"
	CodeForbidden Code = "forbidden"
	CodeCanceled  Code = "canceled"
	CodeInternal  Code = "internal"
)

var codes = []struct {
	code     Code
	status   int
	sentinel error
}{
	{CodeNotFound, http.StatusNotFound, ErrNotFound},
	{CodeInvalid, http.StatusBadRequest, ErrInvalid},
	{CodeBusy, http.StatusConflict, ErrBusy},
	{CodeForbidden, http.StatusForbidden, ErrForbidden},
	{CodeCanceled, 499, context.Canceled},
	{CodeInternal, http.StatusInternalServerError, nil},
}

// Error is an error the API returned.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

// Error implements error.
func (e *Error) Error() string { return e.Message }

// Is reports whether target is the sentinel of e's code.
func (e *Error) Is(target error) bool {
	for _, c := range codes {
		if c.code == e.Code {
			return c.sentinel != nil && target == c.sentinel
		}
	}
	return false
}

// classify returns the code and HTTP status for err.
func classify(err error) (Code, int) {
	var ae *Error
	switch {
	case errors.As(err, &ae):
		for _, c := range codes {
			if c.code == ae.Code {
				return c.code, c.status
			}
		}
	case errors.Is(err, ErrNotFound), errors.Is(err, engine.ErrUnknownTenant),
		errors.Is(err, engine.ErrUnknownInstance), errors.Is(err, sdk.ErrNotFound):
		return CodeNotFound, http.StatusNotFound
	case errors.Is(err, ErrInvalid), errors.Is(err, sdk.ErrInvalid), errors.Is(err, engine.ErrNoState), errors.Is(err, sdk.ErrUnsupported):
		return CodeInvalid, http.StatusBadRequest
	case errors.Is(err, ErrBusy), errors.Is(err, state.ErrLocked):
		return CodeBusy, http.StatusConflict
	case errors.Is(err, ErrForbidden):
		return CodeForbidden, http.StatusForbidden
	case errors.Is(err, context.Canceled):
		return CodeCanceled, 499
	}
	return CodeInternal, http.StatusInternalServerError
}

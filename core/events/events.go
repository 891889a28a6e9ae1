// Package events defines Kigumi's event stream: versioned records of what
// the engine and the agent do, shared by `kigumi apply -json`, the agent's
// control API and its metrics, and a bus that fans them out without letting
// a slow reader slow the engine.
package events

import (
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// SchemaVersion is the version of the Event JSON schema. Readers must ignore
// fields they do not know; a change that removes or redefines a field raises
// the version.
const SchemaVersion = 1

// Type says what an event reports.
type Type string

// The event types.
const (
	// TypeVersion opens every stream; Message holds the kigumi version.
	TypeVersion Type = "version"
	// TypeDiagnostics reports spec or policy diagnostics of a source or tenant.
	TypeDiagnostics Type = "diagnostics"
	// TypePlan reports a planned change: Op and Changes.
	TypePlan Type = "plan"
	// TypeActionBegin, TypeActionDone and TypeActionFailed frame one action.
	TypeActionBegin  Type = "action_begin"
	TypeActionDone   Type = "action_done"
	TypeActionFailed Type = "action_failed"
	// TypeReconcile reports the end of one tenant's reconcile.
	TypeReconcile Type = "reconcile"
	// TypeInstanceExited reports that an instance's workload ended.
	TypeInstanceExited Type = "instance_exited"
	// TypeInstanceRestart reports an instance restarted by its policy.
	TypeInstanceRestart Type = "instance_restart"
	// TypePluginRestart reports a plugin process relaunched after it died.
	TypePluginRestart Type = "plugin_restart"
	// TypePolicyDenied reports a policy denial.
	TypePolicyDenied Type = "policy_denied"
	// TypeApplySummary ends the stream of `kigumi apply -json`: Message
	// sums up what was done, Error says why the apply failed.
	TypeApplySummary Type = "apply_summary"
)

// Event is one record of the stream.
type Event struct {
	// Version is SchemaVersion.
	Version int `json:"v"`
	// Seq orders the events of one bus; it starts at 1.
	Seq  uint64    `json:"seq,omitempty"`
	Time time.Time `json:"time"`
	Type Type      `json:"type"`
	// Source names the desired-state source involved, such as
	// "file:tenants/alice.hcl".
	Source string `json:"source,omitempty"`
	// Generation is the source's generation of the desired state acted on.
	Generation uint64 `json:"generation,omitempty"`
	Tenant     string `json:"tenant,omitempty"`
	Instance   string `json:"instance,omitempty"`
	// Op is the action's operation (create, update, destroy, ...).
	Op string `json:"op,omitempty"`
	// Cause says why something happened: an exit cause, a restart reason.
	Cause   string   `json:"cause,omitempty"`
	Message string   `json:"message,omitempty"`
	Error   string   `json:"error,omitempty"`
	Changes []Change `json:"changes,omitempty"`
	// Duration is how long the action or reconcile took, in seconds.
	Duration    float64      `json:"duration,omitempty"`
	Diagnostics []Diagnostic `json:"diagnostics,omitempty"`
}

// Change is one changed attribute of a planned update.
type Change struct {
	Attribute string `json:"attribute"`
	Old       string `json:"old,omitempty"`
	New       string `json:"new,omitempty"`
}

// Diagnostic is an HCL diagnostic in the stream, with its source range.
type Diagnostic struct {
	Severity string `json:"severity"`
	Summary  string `json:"summary"`
	Detail   string `json:"detail,omitempty"`
	Range    *Range `json:"range,omitempty"`
}

// Range is a span of a source file.
type Range struct {
	Filename string `json:"filename"`
	Start    Pos    `json:"start"`
	End      Pos    `json:"end"`
}

// Pos is a position in a source file; Line and Column start at 1, Byte at 0.
type Pos struct {
	Line   int `json:"line"`
	Column int `json:"column"`
	Byte   int `json:"byte"`
}

// Diagnostics converts HCL diagnostics for the stream.
func Diagnostics(diags hcl.Diagnostics) []Diagnostic {
	out := make([]Diagnostic, 0, len(diags))
	for _, d := range diags {
		sev := "error"
		if d.Severity == hcl.DiagWarning {
			sev = "warning"
		}
		e := Diagnostic{Severity: sev, Summary: d.Summary, Detail: d.Detail}
		if d.Subject != nil {
			r := d.Subject
			e.Range = &Range{Filename: r.Filename,
				Start: Pos{Line: r.Start.Line, Column: r.Start.Column, Byte: r.Start.Byte},
				End:   Pos{Line: r.End.Line, Column: r.End.Column, Byte: r.End.Byte}}
		}
		out = append(out, e)
	}
	return out
}

// Bus fans events out to subscribers. Publish never blocks: a subscriber
// whose buffer is full loses the event, and its Dropped count says how many
// it lost. It is safe for concurrent use.
type Bus struct {
	mu      sync.Mutex
	seq     uint64
	dropped uint64
	subs    map[*Subscription]struct{}
	closed  bool
}

// Dropped returns how many events all subscribers together lost to full
// buffers, since the bus was made.
func (b *Bus) Dropped() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}

// NewBus returns an empty bus.
func NewBus() *Bus { return &Bus{subs: map[*Subscription]struct{}{}} }

// Subscription is one reader of a bus.
type Subscription struct {
	bus     *Bus
	c       chan Event
	dropped uint64
}

// C returns the channel events arrive on. It is closed by Close, or when
// the bus closes.
func (s *Subscription) C() <-chan Event { return s.c }

// Dropped returns how many events this subscriber lost to a full buffer.
func (s *Subscription) Dropped() uint64 {
	s.bus.mu.Lock()
	defer s.bus.mu.Unlock()
	return s.dropped
}

// Close ends the subscription and closes its channel. Closing twice is safe.
func (s *Subscription) Close() {
	b := s.bus
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.subs[s]; ok {
		delete(b.subs, s)
		close(s.c)
	}
}

// Subscribe returns a subscription buffering up to buf events (at least 1).
func (b *Bus) Subscribe(buf int) *Subscription {
	s := &Subscription{bus: b, c: make(chan Event, max(buf, 1))}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		close(s.c)
		return s
	}
	b.subs[s] = struct{}{}
	return s
}

// Publish stamps e with the schema version, a sequence number and, if it
// has none, the time, and hands it to every subscriber. It returns the
// stamped event.
func (b *Bus) Publish(e Event) Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	e.Version, e.Seq = SchemaVersion, b.seq
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if b.closed {
		return e
	}
	for s := range b.subs {
		select {
		case s.c <- e:
		default:
			s.dropped++
			b.dropped++
		}
	}
	return e
}

// Close closes every subscription; later events go nowhere.
func (b *Bus) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	for s := range b.subs {
		delete(b.subs, s)
		close(s.c)
	}
}

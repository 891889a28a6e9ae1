package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
)

// Leases are a source of desired state next to the spec directory: each
// ledger plugin the host spec declares streams lease events, and each
// accepted acquire makes one tenant, owned by "lease:" and the lease's ID.
//
// Events are handled one at a time, in stream order. An event is handled
// once its outcome is recorded (the lease record, with the reply decided)
// and the reply was sent; only then is the stream's cursor stored. An
// agent that stops in between sees the event again at its next start, and
// answers it from the record: the same reply under the same idempotency
// key, which the plugin sends at most once, and no second provisioning.
//
// Expiry follows the ledger's own clock when the plugin keeps one: a lease
// with an ExpiresLedger expires when a progress event of its ledger passes
// it, so that the clock stops while the ledger stalls, and a resumed
// ledger expires it at the right ledger. A lease without one (a ledger
// without a clock) expires on a timer at its ExpiresAt, in wall-clock
// time.

// leaseBackoff bounds the delay before following a ledger's events again,
// after the stream ended with an error.
var leaseBackoff = Backoff{Base: 200 * time.Millisecond, Max: 30 * time.Second}

// ledgerCursor is the name a ledger's cursor is stored under.
func ledgerCursor(ledger string) string { return "ledger:" + ledger }

// leaseSource is the owner of a lease's tenant.
func leaseSource(id string) string { return state.SourceLease + ":" + id }

// replyKey is the idempotency key of the reply to event id: the same for
// every attempt, across restarts.
func replyKey(id string) string { return "kigumi-reply:" + id }

// leases are the agent's lease state: the expiry timers, each ledger's
// clock, and a lock that serializes every change of a lease.
type leases struct {
	mu     sync.Mutex
	timers map[string]*time.Timer // by lease ID
	// clock is the last ledger each ledger plugin's progress announced, by
	// plugin name; it starts again at each start of the agent.
	clock map[string]uint64
}

// ledgers returns the names of the ledger plugins of the host spec.
func (a *Agent) ledgers() []string {
	var names []string
	for _, b := range a.cfg.Host.Plugins {
		if b.Kind == sdk.KindLedger {
			names = append(names, b.Name)
		}
	}
	return names
}

// restoreLeases sets the desired state of the recorded leases' tenants at
// start: those answered with success as their spec says, those ended (or
// expired since) destroyed. A lease never answered is left to its acquire,
// which the ledger streams again.
func (a *Agent) restoreLeases(ctx context.Context) error {
	ls, err := a.cfg.Store.Leases()
	if err != nil {
		return err
	}
	a.leases.mu.Lock()
	defer a.leases.mu.Unlock()
	for _, l := range ls {
		switch {
		case l.Ended:
			a.endLease(ctx, l)
		case l.Reply == nil:
		case !l.Reply.OK:
			// Refused: its tenant, if any was started, goes.
			a.endLease(ctx, l)
		default:
			t, d, _, err := a.leaseDesired(ctx, l)
			if err != nil {
				a.cfg.Log.Error("restore a lease: its tenant is left as it runs until the lease ends",
					"lease", l.ID, "tenant", l.Tenant, "error", err)
			} else {
				a.want(l.Tenant, leaseSource(l.ID), 0, d, t, nil, false)
			}
			a.armExpiry(ctx, l)
		}
	}
	return nil
}

// runLedger follows the lease events of ledger plugin name until ctx ends,
// from the stored cursor, and follows them again after the stream fails
// (the plugin restarted, its connection failed, an event could not be
// handled), with backoff.
func (a *Agent) runLedger(ctx context.Context, name string) {
	failures := 0
	for {
		err := a.followLedger(ctx, name, func() { failures = 0 })
		if ctx.Err() != nil {
			return
		}
		failures++
		delay := leaseBackoff.next(failures)
		a.cfg.Log.Warn("lease events ended; following again", "ledger", name, "error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// followLedger streams ledger name's events from the stored cursor until
// the stream ends, storing the cursor after each event handled; handled is
// called after each.
func (a *Agent) followLedger(ctx context.Context, name string, handled func()) error {
	cursor, err := a.cfg.Store.Cursor(ledgerCursor(name))
	if err != nil {
		return err
	}
	l, err := a.ledger(ctx, name)
	if err != nil {
		return err
	}
	return l.Events(ctx, cursor, func(ev sdk.LeaseEvent) error {
		if err := a.HandleLease(ctx, name, l, ev); err != nil {
			return err
		}
		if ev.Cursor == "" {
			return nil // progress: no position in the stream
		}
		if err := a.cfg.Store.PutCursor(ledgerCursor(name), ev.Cursor); err != nil {
			return err
		}
		handled()
		return nil
	})
}

// ledger returns the client of ledger plugin name.
func (a *Agent) ledger(ctx context.Context, name string) (Ledger, error) {
	if a.cfg.Ledger != nil {
		return a.cfg.Ledger(ctx, name)
	}
	return a.cfg.Engine.Ledger(ctx, name)
}

// Ledger is what the agent uses of a ledger plugin (sdk.Ledger).
type Ledger interface {
	Events(ctx context.Context, cursor string, fn func(sdk.LeaseEvent) error) error
	Reply(ctx context.Context, r sdk.LeaseReply) error
}

// HandleLease handles one lease event of ledger plugin name, l: it returns
// once the event's outcome is recorded and its reply sent, or an error
// when the event must be handled again (the reply could not be sent, ctx
// ended). A refused request is no error: it is answered with an error
// reply.
func (a *Agent) HandleLease(ctx context.Context, name string, l Ledger, ev sdk.LeaseEvent) error {
	a.leases.mu.Lock()
	defer a.leases.mu.Unlock()
	if ev.Kind == sdk.LeaseProgress {
		return a.progress(ctx, name, ev.Ledger)
	}
	log := a.cfg.Log.With("ledger", name, "event", ev.ID, "lease", ev.Lease, "tenant", ev.Tenant)
	if ev.ID == "" || ev.Lease == "" {
		log.Warn("ignoring a lease event without an ID or a lease")
		return nil
	}
	rec, found, err := a.lease(ev.Lease)
	if err != nil {
		return err
	}
	var reply state.LeaseReply
	switch ev.Kind {
	case sdk.LeaseAcquired:
		if found && rec.Event == ev.ID && rec.Reply != nil {
			reply = *rec.Reply // answered before: answer the same again
			break
		}
		if found && rec.Event != ev.ID {
			// The lease was acquired before: again only once that ended
			// and its tenant is gone, so that nothing of it is handed on.
			owns, err := a.ownsTenant(ctx, rec)
			if err != nil {
				return err
			}
			if !rec.Ended || owns {
				reply = state.LeaseReply{Message: "the lease is still held, or its last tenant is still being removed"}
				break
			}
		}
		rec = state.Lease{ID: ev.Lease, Ledger: name, Tenant: ev.Tenant, Event: ev.ID, Spec: ev.Spec,
			ExpiresAt: ev.ExpiresAt, ExpiresLedger: ev.ExpiresLedger}
		if reply, err = a.acquire(ctx, rec, log); err != nil {
			return err
		}
	case sdk.LeaseExtended:
		switch {
		case !found || rec.Ended || rec.Reply == nil || !rec.Reply.OK:
			reply = state.LeaseReply{Message: "no running lease " + ev.Lease}
		default:
			rec.ExpiresAt, rec.ExpiresLedger = ev.ExpiresAt, ev.ExpiresLedger
			if err := a.cfg.Store.PutLease(rec); err != nil {
				return err
			}
			reply = state.LeaseReply{OK: true, Message: "extended until " + ev.ExpiresAt.UTC().Format(time.RFC3339)}
			if ev.ExpiresLedger != 0 {
				reply.Message = fmt.Sprintf("extended to ledger %d (about %s)", ev.ExpiresLedger, ev.ExpiresAt.UTC().Format(time.RFC3339))
			}
			a.armExpiry(ctx, rec)
		}
	case sdk.LeaseTerminated:
		if !found {
			// Ended and removed already (this is a replay), or never held.
			reply = state.LeaseReply{OK: true, Message: "terminated"}
			break
		}
		rec.Ended, rec.Spec = true, nil
		if err := a.cfg.Store.PutLease(rec); err != nil {
			return err
		}
		a.endLease(ctx, rec)
		reply = state.LeaseReply{OK: true, Message: "terminated"}
	default:
		log.Info("ignoring a lease event of an unknown kind", "kind", ev.Kind)
		return nil
	}
	r := sdk.LeaseReply{EventID: ev.ID, IdempotencyKey: replyKey(ev.ID), Lease: ev.Lease,
		OK: reply.OK, Message: reply.Message, Payload: reply.Payload}
	if err := l.Reply(ctx, r); err != nil {
		return fmt.Errorf("reply to event %s: %w", ev.ID, err)
	}
	log.Info("answered a lease event", "kind", ev.Kind, "ok", reply.OK, "message", reply.Message)
	return nil
}

// lease returns the record of lease id.
func (a *Agent) lease(id string) (state.Lease, bool, error) { return a.cfg.Store.Lease(id) }

// ownsTenant reports whether lease l's tenant exists (recorded, or being
// made) as the lease's.
func (a *Agent) ownsTenant(ctx context.Context, l state.Lease) (bool, error) {
	owners, err := a.cfg.Engine.Owners(ctx)
	if err != nil {
		return false, err
	}
	a.mu.Lock()
	r, running := a.runners[l.Tenant]
	mine := running && r.source == leaseSource(l.ID)
	a.mu.Unlock()
	return mine || owners[l.Tenant] == leaseSource(l.ID), nil
}

// acquire decides an acquire, rec: it checks the request, records the
// lease, provisions its tenant and waits for it, and records the reply,
// which it returns. A refused or failed request is an error reply, its
// tenant destroyed; the error is for what must be tried again.
func (a *Agent) acquire(ctx context.Context, rec state.Lease, log interface {
	Warn(string, ...any)
}) (state.LeaseReply, error) {
	decide := func(reply state.LeaseReply) (state.LeaseReply, error) {
		rec.Reply = &reply
		if !reply.OK {
			rec.Ended, rec.Spec = true, nil
		}
		if err := a.cfg.Store.PutLease(rec); err != nil {
			return reply, err
		}
		if !reply.OK {
			log.Warn("refusing a lease request", "reason", reply.Message)
			a.endLease(ctx, rec)
		}
		return reply, nil
	}
	t, d, diags, err := a.leaseDesired(ctx, rec)
	if err != nil {
		return state.LeaseReply{}, err
	}
	if diags.HasErrors() {
		return decide(state.LeaseReply{Message: "the request is invalid: " + summary(diags)})
	}
	owners, err := a.cfg.Engine.Owners(ctx)
	if err != nil {
		return state.LeaseReply{}, err
	}
	a.mu.Lock()
	r, running := a.runners[rec.Tenant]
	if running && r.source != "" {
		owners[rec.Tenant] = r.source
	}
	a.mu.Unlock()
	if owner, ok := owners[rec.Tenant]; ok && owner != leaseSource(rec.ID) {
		// Refused without recording: the lease never owned the tenant.
		reply := state.LeaseReply{Message: fmt.Sprintf("tenant %q exists already", rec.Tenant)}
		rec.Reply, rec.Ended, rec.Spec = &reply, true, nil
		log.Warn("refusing a lease request", "reason", reply.Message)
		return reply, a.cfg.Store.PutLease(rec)
	}
	if denied, err := a.leasePolicies(ctx, t); err != nil {
		return state.LeaseReply{}, err
	} else if denied != "" {
		return decide(state.LeaseReply{Message: "the request is denied by the host's policies: " + denied})
	}
	// The lease is recorded before its tenant is made: an agent that
	// stops now finds it at its next start, and the acquire again.
	if err := a.cfg.Store.PutLease(rec); err != nil {
		return state.LeaseReply{}, err
	}
	a.want(rec.Tenant, leaseSource(rec.ID), 0, d, t, nil, false)
	res, err := a.Reconcile(ctx, rec.Tenant)
	if err != nil {
		return state.LeaseReply{}, err
	}
	if res[0].Err != nil {
		log.Warn("provisioning a lease's tenant failed", "error", res[0].Err)
		return decide(state.LeaseReply{Message: "the host could not provision the instances"})
	}
	payload, err := json.Marshal(leaseDetails(a.cfg.Host.Name, t))
	if err != nil {
		return state.LeaseReply{}, err
	}
	reply, err := decide(state.LeaseReply{OK: true, Message: fmt.Sprintf("tenant %s is running", rec.Tenant), Payload: payload})
	if err == nil {
		a.armExpiry(ctx, rec)
	}
	return reply, err
}

// LeaseDetails is the payload of a successful acquire's reply: how the
// tenant finds what it got.
type LeaseDetails struct {
	Host      string   `json:"host"`
	Tenant    string   `json:"tenant"`
	Instances []string `json:"instances"`
}

func leaseDetails(host string, t *spec.Tenant) LeaseDetails {
	d := LeaseDetails{Host: host, Tenant: t.Name, Instances: []string{}}
	for _, in := range t.Instances {
		d.Instances = append(d.Instances, in.Name)
	}
	return d
}

// LeaseSpecFile is the file name a lease's spec is decoded under: in the
// host's artifacts directory, so that its modules are named relative to
// that directory.
func LeaseSpecFile(h *spec.Host, lease string) string {
	return filepath.Join(h.ArtifactDir, "lease-"+lease+".hcl")
}

// leaseDesired decodes and checks a lease's spec as a file spec is (size,
// nesting and token limits, decoding, the host's checks, the plugins'),
// and requires it to declare exactly the lease's tenant. It returns the
// tenant and its desired state, or diagnostics for a refused spec; the
// error is for what must be tried again.
func (a *Agent) leaseDesired(ctx context.Context, l state.Lease) (*spec.Tenant, *plan.Tenant, hcl.Diagnostics, error) {
	if len(l.Spec) > spec.MaxFileSize {
		return nil, nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Spec too large",
			Detail: fmt.Sprintf("The request's spec is %d bytes; the limit is %d.", len(l.Spec), spec.MaxFileSize)}}, nil
	}
	file := LeaseSpecFile(a.cfg.Host, l.ID)
	tenants, diags := spec.NewParser().ParseTenant(file, l.Spec)
	if diags.HasErrors() {
		return nil, nil, diags, nil
	}
	if len(tenants) != 1 || tenants[0].Name != l.Tenant {
		names := make([]string, len(tenants))
		for i, t := range tenants {
			names[i] = fmt.Sprintf("%q", t.Name)
		}
		return nil, nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Wrong tenant",
			Detail: fmt.Sprintf("The request must declare exactly tenant %q, the lease's; it declares %s.", l.Tenant, strings.Join(names, ", "))}}, nil
	}
	checked, diags := spec.CheckTenants(a.cfg.Host, tenants)
	if diags.HasErrors() {
		return nil, nil, diags, nil
	}
	ds, err := a.cfg.Engine.CheckTenants(ctx, checked)
	if err != nil {
		return nil, nil, nil, err
	}
	if ds.HasErrors() {
		return nil, nil, ds, nil
	}
	d, err := engine.Desired(a.cfg.Host, checked)
	if err != nil {
		return nil, nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot use the spec", Detail: err.Error()}}, nil
	}
	d[0].Source = leaseSource(l.ID)
	return checked[0], &d[0], nil, nil
}

// leasePolicies evaluates the host's policies over every desired tenant
// with t, so that host totals hold, and returns the denials that concern t,
// as a message for the tenant: each policy's name and message, without the
// host's file paths. It is empty when the policies allow t.
func (a *Agent) leasePolicies(ctx context.Context, t *spec.Tenant) (string, error) {
	if a.cfg.Policies == nil {
		return "", nil
	}
	all := []*spec.Tenant{t}
	a.mu.Lock()
	for n, r := range a.runners {
		if n != t.Name && r.spec != nil && r.desired != nil {
			all = append(all, r.spec)
		}
	}
	a.mu.Unlock()
	rep, err := a.cfg.Policies.Evaluate(ctx, a.cfg.Host, all)
	if err != nil {
		return "", err
	}
	var denials []string
	for _, res := range rep.Results {
		if res.Denies() && (res.Tenant == "" || res.Tenant == t.Name) {
			denials = append(denials, fmt.Sprintf("policy %q: %s", res.Policy, res.Message))
		}
	}
	return bounded(strings.Join(denials, "; ")), nil
}

// bounded cuts a reply message to maxReplyMessage bytes.
func bounded(s string) string {
	if len(s) > maxReplyMessage {
		return s[:maxReplyMessage] + "..."
	}
	return s
}

// maxReplyMessage bounds the message of a refusal, which goes into a memo.
const maxReplyMessage = 512

// summary renders diagnostics for a reply: summaries and details, without
// source snippets, bounded.
func summary(diags hcl.Diagnostics) string {
	var b strings.Builder
	for i, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(d.Summary)
		if d.Detail != "" {
			b.WriteString(": " + d.Detail)
		}
		if b.Len() > maxReplyMessage {
			break
		}
	}
	return bounded(b.String())
}

// armExpiry sets the expiry of lease l: for a lease on its ledger's
// clock, it expires l at once if the ledger has passed its last ledger
// (progress expires it otherwise); for another, it sets a timer on its
// ExpiresAt.
func (a *Agent) armExpiry(ctx context.Context, l state.Lease) {
	if t := a.leases.timers[l.ID]; t != nil {
		t.Stop()
		delete(a.leases.timers, l.ID)
	}
	if l.ExpiresLedger != 0 {
		if a.leases.clock[l.Ledger] > l.ExpiresLedger {
			a.expire(ctx, l)
		}
		return
	}
	a.leases.timers[l.ID] = time.AfterFunc(time.Until(l.ExpiresAt), func() {
		a.leases.mu.Lock()
		defer a.leases.mu.Unlock()
		rec, found, err := a.lease(l.ID)
		if err != nil || !found || rec.Event != l.Event || rec.Ended || rec.ExpiresLedger != 0 || time.Now().Before(rec.ExpiresAt) {
			return // gone, replaced, ended or extended meanwhile
		}
		a.expire(ctx, rec)
	})
}

// progress advances ledger name's clock to ledger and expires each of its
// running leases whose last ledger it passed.
func (a *Agent) progress(ctx context.Context, name string, ledger uint64) error {
	if a.leases.clock == nil {
		a.leases.clock = map[string]uint64{}
	}
	if ledger <= a.leases.clock[name] {
		return nil
	}
	a.leases.clock[name] = ledger
	ls, err := a.cfg.Store.Leases()
	if err != nil {
		return err
	}
	for _, l := range ls {
		if l.Ledger == name && !l.Ended && l.Reply != nil && l.Reply.OK && l.ExpiresLedger != 0 && l.ExpiresLedger < ledger {
			a.expire(ctx, l)
		}
	}
	return nil
}

// expire ends lease l, which expired: it records it ended and destroys its
// tenant.
func (a *Agent) expire(ctx context.Context, l state.Lease) {
	a.cfg.Log.Info("lease expired", "lease", l.ID, "tenant", l.Tenant, "ledger", l.Ledger, "last_ledger", l.ExpiresLedger)
	l.Ended, l.Spec = true, nil
	if err := a.cfg.Store.PutLease(l); err != nil {
		a.cfg.Log.Error("record an expired lease", "lease", l.ID, "error", err)
	}
	a.endLease(ctx, l)
}

// endLease destroys the tenant of lease l, an ended lease, if the lease
// made one. It returns at once; the destruction is retried with backoff.
// The record stays, ended and without its spec, so that a replayed event
// of the lease is answered from it.
func (a *Agent) endLease(ctx context.Context, l state.Lease) {
	if t := a.leases.timers[l.ID]; t != nil {
		t.Stop()
		delete(a.leases.timers, l.ID)
	}
	owns, err := a.ownsTenant(ctx, l)
	if err != nil {
		a.cfg.Log.Error("end a lease", "lease", l.ID, "error", err)
		return
	}
	if owns {
		a.want(l.Tenant, leaseSource(l.ID), 0, nil, nil, nil, false)
	}
}

// stopLeases stops the expiry timers.
func (a *Agent) stopLeases() {
	a.leases.mu.Lock()
	defer a.leases.mu.Unlock()
	for id, t := range a.leases.timers {
		t.Stop()
		delete(a.leases.timers, id)
	}
}

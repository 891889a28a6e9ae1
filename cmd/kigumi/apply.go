package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/kigumi/kigumi/core/api"
	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/plan"
)

// apply runs `kigumi apply`: through the agent when one runs, otherwise
// here. A plan that must be confirmed is made without writing anything:
// only a "yes" opens the host for writing.
func apply(ctx context.Context, c *cli) int {
	if c.jsonOut && !c.autoApprove {
		c.errorf("apply -json prints no prompt: pass --auto-approve as well")
		return exitInvalid
	}
	client, _, ok := c.agent(ctx)
	if !ok {
		return exitFailed
	}
	if client != nil {
		defer client.Close()
		if c.jsonOut {
			return applyAgentJSON(ctx, c, client)
		}
		return applyAgent(ctx, c, client)
	}
	if c.jsonOut {
		return applyJSON(ctx, c)
	}
	if c.autoApprove {
		s, p, code := planFromSpecs(ctx, c, storeWrite)
		defer s.close()
		if code != exitOK {
			return code
		}
		if err := p.Render(c.stdout); err != nil {
			return s.fail(err)
		}
		if p.Empty() {
			return exitOK
		}
		return execute(ctx, s, p)
	}
	shown, code := readOnlyPlan(ctx, c)
	if code != exitOK || shown.Empty() {
		return code
	}
	if code, ok := confirmPlan(ctx, c, "Apply these actions?"); !ok {
		return code
	}
	s, p, code := planFromSpecs(ctx, c, storeWrite)
	defer s.close()
	if code != exitOK {
		return code
	}
	if !samePlan(shown, p) {
		c.errorf("the specs or the host changed since the plan was shown, and nothing was applied: run apply again to see the new plan")
		return exitInvalid
	}
	return execute(ctx, s, p)
}

// readOnlyPlan plans and prints the plan without writing anything.
func readOnlyPlan(ctx context.Context, c *cli) (*plan.Plan, int) {
	s, p, code := planFromSpecs(ctx, c, storePlan)
	defer s.close()
	if code != exitOK {
		return nil, code
	}
	if err := p.Render(c.stdout); err != nil {
		return nil, s.fail(err)
	}
	return p, exitOK
}

func samePlan(a, b *plan.Plan) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// applyAgent shows the agent's plan, asks, then has the agent reconcile now.
func applyAgent(ctx context.Context, c *cli, client *api.Client) int {
	p, err := client.Plan(ctx)
	if err != nil {
		return c.agentFail(err)
	}
	if err := p.Render(c.stdout); err != nil {
		c.errorf("%v", err)
		return exitFailed
	}
	if p.Empty() {
		return exitOK
	}
	if !c.autoApprove {
		if code, ok := confirmPlan(ctx, c, "Ask the agent to apply these actions now?"); !ok {
			return code
		}
	}
	fmt.Fprintln(c.stdout)
	results, err := client.Reconcile(ctx)
	if err != nil {
		return c.agentFail(err)
	}
	code := exitOK
	var created, updated, destroyed int
	for _, r := range results {
		created, updated, destroyed = created+r.Created, updated+r.Updated, destroyed+r.Destroyed
		if r.Error != "" {
			c.errorf("tenant %s: %s", r.Tenant, r.Error)
			code = exitFailed
		}
	}
	fmt.Fprintf(c.stdout, "\nApply complete: %d created, %d updated, %d destroyed, %d tenants reconciled.\n",
		created, updated, destroyed, len(results))
	return code
}

// jsonLines writes events as JSON lines.
type jsonLines struct {
	mu  sync.Mutex
	enc *json.Encoder
	seq uint64
}

func (j *jsonLines) emit(e events.Event) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if e.Version == 0 {
		j.seq++
		e.Version, e.Seq = events.SchemaVersion, j.seq
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	_ = j.enc.Encode(e)
}

// applyJSON applies here, reporting as JSON lines.
func applyJSON(ctx context.Context, c *cli) int {
	return executeJSON(ctx, c, func() (*session, *plan.Plan, int) { return planFromSpecs(ctx, c, storeWrite) },
		"the specs, policies or plugins are invalid, or the host cannot be read: nothing was applied")
}

// executeJSON makes a plan with makePlan and carries it out, reporting as
// JSON lines: the version, any diagnostics, a plan event per action, the
// failed action if one fails, and a summary. refused is the summary's error
// when no plan could be made.
func executeJSON(ctx context.Context, c *cli, makePlan func() (*session, *plan.Plan, int), refused string) int {
	out := &jsonLines{enc: json.NewEncoder(c.stdout)}
	out.emit(events.Event{Type: events.TypeVersion, Message: version})
	// Human output goes nowhere; diagnostics become an event.
	c.stdout = io.Discard
	var diags hcl.Diagnostics
	c.collected = &diags
	s, p, code := makePlan()
	defer s.close()
	if len(diags) > 0 {
		out.emit(events.Event{Type: events.TypeDiagnostics, Diagnostics: events.Diagnostics(diags)})
	}
	if code != exitOK {
		out.emit(events.Event{Type: events.TypeApplySummary, Error: refused})
		return code
	}
	for _, a := range p.Actions {
		out.emit(planEvent(a))
	}
	err := s.engine.Apply(ctx, p)
	if err != nil {
		var ae *engine.ActionError
		if errors.As(err, &ae) {
			fe := planEvent(ae.Action)
			fe.Type, fe.Changes, fe.Error = events.TypeActionFailed, nil, ae.Err.Error()
			out.emit(fe)
		}
		out.emit(events.Event{Type: events.TypeApplySummary, Error: err.Error()})
		c.errorf("%v", err)
		return applyExit(err)
	}
	out.emit(events.Event{Type: events.TypeApplySummary, Message: fmt.Sprintf("Apply complete: %d created, %d updated, %d destroyed.",
		p.Count(plan.Create), p.Count(plan.Update), p.Count(plan.Destroy))})
	return exitOK
}

// planEvent returns the plan event of an action.
func planEvent(a plan.Action) events.Event {
	e := events.Event{Type: events.TypePlan, Tenant: a.Tenant, Instance: a.Instance, Op: string(a.Op)}
	for _, ch := range a.Changes {
		e.Changes = append(e.Changes, events.Change{Attribute: ch.Field, Old: ch.Old, New: ch.New})
	}
	if a.Resume {
		e.Message = "resuming an interrupted apply"
	}
	return e
}

// applyAgentJSON has the agent reconcile now, streaming its events as JSON
// lines while it works.
func applyAgentJSON(ctx context.Context, c *cli, client *api.Client) int {
	out := &jsonLines{enc: json.NewEncoder(c.stdout)}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	subscribed := make(chan struct{})
	streamDone := make(chan error, 1)
	var mu sync.Mutex
	reconciled := map[string]bool{} // tenants whose reconcile event was printed
	seen := make(chan struct{}, 1)
	go func() {
		first := true
		streamDone <- client.Events(sctx, func(e events.Event) error {
			out.emit(e)
			if first {
				first = false
				close(subscribed)
			}
			if e.Type == events.TypeReconcile {
				mu.Lock()
				reconciled[e.Tenant] = true
				mu.Unlock()
				select {
				case seen <- struct{}{}:
				default:
				}
			}
			return nil
		})
	}()
	select {
	case <-subscribed:
	case err := <-streamDone:
		return c.agentFail(fmt.Errorf("follow the agent's events: %w", err))
	}
	results, err := client.Reconcile(ctx)
	// The agent publishes each tenant's reconcile event before Reconcile
	// returns; wait (a little) for those still in flight to be printed.
	grace := time.NewTimer(eventGrace)
	defer grace.Stop()
	ended := false
	for waiting := true; waiting && err == nil; {
		mu.Lock()
		all := true
		for _, r := range results {
			all = all && reconciled[r.Tenant]
		}
		mu.Unlock()
		if all {
			break
		}
		select {
		case <-seen:
		case <-grace.C:
			waiting = false
		case <-streamDone:
			waiting, ended = false, true
		}
	}
	stop()
	if !ended {
		<-streamDone // nothing prints after the summary
	}
	// The summary keeps the agent's sequence numbers apart: it has none.
	summary := events.Event{Version: events.SchemaVersion, Type: events.TypeApplySummary}
	if err != nil {
		summary.Error = err.Error()
		out.emit(summary)
		return c.agentFail(err)
	}
	var created, updated, destroyed int
	var failed []string
	for _, r := range results {
		created, updated, destroyed = created+r.Created, updated+r.Updated, destroyed+r.Destroyed
		if r.Error != "" {
			failed = append(failed, fmt.Sprintf("tenant %s: %s", r.Tenant, r.Error))
		}
	}
	summary.Message = fmt.Sprintf("Apply complete: %d created, %d updated, %d destroyed.", created, updated, destroyed)
	if len(failed) > 0 {
		summary.Error = strings.Join(failed, "; ")
		out.emit(summary)
		return exitFailed
	}
	out.emit(summary)
	return exitOK
}

// eventGrace bounds the wait for reconcile events still in flight after the
// agent answered.
const eventGrace = 2 * time.Second

// planJSON is the document `kigumi plan -json` prints.
func planJSON(p *plan.Plan) any {
	actions := p.Actions
	if actions == nil {
		actions = []plan.Action{}
	}
	return struct {
		FormatVersion int            `json:"format_version"`
		Actions       []plan.Action  `json:"actions"`
		Summary       map[string]int `json:"summary"`
	}{1, actions, map[string]int{"create": p.Count(plan.Create), "update": p.Count(plan.Update), "destroy": p.Count(plan.Destroy)}}
}

// validateJSON runs `kigumi validate -json`: the outcome and every
// diagnostic, in the shape of `terraform validate -json`.
func validateJSON(ctx context.Context, c *cli) int {
	var diags hcl.Diagnostics
	c.collected = &diags
	stdout := c.stdout
	c.stdout = io.Discard
	s, code := c.open(ctx, true, storeNone)
	s.close()
	c.stdout = stdout
	errs, warns := 0, 0
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs++
		} else {
			warns++
		}
	}
	if c.printJSON(struct {
		FormatVersion string              `json:"format_version"`
		Valid         bool                `json:"valid"`
		ErrorCount    int                 `json:"error_count"`
		WarningCount  int                 `json:"warning_count"`
		Diagnostics   []events.Diagnostic `json:"diagnostics"`
	}{"1.0", code == exitOK, errs, warns, events.Diagnostics(diags)}) != exitOK {
		return exitFailed
	}
	return code
}

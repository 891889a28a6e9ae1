package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/plan"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

// progressEvery is how often, at most, an instance's start progress is
// printed, apart from its first and last report of a step.
const progressEvery = time.Second

// progress prints each action of an apply as it runs, and the progress
// of its starts a handful of times.
type progress struct {
	engine.NilHook
	w io.Writer

	now func() time.Time
	mu  sync.Mutex
	// printed is when each instance's progress was last printed, and of
	// which step.
	printed map[string]printedStep
}

type printedStep struct {
	step string
	at   time.Time
	done bool
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, now: time.Now, printed: map[string]printedStep{}}
}

// PreApply implements engine.Hook.
func (p *progress) PreApply(a plan.Action) {
	fmt.Fprintf(p.w, "%s %s...\n", verb(a.Op), a.Target())
}

// PostApply implements engine.Hook.
func (p *progress) PostApply(a plan.Action, d time.Duration, err error) {
	p.mu.Lock()
	delete(p.printed, a.Tenant+"/"+a.Instance)
	p.mu.Unlock()
	d = d.Round(time.Millisecond / 10)
	if err != nil {
		fmt.Fprintf(p.w, "  failed after %s\n", d)
		return
	}
	fmt.Fprintf(p.w, "  done in %s\n", d)
}

// Progress implements engine.Hook: it prints a step's first report, its
// first all done, and between them one a second at most.
func (p *progress) Progress(tenant, instance string, r sdk.Progress) {
	key, step := tenant+"/"+instance, r.Step+" "+r.Subject
	now := p.now()
	done := r.Parts > 0 && r.PartsDone == r.Parts && r.BytesDone == r.BytesTotal
	p.mu.Lock()
	defer p.mu.Unlock()
	if last, ok := p.printed[key]; ok && last.step == step && (last.done || !done && now.Sub(last.at) < progressEvery) {
		return
	}
	p.printed[key] = printedStep{step: step, at: now, done: done}
	fmt.Fprintf(p.w, "  %s\n", progressText(r))
}

// progressText is one progress line: "pulling REF: 2/3 layers, 1.2 MiB
// of 1.9 MiB".
func progressText(r sdk.Progress) string {
	var parts []string
	if r.Parts > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d %s", r.PartsDone, r.Parts, r.Unit))
	}
	if r.BytesTotal > 0 {
		parts = append(parts, bytesText(r.BytesDone)+" of "+bytesText(r.BytesTotal))
	}
	head := strings.TrimSpace(r.Step + " " + r.Subject)
	if len(parts) == 0 {
		return head
	}
	return head + ": " + strings.Join(parts, ", ")
}

func verb(op plan.Op) string {
	switch op {
	case plan.Create:
		return "Creating"
	case plan.Update:
		return "Updating"
	case plan.Restart:
		return "Restarting"
	}
	return "Destroying"
}

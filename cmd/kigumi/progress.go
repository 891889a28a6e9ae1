package main

import (
	"fmt"
	"io"
	"time"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/plan"
)

// progress prints each action of an apply as it runs.
type progress struct {
	engine.NilHook
	w io.Writer
}

// PreApply implements engine.Hook.
func (p progress) PreApply(a plan.Action) {
	fmt.Fprintf(p.w, "%s %s...\n", verb(a.Op), a.Target())
}

// PostApply implements engine.Hook.
func (p progress) PostApply(_ plan.Action, d time.Duration, err error) {
	d = d.Round(time.Millisecond / 10)
	if err != nil {
		fmt.Fprintf(p.w, "  failed after %s\n", d)
		return
	}
	fmt.Fprintf(p.w, "  done in %s\n", d)
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

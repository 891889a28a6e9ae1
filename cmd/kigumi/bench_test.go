package main

import (
	"os/exec"
	"testing"
)

// The quickstart-sized benchmarks: two tenants with one wasm instance each,
// run through the real binary, real users, cgroups and sandboxes.
// BenchmarkExecBaseline is what starting the binary alone costs, so the
// others can be read as ratios to it.

func BenchmarkExecBaseline(b *testing.B) {
	for b.Loop() {
		if err := exec.Command(kigumiBin, "--help").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPlan(b *testing.B) {
	w := newWorkspace(b, 2)
	for b.Loop() {
		mustKigumi(b, "plan", "-c", w.host)
	}
}

func BenchmarkApplyNoChange(b *testing.B) {
	w := newWorkspace(b, 2)
	mustKigumi(b, "apply", "-c", w.host, "--auto-approve")
	for b.Loop() {
		mustKigumi(b, "apply", "-c", w.host, "--auto-approve")
	}
}

// BenchmarkApplyDestroy creates two tenants with an instance each, then
// destroys them: users, cgroups, state, sandboxes.
func BenchmarkApplyDestroy(b *testing.B) {
	w := newWorkspace(b, 2)
	mustKigumi(b, "apply", "-c", w.host, "--auto-approve") // warm the compilation cache
	mustKigumi(b, "destroy", "-c", w.host, "--auto-approve")
	for b.Loop() {
		mustKigumi(b, "apply", "-c", w.host, "--auto-approve")
		mustKigumi(b, "destroy", "-c", w.host, "--auto-approve")
	}
}

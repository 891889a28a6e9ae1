package ctrruntime

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// heartbeat prints a line every 0.1 s, forever: the neighbour that must
// keep working while another tenant's container hits its limits.
const heartbeat = "i=0; while true; do i=$((i+1)); echo beat $i; sleep 0.1; done"

// TestLimits pushes a container past each of its limits while another
// tenant's container, on the other daemon mode, keeps working: a fork bomb
// stops at the pids limit, a memory bomb is OOM-killed inside its
// container, and filling /tmp stops at its cap. It runs with the bad
// tenant on its own daemon, then on the shared one.
func TestLimits(t *testing.T) {
	for _, mode := range []string{ModePerTenant, ModeShared} {
		t.Run(mode, func(t *testing.T) { testLimits(t, mode) })
	}
}

func testLimits(t *testing.T, mode string) {
	bad, good := newTenant(t), newTenant(t)
	own := good
	if mode == ModePerTenant {
		own = bad
	}
	r := newRuntime(t, sdk.Config{"tmp_size": "2MiB", "daemons": map[string]string{own.name: ModePerTenant}})
	bad, good = prepare(t, r, bad), prepare(t, r, good)
	ctx := context.Background()
	nh, _ := start(t, r, good, instance{name: "neighbour", args: []string{"sh", "-c", heartbeat}, resources: sdk.Resources{MemoryBytes: 32 << 20, Pids: 16}})
	waitLog(t, r, nh, "beat 1\n", 30*time.Second)
	// checkNeighbour checks that the neighbour still runs and beats.
	checkNeighbour := func(t *testing.T) {
		t.Helper()
		n := beats(logs(t, r, nh, sdk.Stdout))
		time.Sleep(500 * time.Millisecond)
		if st, err := r.Inspect(ctx, nh); err != nil || st.State != sdk.StateRunning {
			t.Fatalf("neighbour: %+v, %v", st, err)
		}
		if m := beats(logs(t, r, nh, sdk.Stdout)); m <= n {
			t.Errorf("neighbour stopped beating at %d", n)
		}
	}

	t.Run("fork-bomb", func(t *testing.T) {
		const pids = 32
		// The subshell that forks ends when a fork fails; echo is a
		// builtin, which needs no fork.
		script := "(i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done) 2>/dev/null; echo forked; exec sleep 1000"
		h, _ := start(t, r, bad, instance{name: "forkbomb", args: []string{"sh", "-c", script}, resources: sdk.Resources{MemoryBytes: 64 << 20, Pids: pids}})
		waitLog(t, r, h, "forked\n", 60*time.Second)
		d, _ := decodeHandle(h)
		cur := readInt(t, filepath.Join("/sys/fs/cgroup/pids", d.Cgroup, "pids.current"))
		if cur > pids {
			t.Errorf("pids.current %d over the limit %d", cur, pids)
		}
		ev, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/pids", d.Cgroup, "pids.events"))
		if err != nil || strings.TrimSpace(string(ev)) == "max 0" {
			t.Errorf("pids.events: %q, %v: the limit was never hit", ev, err)
		}
		checkNeighbour(t)
	})

	t.Run("memory-bomb", func(t *testing.T) {
		script := "echo start; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"
		h, _ := start(t, r, bad, instance{name: "membomb", args: []string{"sh", "-c", script}, resources: sdk.Resources{MemoryBytes: 32 << 20, Pids: 16}})
		st := waitExit(t, r, h, 60*time.Second)
		if st.State != sdk.StateExited || st.Cause != sdk.CauseOOM {
			t.Errorf("status %+v, want an OOM kill", st)
		}
		if out := logs(t, r, h, sdk.Stdout); strings.Contains(out, "survived") {
			t.Errorf("the memory bomb survived: %q", out)
		}
		checkNeighbour(t)
	})

	t.Run("fill-tmp", func(t *testing.T) {
		script := "dd if=/dev/zero of=/tmp/fill bs=64k count=100 2>&1; echo size $(wc -c </tmp/fill); echo filled; exec sleep 1000"
		h, _ := start(t, r, bad, instance{name: "filltmp", args: []string{"sh", "-c", script}, resources: sdk.Resources{MemoryBytes: 64 << 20, Pids: 16}})
		out := waitLog(t, r, h, "filled\n", 30*time.Second)
		if !strings.Contains(out, "No space left on device") || !strings.Contains(out, "size 2097152\n") {
			t.Errorf("filling a 2MiB /tmp: %q", out)
		}
		checkNeighbour(t)
	})
}

// beats counts the heartbeat lines.
func beats(out string) int { return strings.Count(out, "beat ") }

func readInt(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// agentProc is a `kigumi agent` running in the background, its output
// lines collected.
type agentProc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func startAgent(t *testing.T, host string) *agentProc {
	t.Helper()
	return startAgentWith(t, host, "-resync", "300ms")
}

// startAgentWith starts `kigumi agent` on host with args, collecting its
// output lines.
func startAgentWith(t *testing.T, host string, args ...string) *agentProc {
	t.Helper()
	a := &agentProc{cmd: exec.Command(kigumiBin, append([]string{"agent", "-c", host}, args...)...), done: make(chan struct{})}
	out, err := a.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	a.cmd.Stderr = os.Stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(a.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			a.mu.Lock()
			a.lines = append(a.lines, sc.Text())
			a.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		a.cmd.Process.Signal(syscall.SIGTERM)
		a.cmd.Wait()
	})
	return a
}

// mark returns the number of lines so far, to wait for lines after it.
func (a *agentProc) mark() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.lines)
}

// waitLine waits for a line after mark holding every one of parts.
func (a *agentProc) waitLine(t *testing.T, mark int, parts ...string) string {
	t.Helper()
	var found string
	eventually(t, strings.Join(parts, " "), func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		for _, l := range a.lines[mark:] {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(l, p)
			}
			if ok {
				found = l
				return true
			}
		}
		return false
	})
	return found
}

// since returns the lines after mark.
func (a *agentProc) since(mark int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.lines[mark:], "\n")
}

// stop stops the agent with SIGTERM and checks it exits 0.
func (a *agentProc) stop(t *testing.T) {
	t.Helper()
	a.cmd.Process.Signal(syscall.SIGTERM)
	if err := a.cmd.Wait(); err != nil {
		t.Fatalf("agent exit: %v\n%s", err, a.since(0))
	}
	<-a.done
}

// sandboxPids returns the processes in an instance's memory cgroup.
func sandboxPids(tenant, instance string) []int {
	data, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory/kigumi", tenant, instance, "cgroup.procs"))
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

func TestAgent(t *testing.T) {
	w := newWorkspace(t, 0)
	var b [3]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	good, bad := "ag"+id+"a", "ag"+id+"b"
	a := startAgent(t, w.host)

	// A spec dropped in runs.
	m := a.mark()
	w.writeTenant(t, good, "Hello")
	a.waitLine(t, m, "action_done", good+"/app", "create")
	pids := sandboxPids(good, "app")
	if len(pids) == 0 {
		t.Fatalf("no sandbox in the instance cgroup\n%s", a.since(m))
	}

	// A tenant whose workload cannot start fails and is retried, and never
	// holds up the other tenant. Its module passes validate's scan (header,
	// no imports, _start) but does not compile: an invalid opcode.
	notWasm := filepath.Join(filepath.Dir(appWasm), "ag-"+id+".wasm")
	writeFile(t, notWasm, "\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00"+
		"\x07\x0a\x01\x06_start\x00\x00\x0a\x05\x01\x03\x00\xff\x0b")
	t.Cleanup(func() { os.Remove(notWasm) })
	m = a.mark()
	writeFile(t, filepath.Join(w.tenants, bad+".hcl"), fmt.Sprintf(`tenant %q {
  instance "app" {
    runtime = "wasm"
    module  = %q
  }
}
`, bad, notWasm))
	a.waitLine(t, m, "action_failed", bad+"/app", "create")
	w.writeTenant(t, good, "Howdy")
	a.waitLine(t, m, "action_done", good+"/app", "update")
	m = a.mark()
	a.waitLine(t, m, "action_failed", bad+"/app", "create") // retried

	// An invalid spec leaves the running instance untouched.
	pids = sandboxPids(good, "app")
	m = a.mark()
	writeFile(t, filepath.Join(w.tenants, good+".hcl"), "tenant \""+good+"\" {\n  instance \"app\" {\n    runtime = \n")
	a.waitLine(t, m, "diagnostics", good, "last good spec")
	mid := a.mark()
	a.waitLine(t, mid, "reconcile", bad) // a later round of reconciles
	if got := sandboxPids(good, "app"); len(got) == 0 || got[0] != pids[0] || !alive(pids[0]) {
		t.Fatalf("the instance changed while its spec was invalid: %v -> %v\n%s", pids, got, a.since(m))
	}
	if out := a.since(m); strings.Contains(out, "action_begin "+good) {
		t.Fatalf("an action ran on a tenant with an invalid spec:\n%s", out)
	}
	w.writeTenant(t, good, "Howdy")

	// A killed sandbox is restarted (on-failure), with its state kept.
	log := filepath.Join(w.state, "run", good, "app", "stdout.log")
	runs := func() int {
		data, _ := os.ReadFile(log)
		n := 0
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "run "); ok {
				n, _ = strconv.Atoi(v)
			}
		}
		return n
	}
	before := runs()
	if before < 2 {
		t.Fatalf("the updated instance is at run %d, want 2 or more", before)
	}
	m = a.mark()
	for _, pid := range sandboxPids(good, "app") {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	a.waitLine(t, m, "instance_restart", good+"/app")
	// The app prints "run N" as it starts, N one more than its state's
	// counter: a run above the last shows the state was kept.
	eventually(t, "the restarted instance's run", func() bool { return runs() > before })
	if n := strings.Count(a.since(m), "instance_restart "+good); n != 1 {
		t.Fatalf("%d restarts, want 1\n%s", n, a.since(m))
	}

	// Stopping the agent leaves the workload running; a new agent adopts it.
	pids = sandboxPids(good, "app")
	a.stop(t)
	if !alive(pids[0]) {
		t.Fatal("stopping the agent stopped a workload")
	}
	a = startAgent(t, w.host)
	m = a.mark()
	a.waitLine(t, m, "reconcile", good)
	if got := sandboxPids(good, "app"); len(got) == 0 || got[0] != pids[0] {
		t.Fatalf("the restarted agent replaced the workload: %v -> %v\n%s", pids, got, a.since(m))
	}

	// A deleted spec destroys its tenant, even beside a failing one.
	m = a.mark()
	os.Remove(filepath.Join(w.tenants, good+".hcl"))
	a.waitLine(t, m, "action_done "+good+" destroy")
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory/kigumi", good)); err == nil {
		t.Error("the destroyed tenant's cgroup is left")
	}
	// The failing tenant's deleted spec ends its retries: its reconcile
	// succeeds, with nothing left to do.
	m = a.mark()
	os.Remove(filepath.Join(w.tenants, bad+".hcl"))
	eventually(t, "a clean reconcile of the failing tenant", func() bool {
		return strings.Contains(a.since(m)+"\n", " reconcile "+bad+"\n")
	})
	a.stop(t)
}

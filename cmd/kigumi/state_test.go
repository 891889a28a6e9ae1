package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/api"
	"github.com/kigumi/kigumi/core/engine"
)

// TestStateCommands runs `kigumi state` end to end through the real binary,
// wasm runtime, users and (in fuse mode) FUSE mounts, in both state modes:
// hashes of equal content, quota use in status, checkpoint, mount,
// rollback, their errors; then through a real agent.
func TestStateCommands(t *testing.T) {
	for _, mode := range []string{"directory", "fuse"} {
		t.Run(mode, func(t *testing.T) { testStateCommands(t, mode) })
	}
}

// stateEntry is a file the test writes into an instance's state: a regular
// file (content), a directory or a symlink (link).
type stateEntry struct {
	path, content, link string
	dir                 bool
	perm                os.FileMode
}

var stateTree = []stateEntry{
	{path: "d", dir: true, perm: 0o750},
	{path: "d/f", content: "x", perm: 0o640},
	{path: "\xff odd\nname", content: "odd", perm: 0o644},
	{path: "loop1", link: "loop2"},
	{path: "loop2", link: "loop1"},
	{path: "big", content: strings.Repeat("b", 200<<10), perm: 0o600},
}

// writeState writes stateTree below dir owned by uid, files in reverse
// order when reverse is set.
func writeState(t *testing.T, dir string, uid uint32, reverse bool) {
	t.Helper()
	var dirs, rest []stateEntry
	for _, e := range stateTree {
		if e.dir {
			dirs = append(dirs, e)
		} else {
			rest = append(rest, e)
		}
	}
	if reverse {
		slices.Reverse(rest)
	}
	for _, e := range append(dirs, rest...) {
		p := filepath.Join(dir, e.path)
		var err error
		switch {
		case e.dir:
			err = os.Mkdir(p, 0o700)
		case e.link != "":
			err = os.Symlink(e.link, p)
		default:
			err = os.WriteFile(p, []byte(e.content), 0o600)
		}
		if err == nil {
			err = os.Lchown(p, int(uid), int(uid))
		}
		if err == nil && e.link == "" {
			err = os.Chmod(p, e.perm)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func statusReport(t *testing.T, host string) api.StatusReport {
	t.Helper()
	var st api.StatusReport
	if err := json.Unmarshal([]byte(mustKigumi(t, "status", "-c", host, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// instanceOf returns the status of tenant's instance "app".
func instanceOf(t *testing.T, host, tenant string) (engine.TenantStatus, engine.InstanceStatus) {
	t.Helper()
	for _, ts := range statusReport(t, host).Tenants {
		if ts.Name == tenant && len(ts.Instances) == 1 {
			return ts, ts.Instances[0]
		}
	}
	t.Fatalf("no instance %s/app in the status", tenant)
	return engine.TenantStatus{}, engine.InstanceStatus{}
}

func readState(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testStateCommands(t *testing.T, mode string) {
	w := newWorkspace(t, 2)
	replaceIn(t, w.host, `statefs "fuse" {}`, fmt.Sprintf("statefs \"fuse\" {\n  mode = %q\n}", mode))
	for _, n := range w.names {
		// One write of the counter at start, then quiet.
		replaceIn(t, filepath.Join(w.tenants, n+".hcl"), `"200ms"`, `"1h"`)
	}
	mustKigumi(t, "apply", "-c", w.host, "--auto-approve")
	a, b := w.names[0]+"/app", w.names[1]+"/app"
	ta, ia := instanceOf(t, w.host, w.names[0])
	tb, ib := instanceOf(t, w.host, w.names[1])
	for _, in := range []engine.InstanceStatus{ia, ib} {
		eventually(t, "the counter", func() bool {
			b, err := os.ReadFile(filepath.Join(in.StateDir, "counter"))
			return err == nil && string(b) == "1\n"
		})
	}

	if mi, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(mi), " "+ia.StateDir+" ") != (mode == "fuse") {
		t.Fatalf("mode %s: is %s a FUSE mount? mountinfo says otherwise (%v)", mode, ia.StateDir, err)
	}

	// Quota use in status, text and JSON.
	_, ia = instanceOf(t, w.host, w.names[0])
	if u := ia.StateUsage; u == nil || u.BytesLimit != 4<<20 || u.InodesLimit != 1024 || u.Bytes < 2 || u.Inodes < 1 || ia.StateError != "" {
		t.Errorf("state usage in status: %+v (error %q)", u, ia.StateError)
	}
	if out := mustKigumi(t, "status", "-c", w.host); !strings.Contains(out, "STATE USE") || !strings.Contains(out, "/4.0 MiB, ") || !strings.Contains(out, "/1024 inodes") {
		t.Errorf("status text lacks the state use:\n%s", out)
	}

	// The same content, with other owners, timestamps, inode numbers and
	// creation orders, has the same root.
	writeState(t, ia.StateDir, ta.UID, false)
	time.Sleep(20 * time.Millisecond)
	writeState(t, ib.StateDir, tb.UID, true)
	hash := func(target string) string {
		t.Helper()
		h := strings.TrimSpace(mustKigumi(t, "state", "hash", "-c", w.host, target))
		if len(h) != 64 {
			t.Fatalf("state hash %s = %q, want 64 hex digits", target, h)
		}
		return h
	}
	rootA := hash(a)
	if rootB := hash(b); rootB != rootA {
		t.Fatalf("equal content, roots differ: %s %s", rootA, rootB)
	}
	var hj api.StateHash
	if err := json.Unmarshal([]byte(mustKigumi(t, "state", "hash", "-c", w.host, "--json", b)), &hj); err != nil ||
		hj != (api.StateHash{Tenant: w.names[1], Instance: "app", Root: rootA}) {
		t.Errorf("state hash --json = %+v, %v", hj, err)
	}
	big := filepath.Join(ib.StateDir, "big")
	flip := func() {
		f, err := os.OpenFile(big, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		c := make([]byte, 1)
		f.ReadAt(c, 100<<10)
		c[0] ^= 1
		if _, err := f.WriteAt(c, 100<<10); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	flip()
	if h := hash(b); h == rootA {
		t.Errorf("one byte changed, root unchanged: %s", h)
	}
	flip()
	if h := hash(b); h != rootA {
		t.Errorf("byte restored, root %s, want %s", h, rootA)
	}
	if err := os.Chmod(filepath.Join(ib.StateDir, "d/f"), 0o641); err != nil {
		t.Fatal(err)
	}
	if h := hash(b); h == rootA {
		t.Errorf("one mode bit changed, root unchanged: %s", h)
	}
	if err := os.Chmod(filepath.Join(ib.StateDir, "d/f"), 0o640); err != nil {
		t.Fatal(err)
	}

	// A checkpoint, and what is refused.
	var cp api.Checkpoint
	if err := json.Unmarshal([]byte(mustKigumi(t, "state", "checkpoint", "-c", w.host, "--json", a, "c1")), &cp); err != nil ||
		cp.Name != "c1" || cp.Root != rootA || cp.Bytes < 200<<10 || cp.Inodes != 7 {
		t.Errorf("state checkpoint --json = %+v, %v; want root %s, 7 inodes", cp, err, rootA)
	}
	// The instance was frozen for the copy, and runs again.
	freezer := filepath.Join("/sys/fs/cgroup/freezer/kigumi", w.names[0], "app", "freezer.state")
	if st, err := os.ReadFile(freezer); err != nil || strings.TrimSpace(string(st)) != "THAWED" {
		t.Errorf("%s after the checkpoint = %q, %v; want THAWED", freezer, st, err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"checkpoint", a, ".hidden"}, "not a checkpoint name"},
		{[]string{"checkpoint", a, "a/b"}, "not a checkpoint name"},
		{[]string{"checkpoint", a, "c1"}, `already has a checkpoint "c1"`},
		{[]string{"hash", "nosuch/app"}, "no such tenant"},
		{[]string{"checkpoints", w.names[0] + "/nope"}, "no such instance"},
		{[]string{"rollback", a, "never"}, `no checkpoint "never"`},
		{[]string{"mount", a, "never"}, `no checkpoint "never"`},
		{[]string{"hash", "one-part"}, "takes TENANT/INSTANCE"},
		{[]string{"explode", a}, "unknown subcommand"},
		{[]string{"rollback", a}, "wrong number of arguments"},
	} {
		code, _, errOut := kigumi(t, append(append([]string{"state"}, tt.args...), "-c", w.host)...)
		if code != exitInvalid || !strings.Contains(errOut, tt.want) {
			t.Errorf("state %q: exit %d, %q; want exit 1 and %q", tt.args, code, errOut, tt.want)
		}
	}
	if _, in := instanceOf(t, w.host, w.names[0]); in.Pid != ia.Pid || in.State != "running" {
		t.Errorf("refused commands touched the workload: %+v, was pid %d", in, ia.Pid)
	}

	// The live state moves on; the checkpoint, mounted, does not.
	writeFile(t, filepath.Join(ia.StateDir, "d/f"), "changed")
	if err := os.Remove(filepath.Join(ia.StateDir, "big")); err != nil {
		t.Fatal(err)
	}
	mnt := strings.TrimSpace(mustKigumi(t, "state", "mount", "-c", w.host, a, "c1"))
	if want := filepath.Join(w.state, "state", w.names[0], ".mounts", "app", "c1"); mnt != want {
		t.Errorf("mounted at %q, want %q", mnt, want)
	}
	if got := readState(t, mnt, "d/f"); got != "x" {
		t.Errorf("d/f in the mounted checkpoint = %q, want x", got)
	}
	for _, p := range []string{"new", "d/f", "big"} {
		if err := os.WriteFile(filepath.Join(mnt, p), []byte("w"), 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("root writing %s in the mounted checkpoint: %v, want EROFS", p, err)
		}
	}
	var list api.CheckpointList
	if err := json.Unmarshal([]byte(mustKigumi(t, "state", "checkpoints", "-c", w.host, "--json", a)), &list); err != nil ||
		len(list.Checkpoints) != 1 || list.Checkpoints[0].Mount != mnt || list.Checkpoints[0].Root != rootA {
		t.Errorf("state checkpoints --json = %+v, %v", list, err)
	}
	if out := mustKigumi(t, "state", "checkpoints", "-c", w.host, a); !strings.Contains(out, "c1") || !strings.Contains(out, mnt) || !strings.Contains(out, rootA) {
		t.Errorf("state checkpoints:\n%s", out)
	}

	// Rollback stops the running workload and starts it on the checkpoint.
	if out := mustKigumi(t, "state", "rollback", "-c", w.host, a, "c1"); !strings.Contains(out, `rolled back to checkpoint "c1"`) {
		t.Errorf("state rollback: %q", out)
	}
	_, after := instanceOf(t, w.host, w.names[0])
	if after.State != "running" || after.Pid == ia.Pid || after.Pid == 0 {
		t.Errorf("after rollback: %+v, want running anew (was pid %d)", after, ia.Pid)
	}
	if got := readState(t, ia.StateDir, "d/f"); got != "x" {
		t.Errorf("d/f after rollback = %q, want x", got)
	}
	if got := readState(t, ia.StateDir, "big"); len(got) != 200<<10 {
		t.Errorf("big after rollback has %d bytes, want %d", len(got), 200<<10)
	}
	eventually(t, "the restarted workload's counter", func() bool {
		b, err := os.ReadFile(filepath.Join(ia.StateDir, "counter"))
		return err == nil && string(b) == "2\n"
	})

	// Through a real agent.
	ag := startAgent(t, w.host)
	writeFile(t, filepath.Join(ia.StateDir, "d/f"), "again")
	eventually(t, "the agent's socket", func() bool {
		_, err := os.Stat(api.SocketPath(w.state))
		return err == nil
	})
	mustKigumi(t, "state", "rollback", "-c", w.host, a, "c1")
	if got := readState(t, ia.StateDir, "d/f"); got != "x" {
		t.Errorf("d/f after a rollback through the agent = %q, want x", got)
	}
	if h := hash(b); h != rootA {
		t.Errorf("state hash through the agent = %s, want %s", h, rootA)
	}
	journal := parseLines[api.JournalEntry](t, mustKigumi(t, "journal", "-c", w.host, "--json", "-n", "0"))
	n := 0
	for _, e := range journal {
		if e.Step == "statefs.rollback" && e.Event == "done" && e.Target == "instance "+a {
			n++
		}
	}
	if n != 2 {
		t.Errorf("journal has %d finished rollbacks of %s, want 2 (one direct, one through the agent)", n, a)
	}
	mustKigumi(t, "state", "unmount", "-c", w.host, a, "c1")
	if _, err := os.Lstat(mnt); !os.IsNotExist(err) {
		t.Errorf("mount point after unmount: %v", err)
	}
	if out := strings.TrimSpace(mustKigumi(t, "state", "mount", "-c", w.host, a, "c1")); out != mnt {
		t.Errorf("mount through the agent at %q, want %q", out, mnt)
	}
	ag.cmd.Process.Signal(syscall.SIGTERM)
	ag.cmd.Wait()

	// Destroying the tenant takes its mounted checkpoint with it.
	mustKigumi(t, "destroy", "-c", w.host, "--auto-approve", w.names[0])
	if _, err := os.Lstat(filepath.Join(w.state, "state", w.names[0])); !os.IsNotExist(err) {
		t.Errorf("the tenant's state after destroy: %v", err)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), mnt) {
		t.Errorf("the checkpoint is still mounted after destroy")
	}
}

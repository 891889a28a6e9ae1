package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/kigumi/kigumi/core/api"
	"github.com/kigumi/kigumi/core/events"
	"github.com/kigumi/kigumi/core/state"
)

func TestVersion(t *testing.T) {
	if out := mustKigumi(t, "version"); out != "kigumi "+testVersion+" (control API v1, event schema v1)\n" {
		t.Errorf("version: %q", out)
	}
	var v api.VersionInfo
	if err := json.Unmarshal([]byte(mustKigumi(t, "version", "--json")), &v); err != nil ||
		v != (api.VersionInfo{Version: testVersion, API: api.Version, EventSchema: events.SchemaVersion}) {
		t.Errorf("version --json: %+v, %v", v, err)
	}
}

// parseLines parses JSON lines into values of T.
func parseLines[T any](t *testing.T, out string) []T {
	t.Helper()
	var all []T
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		all = append(all, v)
	}
	return all
}

type validateResult struct {
	FormatVersion string              `json:"format_version"`
	Valid         bool                `json:"valid"`
	ErrorCount    int                 `json:"error_count"`
	WarningCount  int                 `json:"warning_count"`
	Diagnostics   []events.Diagnostic `json:"diagnostics"`
}

// TestJSONOutputs runs each command that prints state with --json, without
// an agent, and checks that the output parses and carries its fields.
func TestJSONOutputs(t *testing.T) {
	w := newWorkspace(t, 1)
	name := w.names[0]

	var v validateResult
	if err := json.Unmarshal([]byte(mustKigumi(t, "validate", "-c", w.host, "--json")), &v); err != nil {
		t.Fatal(err)
	}
	if !v.Valid || v.ErrorCount != 0 || v.FormatVersion != "1.0" || v.Diagnostics == nil {
		t.Errorf("validate --json on a good spec: %+v", v)
	}

	var p struct {
		FormatVersion int `json:"format_version"`
		Actions       []struct {
			Op       string `json:"op"`
			Tenant   string `json:"tenant"`
			Instance string `json:"instance"`
		} `json:"actions"`
		Summary map[string]int `json:"summary"`
	}
	if err := json.Unmarshal([]byte(mustKigumi(t, "plan", "-c", w.host, "--json")), &p); err != nil {
		t.Fatal(err)
	}
	if p.Summary["create"] != 2 || len(p.Actions) != 2 || p.Actions[1].Tenant != name || p.Actions[1].Instance != "app" || p.Actions[1].Op != "create" {
		t.Errorf("plan --json: %+v", p)
	}

	code, out, errOut := kigumi(t, "apply", "-c", w.host, "--json")
	if code != exitInvalid || !strings.Contains(errOut, "--auto-approve") || out != "" {
		t.Errorf("apply --json without --auto-approve: %d %q %q", code, out, errOut)
	}
	evs := parseLines[events.Event](t, mustKigumi(t, "apply", "-c", w.host, "--json", "--auto-approve"))
	if len(evs) != 4 || evs[0].Type != events.TypeVersion || evs[0].Message != testVersion {
		t.Fatalf("apply --json: %+v", evs)
	}
	for i, e := range evs {
		if e.Version != events.SchemaVersion || e.Seq != uint64(i+1) || e.Time.IsZero() {
			t.Errorf("event %d not stamped: %+v", i, e)
		}
	}
	if e := evs[2]; e.Type != events.TypePlan || e.Op != "create" || e.Tenant != name || e.Instance != "app" {
		t.Errorf("plan event: %+v", e)
	}
	if e := evs[3]; e.Type != events.TypeApplySummary || e.Error != "" || e.Message != "Apply complete: 2 created, 0 updated, 0 destroyed." {
		t.Errorf("summary: %+v", e)
	}

	st := status(t, w.host)
	if len(st.Tenants) != 1 || st.Tenants[0].Instances[0].State != "running" {
		t.Errorf("status --json: %+v", st)
	}

	entries := parseLines[api.JournalEntry](t, mustKigumi(t, "journal", "-c", w.host, "--json", "-n", "3"))
	if len(entries) != 3 || entries[2].Seq <= entries[0].Seq || entries[2].Target == "" || entries[2].Step == "" || entries[2].Event == "" {
		t.Errorf("journal --json: %+v", entries)
	}
	if out := mustKigumi(t, "journal", "-c", w.host); !strings.HasPrefix(out, "SEQ") || !strings.Contains(out, "instance "+name+"/app") {
		t.Errorf("journal:\n%s", out)
	}

	// Invalid input: diagnostics as JSON, with their range, and exit 1.
	replaceIn(t, filepath.Join(w.tenants, name+".hcl"), `memory = "64MiB"`, `memory = "-64MiB"`)
	code, out, _ = kigumi(t, "validate", "-c", w.host, "--json")
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != exitInvalid {
		t.Fatalf("validate --json on a bad spec: exit %d, %v\n%s", code, err, out)
	}
	if d := v.Diagnostics; v.Valid || v.ErrorCount != 1 || len(d) != 1 || d[0].Severity != "error" ||
		d[0].Summary != `Invalid value for "memory"` || d[0].Range == nil ||
		!strings.HasSuffix(d[0].Range.Filename, name+".hcl") || d[0].Range.Start.Line != 8 || d[0].Range.Start.Column != 16 {
		t.Errorf("validate --json on a bad spec: %+v", v)
	}
	code, out, _ = kigumi(t, "apply", "-c", w.host, "--json", "--auto-approve")
	evs = parseLines[events.Event](t, out)
	if code != exitInvalid || len(evs) != 3 || evs[1].Type != events.TypeDiagnostics || len(evs[1].Diagnostics) != 1 ||
		evs[2].Type != events.TypeApplySummary || evs[2].Error == "" {
		t.Errorf("apply --json on a bad spec: exit %d\n%s", code, out)
	}
}

// TestJournalWithoutState reads the journal of a host where nothing was
// applied: empty, and nothing is created.
func TestJournalWithoutState(t *testing.T) {
	w := newWorkspace(t, 1)
	if out := mustKigumi(t, "journal", "-c", w.host); out != "The journal is empty.\n" {
		t.Errorf("journal: %q", out)
	}
	if out := mustKigumi(t, "journal", "-c", w.host, "--json"); out != "" {
		t.Errorf("journal --json: %q", out)
	}
	if _, err := os.Stat(w.state); !os.IsNotExist(err) {
		t.Errorf("journal created the state directory: %v", err)
	}
	code, _, errOut := kigumi(t, "journal", "-c", w.host, "-n", "-1")
	if code != exitInvalid || !strings.Contains(errOut, "-n must not be negative") {
		t.Errorf("journal -n -1: %d %q", code, errOut)
	}
}

// TestInstanceCommandsNeedAgent: without an agent, stop, start and
// restart refuse with a clear message.
func TestInstanceCommandsNeedAgent(t *testing.T) {
	w := newWorkspace(t, 1)
	for _, cmd := range []string{"stop", "start", "restart"} {
		code, _, errOut := kigumi(t, cmd, "-c", w.host, w.names[0]+"/app")
		if code != exitInvalid || !strings.Contains(errOut, cmd+" needs a running agent") || !strings.Contains(errOut, "kigumi agent -c") {
			t.Errorf("%s: exit %d\n%s", cmd, code, errOut)
		}
		code, _, errOut = kigumi(t, cmd, "-c", w.host, "no-slash")
		if code != exitInvalid || !strings.Contains(errOut, "takes TENANT/INSTANCE") {
			t.Errorf("%s no-slash: exit %d\n%s", cmd, code, errOut)
		}
	}
}

// onPty runs kigumi with a pseudo-terminal as its standard streams. When
// answer is set, it is typed at the confirmation prompt.
func onPty(t *testing.T, answer string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(kigumiBin, args...)
	f, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	buf := make([]byte, 4096)
	answered := answer == ""
	for {
		n, err := f.Read(buf)
		out.Write(buf[:n])
		if !answered && strings.Contains(out.String(), "Enter a value: ") {
			answered = true
			if _, err := io.WriteString(f, answer+"\n"); err != nil {
				t.Fatal(err)
			}
		}
		if err != nil { // EIO once the child closed the terminal
			break
		}
	}
	err = cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String()
}

// tree lists the paths under root with their modes and, for regular
// files outside skip, their contents' size.
func tree(t *testing.T, root string, skip ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, s := range skip {
			if path == s {
				return filepath.SkipDir
			}
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		out[path] = fmt.Sprintf("%v %d", fi.Mode(), fi.Size())
		if fi.IsDir() {
			out[path] = fi.Mode().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameTree(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, v := range after {
		if before[p] != v {
			t.Errorf("%s: %s is %q, was %q", what, p, v, before[p])
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("%s: %s vanished", what, p)
		}
	}
}

// TestDeclinedApply declines apply at the prompt, and without a terminal:
// nothing on disk changes, on a new host and on one already applied.
func TestDeclinedApply(t *testing.T) {
	w := newWorkspace(t, 1)
	before := tree(t, w.dir)
	code, out := onPty(t, "no", "apply", "-c", w.host)
	if code != exitInvalid || !strings.Contains(out, "Plan: tenants: 1 to create, 0 to update, 0 to destroy; instances: 1 to create") || !strings.Contains(out, "Cancelled: nothing was changed.") {
		t.Errorf("declined apply: exit %d\n%s", code, out)
	}
	sameTree(t, "after a declined apply on a new host", before, tree(t, w.dir))
	if _, err := os.Stat(w.state); !os.IsNotExist(err) {
		t.Errorf("the state directory was made: %v", err)
	}
	cmd := exec.Command(kigumiBin, "apply", "-c", w.host) // standard input is /dev/null
	if out, err := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != exitInvalid || !strings.Contains(string(out), "pass --auto-approve") {
		t.Errorf("apply without a terminal: %v\n%s", err, out)
	}
	sameTree(t, "after an apply without a terminal", before, tree(t, w.dir))

	// On a host already applied: the database keeps its bytes, and no
	// file or directory appears, goes or changes mode (the running
	// instance's own state and logs aside).
	mustKigumi(t, "apply", "-c", w.host, "--auto-approve")
	w.writeTenant(t, w.names[0], "Bonjour")
	db := filepath.Join(w.state, "kigumi.db")
	dbBefore, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	skip := []string{filepath.Join(w.state, "state"), filepath.Join(w.state, "run"), filepath.Join(w.state, "tenants")}
	before = tree(t, w.state, skip...)
	code, out = onPty(t, "nope", "apply", "-c", w.host)
	if code != exitInvalid || !strings.Contains(out, "~ update instance "+w.names[0]+"/app") || !strings.Contains(out, "Cancelled") {
		t.Errorf("declined update: exit %d\n%s", code, out)
	}
	if dbAfter, _ := os.ReadFile(db); !bytes.Equal(dbBefore, dbAfter) {
		t.Errorf("the state database changed")
	}
	sameTree(t, "after a declined update", before, tree(t, w.state, skip...))
	if st := status(t, w.host); !strings.Contains(mustKigumi(t, "logs", "-c", w.host, w.names[0]+"/app"), "Hello") || st.Tenants[0].Instances[0].State != "running" {
		t.Errorf("the instance changed: %+v", st)
	}

	// "yes" on the terminal applies.
	code, out = onPty(t, "yes", "apply", "-c", w.host)
	if code != exitOK || !strings.Contains(out, "Apply complete: 0 created, 1 updated, 0 destroyed, 0 restarted.") {
		t.Errorf("confirmed apply: exit %d\n%s", code, out)
	}
}

// TestLogsEscaping: an instance prints terminal control sequences. On a
// terminal they arrive escaped, into a pipe or with --raw unchanged.
func TestLogsEscaping(t *testing.T) {
	w := newWorkspace(t, 1)
	const evil = "\x1b]0;pwned\x07\x1b[2J"
	w.writeTenant(t, w.names[0], "EVIL")
	replaceIn(t, filepath.Join(w.tenants, w.names[0]+".hcl"), `"EVIL"`, `"\u001b]0;pwned\u0007\u001b[2J"`)
	mustKigumi(t, "apply", "-c", w.host, "--auto-approve")
	target := w.names[0] + "/app"
	eventually(t, "the greeting in the logs", func() bool {
		_, out, _ := kigumi(t, "logs", "-c", w.host, target)
		return strings.Contains(out, "from "+w.names[0])
	})
	if _, out, _ := kigumi(t, "logs", "-c", w.host, target); !strings.Contains(out, evil+" from ") {
		t.Errorf("into a pipe the bytes must pass unchanged:\n%q", out)
	}
	code, out := onPty(t, "", "logs", "-c", w.host, target)
	if code != exitOK || strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, `\x1b]0;pwned\x07\x1b[2J from `) {
		t.Errorf("on a terminal: exit %d\n%q", code, out)
	}
	code, out = onPty(t, "", "logs", "-c", w.host, "--raw", target)
	if code != exitOK || !strings.Contains(out, evil+" from ") {
		t.Errorf("--raw on a terminal: exit %d\n%q", code, out)
	}
}

// TestThroughAgent serves a stand-in agent on the host's socket and checks
// that the commands go through it.
func TestThroughAgent(t *testing.T) {
	w := newWorkspace(t, 1)
	if err := os.MkdirAll(w.state, 0o711); err != nil {
		t.Fatal(err)
	}
	ag := &standIn{bus: events.NewBus()}
	ln, err := api.Listen(api.SocketPath(w.state), 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.NewServer(ag, api.Options{Host: "e2e", Version: "agent-v1"}).Serve(ctx, ln) }()
	defer func() {
		cancel()
		<-done
	}()

	var st api.StatusReport
	if err := json.Unmarshal([]byte(mustKigumi(t, "status", "-c", w.host, "--json")), &st); err != nil ||
		len(st.Tenants) != 1 || st.Tenants[0].Name != "via-agent" {
		t.Errorf("status through the agent: %+v, %v", st, err)
	}
	if out := mustKigumi(t, "plan", "-c", w.host); !strings.Contains(out, "~ update instance via-agent/web") {
		t.Errorf("plan through the agent:\n%s", out)
	}
	if out := mustKigumi(t, "apply", "-c", w.host, "--auto-approve"); !strings.Contains(out, "Apply complete: 0 created, 1 updated, 0 destroyed, 1 tenants reconciled.") {
		t.Errorf("apply through the agent:\n%s", out)
	}
	evs := parseLines[events.Event](t, mustKigumi(t, "apply", "-c", w.host, "--auto-approve", "--json"))
	if len(evs) != 3 || evs[0].Type != events.TypeVersion || evs[0].Message != "agent-v1" ||
		evs[1].Type != events.TypeReconcile || evs[1].Tenant != "via-agent" || evs[2].Type != events.TypeApplySummary {
		t.Errorf("apply --json through the agent: %+v", evs)
	}
	if out := mustKigumi(t, "restart", "-c", w.host, "via-agent/web"); out != "via-agent/web: restart done.\n" {
		t.Errorf("restart: %q", out)
	}
	code, _, errOut := kigumi(t, "stop", "-c", w.host, "via-agent/none")
	if code != exitInvalid || !strings.Contains(errOut, "no such instance") {
		t.Errorf("stop of an unknown instance: %d %q", code, errOut)
	}
	if out := mustKigumi(t, "logs", "-c", w.host, "via-agent/web"); out != "agent log\x1b[2J\n" {
		t.Errorf("logs through the agent into a pipe: %q", out)
	}
	if code, out := onPty(t, "", "logs", "-c", w.host, "via-agent/web"); code != exitOK || !strings.Contains(out, `agent log\x1b[2J`) {
		t.Errorf("logs through the agent on a terminal: %d %q", code, out)
	}
	entries := parseLines[api.JournalEntry](t, mustKigumi(t, "journal", "-c", w.host, "--json", "-n", "2"))
	if len(entries) != 2 || entries[1].Step != "agent-step" {
		t.Errorf("journal through the agent: %+v", entries)
	}
	// The state commands, through the agent.
	if out := mustKigumi(t, "state", "hash", "-c", w.host, "via-agent/web"); out != "a9e1\n" {
		t.Errorf("state hash through the agent: %q", out)
	}
	var cp api.Checkpoint
	if err := json.Unmarshal([]byte(mustKigumi(t, "state", "checkpoint", "-c", w.host, "--json", "via-agent/web", "cp1")), &cp); err != nil ||
		cp.Name != "cp1" || cp.Root != "a9e1" || cp.Bytes != 2048 {
		t.Errorf("state checkpoint --json through the agent: %+v, %v", cp, err)
	}
	if out := mustKigumi(t, "state", "checkpoints", "-c", w.host, "via-agent/web"); !strings.Contains(out, "agent-cp") || !strings.Contains(out, "/m/agent-cp") {
		t.Errorf("state checkpoints through the agent:\n%s", out)
	}
	if out := mustKigumi(t, "state", "mount", "-c", w.host, "via-agent/web", "cp1"); out != "/m/cp1\n" {
		t.Errorf("state mount through the agent: %q", out)
	}
	mustKigumi(t, "state", "unmount", "-c", w.host, "via-agent/web", "cp1")
	mustKigumi(t, "state", "rollback", "-c", w.host, "via-agent/web", "cp1")
	if code, _, errOut := kigumi(t, "state", "rollback", "-c", w.host, "via-agent/none", "cp1"); code != exitInvalid || !strings.Contains(errOut, "no such instance") {
		t.Errorf("state rollback of an unknown instance through the agent: %d %q", code, errOut)
	}
	if code, _, errOut := kigumi(t, "state", "checkpoint", "-c", w.host, "via-agent/web", ".bad"); code != exitInvalid || !strings.Contains(errOut, "not a checkpoint name") {
		t.Errorf("state checkpoint with a bad name: %d %q", code, errOut)
	}
	want := []string{"restart via-agent/web", "hash via-agent/web", "checkpoint cp1 via-agent/web", "checkpoints via-agent/web",
		"mount cp1 via-agent/web", "unmount cp1 via-agent/web", "rollback cp1 via-agent/web"}
	if !slices.Equal(ag.calls, want) {
		t.Errorf("agent calls: %q, want %q", ag.calls, want)
	}
}

// TestDestroyJSON destroys a tenant with --json: a stream of events like
// apply's, and the refusals of apply --json.
func TestDestroyJSON(t *testing.T) {
	w := newWorkspace(t, 0)
	var b [3]byte
	rand.Read(b[:])
	name := "lv" + hex.EncodeToString(b[:]) + "d"
	w.writeTenant(t, name, "Hello")
	mustKigumi(t, "apply", "-c", w.host, "--auto-approve")

	code, out, errOut := kigumi(t, "destroy", "-c", w.host, "--json")
	if code != exitInvalid || !strings.Contains(errOut, "--auto-approve") || out != "" {
		t.Errorf("destroy --json without --auto-approve: %d %q %q", code, out, errOut)
	}
	code, out, errOut = kigumi(t, "destroy", "-c", w.host, "--json", "--auto-approve", name+"x")
	evs := parseLines[events.Event](t, out)
	if code != exitInvalid || len(evs) != 2 || evs[0].Type != events.TypeVersion || evs[1].Type != events.TypeApplySummary ||
		evs[1].Error == "" || !strings.Contains(errOut, name+"x") {
		t.Errorf("destroy --json of an unknown tenant: exit %d\n%s\n%s", code, out, errOut)
	}

	evs = parseLines[events.Event](t, mustKigumi(t, "destroy", "-c", w.host, "--json", "--auto-approve", name))
	if len(evs) != 4 || evs[0].Type != events.TypeVersion || evs[0].Message != testVersion {
		t.Fatalf("destroy --json: %+v", evs)
	}
	for i, e := range evs {
		if e.Version != events.SchemaVersion || e.Seq != uint64(i+1) || e.Time.IsZero() {
			t.Errorf("event %d not stamped: %+v", i, e)
		}
	}
	if e := evs[1]; e.Type != events.TypePlan || e.Op != "destroy" || e.Tenant != name || e.Instance != "app" {
		t.Errorf("instance plan event: %+v", e)
	}
	if e := evs[2]; e.Type != events.TypePlan || e.Op != "destroy" || e.Tenant != name || e.Instance != "" {
		t.Errorf("tenant plan event: %+v", e)
	}
	if e := evs[3]; e.Type != events.TypeApplySummary || e.Error != "" || e.Message != "Apply complete: 0 created, 0 updated, 2 destroyed." {
		t.Errorf("summary: %+v", e)
	}
	if st := status(t, w.host); len(st.Tenants) != 0 {
		t.Errorf("the tenant is left: %+v", st)
	}
}

// TestAgentStarting: an agent holds the state database before its socket
// answers. A command started in between waits for the agent and goes
// through it, instead of waiting for the lock and giving up busy.
func TestAgentStarting(t *testing.T) {
	w := newWorkspace(t, 1)
	if err := os.MkdirAll(w.state, 0o711); err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(filepath.Join(w.state, "kigumi.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ag := &standIn{bus: events.NewBus()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		time.Sleep(500 * time.Millisecond) // the agent is still starting
		ln, err := api.Listen(api.SocketPath(w.state), 0)
		if err != nil {
			done <- err
			return
		}
		done <- api.NewServer(ag, api.Options{Host: "e2e", Version: "agent-v1"}).Serve(ctx, ln)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	code, out, errOut := kigumi(t, "status", "-c", w.host, "--json", "--lock-timeout", "20s")
	var rep api.StatusReport
	if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Tenants) != 1 || rep.Tenants[0].Name != "via-agent" {
		t.Errorf("status while the agent starts: exit %d\n%s%s", code, out, errOut)
	}
}

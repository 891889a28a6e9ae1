package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/statefs"
	"maps"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The fault-injection suite runs a real `kigumi agent` over real tenants
// (users, cgroups, wasm sandboxes) and injects faults: the agent killed
// with SIGKILL while desired state changes, the runtime plugin killed,
// sandboxes killed, the statefs plugin and state helpers killed, specs
// replaced mid-write, truncated and made invalid, a state filled to its
// quota, the state volume filled, and a hostile tenant next to a
// neighbour. After
// each fault (or batch of agent kills) it waits, with a bounded poll, until
// the host converges, and asserts:
//
//   - nothing is lost: each instance's /state/counter only grows;
//   - nothing is duplicated: exactly one sandbox per instance;
//   - no orphans: nothing left of a removed tenant or instance (user, group,
//     subordinate ids, cgroups, processes, mounts, directories, records),
//     and no plugin process outliving its agent;
//   - state served: each instance's state is one live FUSE mount served by
//     one helper, the one its pid file names; no other state mount or
//     helper exists; and a helper is replaced only when it was killed
//     (otherwise agents and plugins adopt it);
//   - converged equals desired: status lists exactly the tenants and
//     instances of the spec files, each running its spec's args.
//
// KIGUMI_FAULT_SCALE multiplies the counts (`make soak` sets 10: 300 agent
// kills). The summary is logged at the end.

// faultScale is the multiplier of the fault counts, from KIGUMI_FAULT_SCALE.
func faultScale(t *testing.T) int {
	s := os.Getenv("KIGUMI_FAULT_SCALE")
	if s == "" {
		return 1
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("KIGUMI_FAULT_SCALE=%q: want a positive integer", s)
	}
	return n
}

// instSpec is one desired instance.
type instSpec struct {
	module    string
	args      []string
	memory    string
	stateSize string
	greet     string // the name the quickstart app greets as; "" for another module
}

// faultStatus is what the suite reads of `kigumi status --json`.
type faultStatus struct {
	Tenants []struct {
		Name      string `json:"name"`
		Phase     string `json:"phase"`
		UID       uint32 `json:"uid"`
		Home      string `json:"home"`
		Instances []struct {
			Name     string `json:"name"`
			Phase    string `json:"phase"`
			State    string `json:"state"`
			Pid      int    `json:"pid"`
			StateDir string `json:"state_dir"`
			LogDir   string `json:"log_dir"`
		} `json:"instances"`
	} `json:"tenants"`
}

// faultSuite is the host under test, the desired state the suite keeps in
// its spec files, and what it has seen and done.
type faultSuite struct {
	t                         *testing.T
	dir, host, tenants, state string
	id                        string
	seq                       int
	desired                   map[string]map[string]instSpec
	uids                      map[string]uint32 // every tenant seen, by name
	counters                  map[string]int    // tenant/instance: highest counter read
	goneTenants               map[string]uint32 // removed tenants and their uids
	goneInstances             map[string]bool   // tenant/instance removed from a live tenant
	agent                     *faultAgent
	agents                    int
	faults                    map[string]int
	notes                     []string       // findings, in order, once each
	noteCount                 map[string]int // how often each was found
	sandboxKilled             map[string]int // tenant/instance: sandbox kills
	converges                 int
	convergeTime, longestWait time.Duration
	// helpers are the state helpers' pids by tenant/instance at the last
	// convergence; helperKilled names the instances whose helper the
	// suite killed since, which may have a new one.
	helpers                    map[string]int
	helperKilled               map[string]bool
	seenHelpers                map[string]int // by the last check of the invariants
	neighbourApplies, pidCheck int
}

// faultAgent is one `kigumi agent` run, its stdout lines collected and its
// stderr in a file.
type faultAgent struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func newFaultSuite(t *testing.T) *faultSuite {
	var b [3]byte
	rand.Read(b[:])
	dir, err := os.MkdirTemp("", "kigumi-faults-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &faultSuite{t: t, dir: dir, host: filepath.Join(dir, "host.hcl"), tenants: filepath.Join(dir, "tenants"),
		state: filepath.Join(dir, "state"), id: hex.EncodeToString(b[:]),
		desired: map[string]map[string]instSpec{}, uids: map[string]uint32{}, counters: map[string]int{},
		goneTenants: map[string]uint32{}, goneInstances: map[string]bool{}, faults: map[string]int{}, noteCount: map[string]int{}, sandboxKilled: map[string]int{},
		helpers: map[string]int{}, helperKilled: map[string]bool{}}
	for _, d := range []string{s.tenants, s.state} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The whole state volume is a small tmpfs, so that a tenant can fill it.
	if err := unix.Mount("tmpfs", s.state, "tmpfs", 0, "size=128m,mode=0755"); err != nil {
		t.Fatalf("mount the state tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if s.agent != nil {
			s.agent.cmd.Process.Signal(syscall.SIGKILL)
			s.agent.wait()
		}
		exec.Command(kigumiBin, "destroy", "-c", s.host, "--auto-approve").Run()
		if err := unix.Unmount(s.state, 0); err != nil {
			t.Errorf("unmount the state tmpfs: %v", err)
			unix.Unmount(s.state, unix.MNT_DETACH)
		}
		os.RemoveAll(dir)
	})
	policies, _ := filepath.Abs("../../policies")
	writeFile(t, s.host, fmt.Sprintf(`host "faults" {
  state_dir     = %q
  artifacts_dir = %q
  policies      = [%q]
  capacity {
    cpu       = 2
    memory    = "8GiB"
    disk      = "16GiB"
    instances = 16
  }
  isolation {
    uid_base   = 63000
    subid_base = 1700000000
  }
}
runtime "wasm" {}
statefs "fuse" {}
`, s.state, filepath.Dir(appWasm), policies))
	return s
}

func (s *faultSuite) logf(format string, args ...any) {
	s.t.Helper()
	s.t.Logf("%s "+format, append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// note records a finding for the summary.
func (s *faultSuite) note(format string, args ...any) {
	s.t.Helper()
	n := fmt.Sprintf(format, args...)
	if s.noteCount[n]++; s.noteCount[n] == 1 {
		s.notes = append(s.notes, n)
	}
	s.logf("finding: %s", n)
}

// newTenant names a new tenant, unique to the run.
func (s *faultSuite) newTenant() string {
	s.seq++
	return fmt.Sprintf("fi%s%03d", s.id, s.seq)
}

func (s *faultSuite) newName() string {
	s.seq++
	return fmt.Sprintf("g%d", s.seq)
}

func appInstance(greet string) instSpec {
	return instSpec{module: appWasm, args: []string{"--name", greet, "--interval", "100ms"}, memory: "64MiB", stateSize: "4MiB", greet: greet}
}

// specText is a tenant's spec file.
func (s *faultSuite) specText(tenant string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "tenant %q {\n", tenant)
	insts := s.desired[tenant]
	for _, n := range slices.Sorted(maps.Keys(insts)) {
		in := insts[n]
		var args []string
		for _, a := range in.args {
			args = append(args, strconv.Quote(a))
		}
		fmt.Fprintf(&b, `  instance %q {
    runtime     = "wasm"
    module      = %q
    args        = [%s]
    resources {
      memory = %q
      cpu    = 0.1
    }
    state {
      size = %q
    }
    permissions = ["state.write", "clock"]
  }
`, n, in.module, strings.Join(args, ", "), in.memory, in.stateSize)
	}
	b.WriteString("}\n")
	return b.String()
}

func (s *faultSuite) specPath(tenant string) string { return filepath.Join(s.tenants, tenant+".hcl") }

// writeSpec writes a tenant's spec file atomically.
func (s *faultSuite) writeSpec(tenant string) {
	s.t.Helper()
	tmp := filepath.Join(s.tenants, "."+tenant+".tmp")
	writeFile(s.t, tmp, s.specText(tenant))
	if err := os.Rename(tmp, s.specPath(tenant)); err != nil {
		s.t.Fatal(err)
	}
}

// removeTenant deletes a tenant's spec file.
func (s *faultSuite) removeTenant(tenant string) {
	s.t.Helper()
	if err := os.Remove(s.specPath(tenant)); err != nil {
		s.t.Fatal(err)
	}
	delete(s.desired, tenant)
	s.goneTenants[tenant] = s.uids[tenant] // 0 if never seen running
	for k := range s.counters {
		if strings.HasPrefix(k, tenant+"/") {
			delete(s.counters, k)
		}
	}
}

// mutate changes the desired state at random: a tenant added or removed,
// an instance added or removed, an instance's args changed.
func (s *faultSuite) mutate() string {
	s.t.Helper()
	var apps []string // tenants running only the app
	total := 0
	for n, insts := range s.desired {
		total += len(insts)
		if insts[slices.Sorted(maps.Keys(insts))[0]].greet != "" {
			apps = append(apps, n)
		}
	}
	slices.Sort(apps)
	for {
		switch mrand.IntN(5) {
		case 0: // add a tenant
			if len(s.desired) >= 4 || total >= 8 {
				continue
			}
			n := s.newTenant()
			s.desired[n] = map[string]instSpec{"a": appInstance(s.newName())}
			s.writeSpec(n)
			return "add tenant " + n
		case 1: // remove a tenant
			if len(apps) <= 1 {
				continue
			}
			n := apps[mrand.IntN(len(apps))]
			s.removeTenant(n)
			return "remove tenant " + n
		case 2: // change an instance's args
			if len(apps) == 0 {
				continue
			}
			n := apps[mrand.IntN(len(apps))]
			insts := slices.Sorted(maps.Keys(s.desired[n]))
			i := insts[mrand.IntN(len(insts))]
			s.desired[n][i] = appInstance(s.newName())
			s.writeSpec(n)
			return "change args of " + n + "/" + i
		case 3: // add an instance
			if len(apps) == 0 || total >= 8 {
				continue
			}
			n := apps[mrand.IntN(len(apps))]
			s.seq++
			i := fmt.Sprintf("i%d", s.seq)
			s.desired[n][i] = appInstance(s.newName())
			s.writeSpec(n)
			return "add instance " + n + "/" + i
		case 4: // remove an instance
			var multi []string
			for _, n := range apps {
				if len(s.desired[n]) > 1 {
					multi = append(multi, n)
				}
			}
			if len(multi) == 0 {
				continue
			}
			n := multi[mrand.IntN(len(multi))]
			insts := slices.Sorted(maps.Keys(s.desired[n]))
			i := insts[mrand.IntN(len(insts))]
			delete(s.desired[n], i)
			delete(s.counters, n+"/"+i)
			s.goneInstances[n+"/"+i] = true
			s.writeSpec(n)
			return "remove instance " + n + "/" + i
		}
	}
}

// startAgent starts an agent; its stderr goes to a file of the workspace.
func (s *faultSuite) startAgent() {
	s.t.Helper()
	s.agents++
	a := &faultAgent{cmd: exec.Command(kigumiBin, "agent", "-c", s.host, "-resync", "500ms"), done: make(chan struct{})}
	out, err := a.cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(s.dir, fmt.Sprintf("agent-%03d.log", s.agents)))
	if err != nil {
		s.t.Fatal(err)
	}
	a.cmd.Stderr = logf
	if err := a.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	logf.Close()
	go func() {
		defer close(a.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			a.mu.Lock()
			a.lines = append(a.lines, sc.Text())
			a.mu.Unlock()
		}
	}()
	s.agent = a
	// Until the agent listens, a CLI command would not use it: it would
	// open the state database itself and wait for the agent's lock.
	if !a.waitFor(0, time.Minute, "Agent for host") {
		s.t.Fatalf("the agent does not start:\n%s", a.since(0))
	}
}

func (a *faultAgent) wait() error {
	err := a.cmd.Wait()
	<-a.done
	return err
}

func (a *faultAgent) mark() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.lines)
}

// waitFor waits up to d for a line after mark holding every one of parts.
func (a *faultAgent) waitFor(mark int, d time.Duration, parts ...string) bool {
	deadline := time.Now().Add(d)
	for {
		a.mu.Lock()
		for _, l := range a.lines[mark:] {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(l, p)
			}
			if ok {
				a.mu.Unlock()
				return true
			}
		}
		a.mu.Unlock()
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (a *faultAgent) since(mark int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.lines[mark:], "\n")
}

// killAgent kills the agent with SIGKILL.
func (s *faultSuite) killAgent() {
	s.t.Helper()
	s.agent.cmd.Process.Signal(syscall.SIGKILL)
	s.agent.wait()
	s.agent = nil
	s.faults["agent SIGKILL"]++
}

// status reads `kigumi status --json`.
func (s *faultSuite) status() (faultStatus, error) {
	var st faultStatus
	code, out, errOut := kigumi(s.t, "status", "-c", s.host, "--json")
	if code != 0 {
		return st, fmt.Errorf("status exit %d: %s", code, strings.TrimSpace(errOut))
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("status output: %w", err)
	}
	return st, nil
}

// proc is one process of the host, as the checks see it.
type proc struct {
	pid, ppid int
	uid       uint32
	zombie    bool
	cmdline   string
	exe       string
	memcg     string // the memory hierarchy's cgroup path
}

func processes() []proc {
	ents, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		p := proc{pid: pid}
		for _, line := range strings.Split(string(st), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "State":
				p.zombie = strings.HasPrefix(v, "Z") || strings.HasPrefix(v, "X")
			case "PPid":
				p.ppid, _ = strconv.Atoi(v)
			case "Uid":
				if f := strings.Fields(v); len(f) > 0 {
					u, _ := strconv.ParseUint(f[0], 10, 32)
					p.uid = uint32(u)
				}
			}
		}
		cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		p.cmdline = strings.TrimSpace(strings.ReplaceAll(string(cl), "\x00", " "))
		p.exe, _ = os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		for _, line := range strings.Split(string(cg), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) == 3 && slices.Contains(strings.Split(parts[1], ","), "memory") {
				p.memcg = parts[2]
			}
		}
		out = append(out, p)
	}
	return out
}

// violations checks every invariant once and returns what does not hold.
// lost is set when a counter went down: that never heals.
func (s *faultSuite) violations() (problems []string, lost []string) {
	st, err := s.status()
	if err != nil {
		return []string{err.Error()}, nil
	}
	procs := processes()
	sandboxes := map[string][]int{} // tenant/instance -> sandbox pids
	prefix := "/kigumi/fi" + s.id
	for _, p := range procs {
		if p.zombie || !strings.Contains(p.cmdline, "__wasm-sandbox") {
			continue
		}
		switch {
		case strings.HasPrefix(p.memcg, prefix):
			key := strings.TrimPrefix(p.memcg, "/kigumi/")
			sandboxes[key] = append(sandboxes[key], p.pid)
		case p.exe == kigumiBin && !strings.HasPrefix(p.memcg, "/kigumi/"):
			// Ours (only this test runs kigumiBin now), in no instance's cgroup.
			problems = append(problems, fmt.Sprintf("sandbox %d runs outside every instance cgroup (%s)", p.pid, p.memcg))
		}
	}
	seen := map[string]bool{}
	var recorded []string // desired instances that are recorded
	for _, ten := range st.Tenants {
		seen[ten.Name] = true
		if ten.UID != 0 {
			s.uids[ten.Name] = ten.UID
		}
		want, ok := s.desired[ten.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("tenant %s (%s) is recorded, not desired", ten.Name, ten.Phase))
			continue
		}
		if ten.Phase != "ready" {
			problems = append(problems, fmt.Sprintf("tenant %s is %s", ten.Name, ten.Phase))
		}
		got := map[string]bool{}
		for _, in := range ten.Instances {
			key := ten.Name + "/" + in.Name
			got[in.Name] = true
			w, ok := want[in.Name]
			if !ok {
				problems = append(problems, fmt.Sprintf("instance %s is recorded, not desired", key))
				continue
			}
			recorded = append(recorded, key)
			if in.Phase != "ready" || in.State != "running" || in.Pid == 0 {
				problems = append(problems, fmt.Sprintf("instance %s is %s/%s pid %d", key, in.Phase, in.State, in.Pid))
				continue
			}
			if sb := sandboxes[key]; len(sb) != 1 || sb[0] != in.Pid {
				problems = append(problems, fmt.Sprintf("instance %s: sandboxes %v, status says pid %d", key, sb, in.Pid))
			}
			if cg := sandboxPids(ten.Name, in.Name); len(cg) != 1 || cg[0] != in.Pid {
				problems = append(problems, fmt.Sprintf("instance %s: its memory cgroup holds %v, status says pid %d", key, cg, in.Pid))
			}
			if w.greet == "" {
				continue
			}
			if g := lastGreeting(filepath.Join(in.LogDir, "stdout.log")); g != w.greet {
				problems = append(problems, fmt.Sprintf("instance %s runs as %q, its spec says %q", key, g, w.greet))
			}
			if data, err := os.ReadFile(filepath.Join(in.StateDir, "counter")); err == nil {
				n, err := strconv.Atoi(strings.TrimSpace(string(data)))
				switch {
				case err != nil:
					problems = append(problems, fmt.Sprintf("instance %s: counter %q", key, data))
				case n < s.counters[key]:
					lost = append(lost, fmt.Sprintf("instance %s: counter went from %d down to %d", key, s.counters[key], n))
				default:
					s.counters[key] = n
				}
			} else if s.counters[key] > 0 {
				problems = append(problems, fmt.Sprintf("instance %s: counter: %v", key, err))
			}
		}
		for n := range want {
			if !got[n] {
				problems = append(problems, fmt.Sprintf("instance %s/%s is desired, not recorded", ten.Name, n))
			}
		}
	}
	for n := range s.desired {
		if !seen[n] {
			problems = append(problems, fmt.Sprintf("tenant %s is desired, not recorded", n))
		}
	}
	for key, pids := range sandboxes {
		t, i, _ := strings.Cut(key, "/")
		if _, ok := s.desired[t][i]; !ok {
			problems = append(problems, fmt.Sprintf("sandboxes %v of %s, which is not desired", pids, key))
		}
	}
	stateProblems, helpers := s.stateViolations(recorded, procs)
	problems = append(problems, stateProblems...)
	s.seenHelpers = helpers
	// No plugin process outlives its agent; sandboxes and state helpers
	// are detached to outlive it.
	agentPid := 0
	if s.agent != nil {
		agentPid = s.agent.cmd.Process.Pid
	}
	for _, p := range procs {
		if p.zombie || p.exe != kigumiBin || p.pid == agentPid || p.ppid == agentPid || p.ppid == os.Getpid() ||
			strings.Contains(p.cmdline, "__wasm-sandbox") || strings.Contains(p.cmdline, statefs.HelperCommand) {
			continue
		}
		problems = append(problems, fmt.Sprintf("process %d (%s, parent %d) outlived its agent", p.pid, p.cmdline, p.ppid))
	}
	for t, uid := range s.goneTenants {
		problems = append(problems, s.tenantLeftovers(t, uid, procs)...)
	}
	for key := range s.goneInstances {
		t, i, _ := strings.Cut(key, "/")
		if _, live := s.desired[t]; !live {
			continue // the tenant's check covers it
		}
		for _, p := range []string{filepath.Join(s.state, "state", t, i), filepath.Join(s.state, "run", t, i),
			filepath.Join(s.state, "state", t, ".data", i), filepath.Join(s.state, "state", t, ".run", i),
			filepath.Join(s.state, "state", t, ".checkpoints", i), filepath.Join("/sys/fs/cgroup/memory/kigumi", t, i)} {
			if _, err := os.Lstat(p); err == nil {
				problems = append(problems, fmt.Sprintf("removed instance %s: %s is left", key, p))
			}
		}
	}
	return problems, lost
}

// stateViolations checks the state of the recorded instances (keys
// tenant/instance): each is one live FUSE mount at its state directory,
// served by the running helper its pid file names, and there is no other
// state mount below the volume and no other helper of this binary. It
// returns the helpers' pids by instance.
func (s *faultSuite) stateViolations(recorded []string, procs []proc) (problems []string, helpers map[string]int) {
	live := map[int]bool{}
	for _, p := range procs {
		if !p.zombie && p.exe == kigumiBin && strings.Contains(p.cmdline, statefs.HelperCommand) {
			live[p.pid] = true
		}
	}
	mounts := s.stateMounts()
	helpers = map[string]int{}
	served := map[int]bool{}
	for _, key := range recorded {
		t, i, _ := strings.Cut(key, "/")
		mnt := filepath.Join(s.state, "state", t, i)
		if n := mounts[mnt]; n != 1 {
			problems = append(problems, fmt.Sprintf("instance %s: %d state mounts at %s, want 1", key, n, mnt))
		}
		delete(mounts, mnt)
		var rec struct {
			Pid int `json:"pid"`
		}
		data, err := os.ReadFile(filepath.Join(s.state, "state", t, ".run", i, "helper.json"))
		switch {
		case err != nil || json.Unmarshal(data, &rec) != nil:
			problems = append(problems, fmt.Sprintf("instance %s: no state helper pid file (%v)", key, err))
		case !live[rec.Pid]:
			problems = append(problems, fmt.Sprintf("instance %s: its state helper %d does not run", key, rec.Pid))
		default:
			helpers[key] = rec.Pid
			served[rec.Pid] = true
		}
	}
	for _, mnt := range slices.Sorted(maps.Keys(mounts)) {
		problems = append(problems, fmt.Sprintf("state mount %s (%d×) of no recorded instance is left", mnt, mounts[mnt]))
	}
	for _, pid := range slices.Sorted(maps.Keys(live)) {
		if !served[pid] {
			problems = append(problems, fmt.Sprintf("state helper %d serves no recorded instance", pid))
		}
	}
	return problems, helpers
}

// stateMounts counts the kigumi state filesystems (quotafs) mounted at
// each mount point below the suite's volume.
func (s *faultSuite) stateMounts() map[string]int {
	out := map[string]int{}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || sep+2 >= len(f) {
			continue
		}
		if strings.HasPrefix(f[sep+1], "fuse") && f[sep+2] == "kigumi-state" && strings.HasPrefix(f[4], s.state+"/") {
			out[f[4]]++
		}
	}
	return out
}

// tenantLeftovers lists what is left of a removed tenant.
func (s *faultSuite) tenantLeftovers(t string, uid uint32, procs []proc) []string {
	var left []string
	name := "kg-" + t
	if _, err := user.Lookup(name); err == nil {
		left = append(left, "user "+name)
	}
	if _, err := user.LookupGroup(name); err == nil {
		left = append(left, "group "+name)
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid", "/etc/passwd", "/etc/group"} {
		data, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, name+":") {
				left = append(left, f+" line "+line)
			}
		}
	}
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hier {
		if _, err := os.Lstat(filepath.Join(h, "kigumi", t)); err == nil {
			left = append(left, "cgroup "+filepath.Join(h, "kigumi", t))
		}
	}
	if uid != 0 {
		for _, p := range procs {
			if p.uid == uid && !p.zombie {
				left = append(left, fmt.Sprintf("process %d (%s) of uid %d", p.pid, p.cmdline, uid))
			}
		}
	}
	for _, pat := range []string{"*/" + t, "*/*/" + t, "*/*/*/" + t} {
		m, _ := filepath.Glob(filepath.Join(s.state, pat))
		for _, p := range m {
			left = append(left, "directory "+p)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.Contains(f[4]+"/", "/"+t+"/") {
			left = append(left, "mount "+f[4])
		}
	}
	for i, l := range left {
		left[i] = "removed tenant " + t + ": " + l + " is left"
	}
	return left
}

// lastGreeting returns the name of the last "... from NAME!" line of an
// instance's stdout log: the args of the run under way.
func lastGreeting(log string) string {
	data, _ := os.ReadFile(log)
	g := ""
	for _, l := range strings.Split(string(data), "\n") {
		if i := strings.LastIndex(l, " from "); i >= 0 && strings.HasSuffix(l, "!") {
			g = l[i+len(" from ") : len(l)-1]
		}
	}
	return g
}

// converge waits, with a bounded poll, until every invariant holds.
func (s *faultSuite) converge(after string) {
	s.t.Helper()
	s.convergeWithin(after, 3*time.Minute)
}

// convergeWithin is converge with a deadline of its own.
func (s *faultSuite) convergeWithin(after string, limit time.Duration) {
	s.t.Helper()
	start := time.Now()
	deadline := start.Add(limit)
	var problems []string
	for {
		var lost []string
		problems, lost = s.violations()
		if len(lost) > 0 {
			s.t.Fatalf("after %s: state lost:\n%s", after, strings.Join(lost, "\n"))
		}
		if len(problems) == 0 {
			break
		}
		if time.Now().After(deadline) {
			out := ""
			if s.agent != nil {
				out = s.agent.since(max(0, s.agent.mark()-60))
			}
			s.t.Fatalf("after %s: no convergence in %v:\n%s\nlast agent lines:\n%s", after, time.Since(start).Round(time.Millisecond),
				strings.Join(problems, "\n"), out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Helpers are adopted across agent, plugin and sandbox restarts: only
	// a killed one is replaced.
	for key, pid := range s.seenHelpers {
		if old, ok := s.helpers[key]; ok && old != pid && !s.helperKilled[key] {
			s.t.Fatalf("after %s: the state helper of %s changed from %d to %d, though it was not killed", after, key, old, pid)
		}
	}
	s.helpers = s.seenHelpers
	clear(s.helperKilled)
	d := time.Since(start)
	s.converges++
	s.convergeTime += d
	s.longestWait = max(s.longestWait, d)
}

// instancePids returns the sandbox pids of a tenant's instances.
func (s *faultSuite) instancePids(tenant string) map[string][]int {
	out := map[string][]int{}
	for i := range s.desired[tenant] {
		out[i] = sandboxPids(tenant, i)
	}
	return out
}

// appTenant returns a desired tenant running only the app.
func (s *faultSuite) appTenant() string {
	for _, n := range slices.Sorted(maps.Keys(s.desired)) {
		insts := s.desired[n]
		if insts[slices.Sorted(maps.Keys(insts))[0]].greet != "" {
			return n
		}
	}
	s.t.Fatal("no app tenant")
	return ""
}

func TestFaults(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the fault suite needs root")
	}
	scale := faultScale(t)
	began := time.Now()
	s := newFaultSuite(t)
	for range 3 {
		n := s.newTenant()
		s.desired[n] = map[string]instSpec{"a": appInstance(s.newName())}
		s.writeSpec(n)
	}
	s.startAgent()
	s.converge("the first start")

	s.agentKills(30 * scale)
	for range scale {
		// Fresh tenants and instances between rounds.
		s.mutate()
		s.mutate()
		s.converge("changes between rounds")
		s.pluginKill()
		s.statefsPluginKill()
		s.sandboxKills(3)
		s.helperKills(2)
		s.specFaults()
	}
	// The hostile tenant and the full volume take a minute each: a soak
	// repeats them less often than the kills.
	for range max(1, scale/5) {
		s.quota()
		s.hostile()
		s.fill()
	}

	// Everything removed: nothing is left.
	for _, n := range slices.Sorted(maps.Keys(s.desired)) {
		s.removeTenant(n)
	}
	s.converge("removing every tenant")
	a := s.agent
	a.cmd.Process.Signal(syscall.SIGTERM)
	if err := a.wait(); err != nil {
		t.Errorf("the agent's exit on SIGTERM: %v", err)
	}
	s.agent = nil
	if problems, _ := s.violations(); len(problems) > 0 {
		t.Errorf("after the agent stopped:\n%s", strings.Join(problems, "\n"))
	}

	var b strings.Builder
	fmt.Fprintf(&b, "fault-injection summary (scale %d, %v):\n", scale, time.Since(began).Round(time.Second))
	for _, k := range slices.Sorted(maps.Keys(s.faults)) {
		fmt.Fprintf(&b, "  %-44s %d\n", k, s.faults[k])
	}
	fmt.Fprintf(&b, "  agents started: %d; tenants made: %d; convergences checked: %d (mean %v, longest %v)\n",
		s.agents, len(s.uids), s.converges, (s.convergeTime / time.Duration(max(1, s.converges))).Round(time.Millisecond), s.longestWait.Round(time.Millisecond))
	fmt.Fprintf(&b, "  neighbour applies converged while the hostile tenant worked: %d\n", s.neighbourApplies)
	fmt.Fprintf(&b, "  invariants after every fault: counters only grew, one sandbox per instance, one served FUSE mount and helper per state (adopted, not replaced), no orphans (no leftover mounts or helpers), converged == desired\n")
	for _, n := range s.notes {
		fmt.Fprintf(&b, "  note (%d×): %s\n", s.noteCount[n], n)
	}
	t.Log(b.String())
}

// agentKills kills the agent n times with SIGKILL, at random points of its
// reconciles, changing the desired state before each kill; it checks the
// invariants after each batch of one to three kills.
func (s *faultSuite) agentKills(n int) {
	s.t.Helper()
	start := time.Now()
	for kills := 0; kills < n; {
		batch := 1 + mrand.IntN(3)
		var what []string
		for b := 0; b < batch && kills < n; b++ {
			if s.agent == nil {
				s.startAgent()
			}
			for range 1 + mrand.IntN(2) {
				what = append(what, s.mutate())
			}
			m := s.agent.mark()
			if mrand.IntN(2) == 0 {
				// Mid-action: after an action begins.
				if s.agent.waitFor(m, 10*time.Second, "action_begin") {
					time.Sleep(time.Duration(mrand.IntN(400)) * time.Millisecond)
					s.faults["agent SIGKILL: during an action"]++
				}
			} else {
				time.Sleep(time.Duration(mrand.IntN(1500)) * time.Millisecond)
			}
			s.killAgent()
			kills++
		}
		s.startAgent()
		t0 := time.Now()
		s.converge(fmt.Sprintf("%d agent kills (%s)", kills, strings.Join(what, "; ")))
		s.logf("%d agent kills: converged in %v (%s)", kills, time.Since(t0).Round(time.Millisecond), strings.Join(what, "; "))
	}
	s.logf("%d agent kills in %v", n, time.Since(start).Round(time.Millisecond))
}

// pluginKill kills the runtime plugin process, then changes an instance's
// args, which needs the plugin.
func (s *faultSuite) pluginKill() {
	s.t.Helper()
	agentPid := s.agent.cmd.Process.Pid
	var victims []int
	for _, p := range processes() {
		if p.ppid == agentPid && strings.Contains(p.cmdline, "plugin serve runtime wasm") && !p.zombie {
			victims = append(victims, p.pid)
		}
	}
	if len(victims) == 0 {
		s.t.Fatalf("no runtime plugin process under the agent (pid %d)", agentPid)
	}
	v := victims[mrand.IntN(len(victims))]
	m := s.agent.mark()
	syscall.Kill(v, syscall.SIGKILL)
	s.faults["runtime plugin SIGKILL"]++
	n := s.appTenant()
	i := slices.Sorted(maps.Keys(s.desired[n]))[0]
	s.desired[n][i] = appInstance(s.newName())
	s.writeSpec(n)
	s.converge(fmt.Sprintf("killing the runtime plugin %d", v))
	if !s.agent.waitFor(m, 0, "plugin_restart") {
		s.t.Errorf("no plugin_restart event after the runtime plugin %d was killed", v)
	}
}

// statefsPluginKill kills the statefs plugin process, then changes an
// instance's args and adds an instance, which need the plugin: its
// relaunch adopts every running state helper (converge checks that none
// was replaced).
func (s *faultSuite) statefsPluginKill() {
	s.t.Helper()
	agentPid := s.agent.cmd.Process.Pid
	var victims []int
	for _, p := range processes() {
		if p.ppid == agentPid && strings.Contains(p.cmdline, "plugin serve statefs fuse") && !p.zombie {
			victims = append(victims, p.pid)
		}
	}
	if len(victims) != 1 {
		s.t.Fatalf("statefs plugin processes under the agent (pid %d): %v, want one", agentPid, victims)
	}
	m := s.agent.mark()
	syscall.Kill(victims[0], syscall.SIGKILL)
	s.faults["statefs plugin SIGKILL"]++
	n := s.appTenant()
	i := slices.Sorted(maps.Keys(s.desired[n]))[0]
	s.desired[n][i] = appInstance(s.newName())
	s.seq++
	s.desired[n][fmt.Sprintf("i%d", s.seq)] = appInstance(s.newName())
	s.writeSpec(n)
	s.converge(fmt.Sprintf("killing the statefs plugin %d", victims[0]))
	if !s.agent.waitFor(m, 0, "plugin_restart") {
		s.t.Errorf("no plugin_restart event after the statefs plugin %d was killed", victims[0])
	}
}

// helperKills kills the state helpers of n instances with SIGKILL, one at
// a time, while their sandboxes write: the mount goes stale (ENOTCONN),
// the sandbox fails, and its restart must clear the stale mount and serve
// the state again from a new helper, with the counter kept; the other
// instances' helpers keep serving.
func (s *faultSuite) helperKills(n int) {
	s.t.Helper()
	keys := slices.Sorted(maps.Keys(s.helpers))
	mrand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	for _, key := range keys[:min(n, len(keys))] {
		pid, before := s.helpers[key], s.counters[key]
		syscall.Kill(pid, syscall.SIGKILL)
		s.faults["state helper SIGKILL (stale mount)"]++
		s.helperKilled[key] = true
		s.converge("killing the state helper of " + key)
		if s.helpers[key] == pid {
			s.t.Fatalf("instance %s: the killed state helper %d is still named", key, pid)
		}
		deadline := time.Now().Add(time.Minute)
		for s.counters[key] <= before {
			if time.Now().After(deadline) {
				s.t.Fatalf("instance %s: the counter stays at %d after its state helper was killed", key, s.counters[key])
			}
			time.Sleep(100 * time.Millisecond)
			s.converge("the state of " + key + " served again")
		}
	}
}

// sandboxKills kills n sandboxes, one at a time, each instance's once.
func (s *faultSuite) sandboxKills(n int) {
	s.t.Helper()
	var keys []string
	for t, insts := range s.desired {
		for i, in := range insts {
			if in.greet != "" {
				keys = append(keys, t+"/"+i)
			}
		}
	}
	// The least killed first: an instance's restart backoff doubles with
	// each kill (a crash loop), which would only slow the suite down.
	mrand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	slices.SortStableFunc(keys, func(a, b string) int { return s.sandboxKilled[a] - s.sandboxKilled[b] })
	for _, key := range keys[:min(n, len(keys))] {
		t, i, _ := strings.Cut(key, "/")
		pids := sandboxPids(t, i)
		if len(pids) != 1 {
			s.t.Fatalf("instance %s has sandboxes %v before the kill", key, pids)
		}
		before := s.counters[key]
		syscall.Kill(pids[0], syscall.SIGKILL)
		s.faults["sandbox SIGKILL"]++
		s.sandboxKilled[key]++
		s.converge("killing the sandbox of " + key)
		if got := sandboxPids(t, i); len(got) == 1 && got[0] == pids[0] {
			s.t.Fatalf("instance %s: the killed sandbox %d still runs", key, pids[0])
		}
		// The restarted sandbox carries on from the kept state.
		deadline := time.Now().Add(time.Minute)
		for s.counters[key] <= before {
			if time.Now().After(deadline) {
				s.t.Fatalf("instance %s: the counter stays at %d after its sandbox was restarted", key, s.counters[key])
			}
			time.Sleep(100 * time.Millisecond)
			s.converge("the restarted sandbox of " + key)
		}
	}
}

// specFaults breaks a tenant's spec file three ways: replaced mid-write,
// truncated to zero, made invalid. While the file is broken the tenant's
// instances must keep running untouched; once fixed it converges.
func (s *faultSuite) specFaults() {
	s.t.Helper()
	n := s.appTenant()
	path := s.specPath(n)
	for _, kind := range []string{"replaced mid-write", "truncated to zero", "made invalid"} {
		pids := s.instancePids(n)
		m := s.agent.mark()
		next := map[string]instSpec{}
		for i := range s.desired[n] {
			next[i] = appInstance(s.newName())
		}
		s.desired[n] = next
		full := s.specText(n)
		switch kind {
		case "replaced mid-write":
			// The first half of the new spec, as a writer caught in the
			// middle leaves it; the rest comes once the agent has seen it.
			writeFile(s.t, path, full[:len(full)/2])
		case "truncated to zero":
			if err := os.Truncate(path, 0); err != nil {
				s.t.Fatal(err)
			}
		case "made invalid":
			writeFile(s.t, path, strings.Replace(full, "runtime     = \"wasm\"", "runtime     = ", 1))
		}
		s.faults["spec "+kind]++
		if !s.agent.waitFor(m, 30*time.Second, "diagnostics", n) {
			s.t.Fatalf("spec %s: no diagnostics for %s:\n%s", kind, n, s.agent.since(m))
		}
		// A later round of reconciles on another tenant, then nothing of
		// this tenant has changed.
		m2 := s.agent.mark()
		s.agent.waitFor(m2, 5*time.Second, " reconcile ")
		if got := s.instancePids(n); fmt.Sprint(got) != fmt.Sprint(pids) {
			s.t.Fatalf("spec %s: the tenant's sandboxes changed while its spec was broken: %v -> %v\n%s", kind, pids, got, s.agent.since(m))
		}
		if out := s.agent.since(m); strings.Contains(out, "action_begin "+n) {
			s.t.Fatalf("spec %s: an action ran on the held tenant:\n%s", kind, out)
		}
		if kind == "replaced mid-write" {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				s.t.Fatal(err)
			}
			f.WriteString(full[len(full)/2:])
			f.Close()
		} else {
			writeFile(s.t, path, full)
		}
		s.converge("spec " + kind + ", then fixed")
	}
}

// stdoutHas reports whether an instance's stdout log holds text.
func (s *faultSuite) stdoutHas(tenant, instance, text string) bool {
	data, _ := os.ReadFile(filepath.Join(s.state, "run", tenant, instance, "stdout.log"))
	return bytes.Contains(data, []byte(text))
}

// hostile runs a tenant that builds a deep tree and a wide directory in its
// state, while a neighbour's spec is edited again and again and must keep
// converging; then the hostile tenant is destroyed completely.
func (s *faultSuite) hostile() {
	s.t.Helper()
	depth, files := 100000, 100000
	h := s.newTenant()
	// A state of 1 GiB has an entry quota (one per 4 KiB) above the
	// 200,000 entries it makes; quota() pushes a state past its limit.
	s.desired[h] = map[string]instSpec{"h": {module: hostileWasm, memory: "512MiB", stateSize: "1GiB",
		args: []string{"-depth", strconv.Itoa(depth), "-files", strconv.Itoa(files)}}}
	s.writeSpec(h)
	s.faults["hostile tenant (deep tree, wide directory)"]++
	start := time.Now()
	neighbour := s.appTenant()
	ni := slices.Sorted(maps.Keys(s.desired[neighbour]))[0]
	deadline := start.Add(10 * time.Minute)
	for !s.stdoutHas(h, "h", "hostile: done") {
		if time.Now().After(deadline) {
			data, _ := os.ReadFile(filepath.Join(s.state, "run", h, "h", "stderr.log"))
			s.t.Fatalf("the hostile tenant is not done after %v: %s", time.Since(start), data)
		}
		s.desired[neighbour][ni] = appInstance(s.newName())
		s.writeSpec(neighbour)
		s.converge("a neighbour's spec edit beside the hostile tenant")
		s.neighbourApplies++
	}
	built := time.Since(start)
	data, _ := os.ReadFile(filepath.Join(s.state, "run", h, "h", "stdout.log"))
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		s.note("hostile tenant says %q", l)
	}
	s.logf("the hostile tenant built %d levels and %d files in %v; %d neighbour applies meanwhile", depth, files, built.Round(time.Millisecond), s.neighbourApplies)
	s.note("hostile tenant: %d levels and %d files built in %v, %d neighbour applies converged meanwhile", depth, files, built.Round(time.Second), s.neighbourApplies)
	start = time.Now()
	s.removeTenant(h)
	// The neighbour keeps its applies while the hostile tenant is torn down.
	s.desired[neighbour][ni] = appInstance(s.newName())
	s.writeSpec(neighbour)
	s.converge("destroying the hostile tenant")
	s.note("hostile tenant destroyed completely (and the neighbour's apply converged) in %v", time.Since(start).Round(time.Millisecond))
}

// quota runs a tenant that writes into a 4 MiB state until a write
// fails: it must fail with ENOSPC at the quota, while the volume keeps its
// room and a neighbour's spec edit converges; then the tenant is removed.
func (s *faultSuite) quota() {
	s.t.Helper()
	q := s.newTenant()
	s.desired[q] = map[string]instSpec{"q": {module: hostileWasm, memory: "512MiB", stateSize: "4MiB", args: []string{"-fill"}}}
	s.writeSpec(q)
	s.faults["state filled to its quota"]++
	deadline := time.Now().Add(2 * time.Minute)
	for !s.stdoutHas(q, "q", "hostile: full") {
		if time.Now().After(deadline) {
			s.t.Fatalf("the tenant filling its state is not stopped after 2 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The filesystem fails the write with ENOSPC (tested in package
	// statefs); wazero has no ENOSPC and hands it to the module as EIO.
	out, _ := os.ReadFile(filepath.Join(s.state, "run", q, "q", "stdout.log"))
	if !bytes.Contains(out, []byte("no space left on device")) && !bytes.Contains(out, []byte("I/O error")) {
		s.t.Fatalf("the state's quota stopped the writer with %q, want ENOSPC (EIO through wazero)", out)
	}
	fi, err := os.Stat(filepath.Join(s.state, "state", q, ".data", "q", "fill"))
	if err != nil || fi.Size() != 4<<20 {
		s.t.Fatalf("the filled state holds %v (%v), want its 4 MiB quota", fi, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(s.state, &fs); err != nil || fs.Bavail*uint64(fs.Bsize) < 32<<20 {
		s.t.Fatalf("the state volume has %d bytes free (%v) with one state at its quota", fs.Bavail*uint64(fs.Bsize), err)
	}
	n := s.appTenant()
	i := slices.Sorted(maps.Keys(s.desired[n]))[0]
	s.desired[n][i] = appInstance(s.newName())
	s.writeSpec(n)
	s.converge("a neighbour's spec edit beside a state at its quota")
	s.note("state quota: a 4 MiB state stopped its writer at %d bytes (%s); the volume kept %d MiB free", fi.Size(), strings.TrimSpace(string(out)), fs.Bavail*uint64(fs.Bsize)>>20)
	s.removeTenant(q)
	s.converge("removing the tenant at its quota")
}

// fill fills the state volume from a tenant's instance: the agent must stay
// up and keep reporting; once the filling tenant is removed, everything
// converges.
func (s *faultSuite) fill() {
	s.t.Helper()
	f := s.newTenant()
	s.desired[f] = map[string]instSpec{"f": {module: hostileWasm, memory: "512MiB", stateSize: "1GiB", args: []string{"-fill"}}}
	s.writeSpec(f)
	s.faults["state volume filled (ENOSPC)"]++
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var fs unix.Statfs_t
		if err := unix.Statfs(s.state, &fs); err != nil {
			s.t.Fatal(err)
		}
		if fs.Bavail == 0 {
			break
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the state volume is not full: %d blocks free", fs.Bavail)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The volume is full: the agent stays up and keeps answering, through a
	// few rounds of reconciles, and a spec edit is tried meanwhile.
	n := s.appTenant()
	i := slices.Sorted(maps.Keys(s.desired[n]))[0]
	s.desired[n][i] = appInstance(s.newName())
	s.writeSpec(n)
	for round := range 3 {
		m := s.agent.mark()
		if !s.agent.waitFor(m, 30*time.Second, " reconcile ") {
			s.t.Fatalf("full volume: no reconcile in round %d:\n%s", round, s.agent.since(max(0, m-30)))
		}
		if _, err := s.status(); err != nil {
			s.t.Fatalf("full volume: status: %v", err)
		}
		select {
		case <-s.agent.done:
			s.t.Fatalf("the agent exited with a full volume:\n%s", s.agent.since(0))
		default:
		}
	}
	if p, _ := s.violations(); len(p) == 0 {
		s.note("full volume: the neighbour's spec edit converged anyway")
	} else {
		s.note("full volume: the agent stayed up and reported; not converged meanwhile: %s", strings.Join(p, "; "))
	}
	s.removeTenant(f)
	// The neighbours' workloads that failed on the full volume restart
	// after their crash-loop backoff: up to 5 minutes, plus 25% jitter.
	s.convergeWithin("removing the tenant that filled the state volume", 7*time.Minute)
}

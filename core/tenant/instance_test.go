package tenant

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// hostRoot is the host's cgroup root, a directory of v1 hierarchies.
const hostRoot = "/sys/fs/cgroup"

// usedHierarchies are the v1 hierarchies tenant and instance cgroups live in.
var usedHierarchies = []string{"memory", "cpu", "pids", "freezer", "blkio"}

// testCtx returns a context that ends with the test or after a minute.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// v1Manager returns a Manager for the host's cgroups, which must be v1.
func v1Manager(t *testing.T) *Manager {
	t.Helper()
	m := newManager(t)
	if m.cg.v2 || m.cg.root != hostRoot {
		t.Fatalf("host cgroups at %s are not v1 (v2=%v): these tests need v1 hierarchies", m.cg.root, m.cg.v2)
	}
	return m
}

// ensured returns a fresh tenant, made with limits, that is removed when the
// test ends.
func ensured(t *testing.T, m *Manager, limits Limits) Spec {
	t.Helper()
	s := newSpec(t, m)
	s.Limits = limits
	if _, err := m.Ensure(testCtx(t), s); err != nil {
		t.Fatal(err)
	}
	return s
}

// v1Dirs returns the cgroup directories of rel ("<tenant>" or
// "<tenant>/<instance>") in each used v1 hierarchy.
func v1Dirs(rel string) []string {
	var ds []string
	for _, h := range usedHierarchies {
		ds = append(ds, filepath.Join(hostRoot, h, "kigumi", rel))
	}
	return ds
}

// wantV1Cgroup is the description of the v1 cgroup rel.
func wantV1Cgroup(rel string) sdk.Cgroup {
	cg := sdk.Cgroup{Path: "/kigumi/" + rel}
	for _, d := range v1Dirs(rel) {
		cg.ProcsFiles = append(cg.ProcsFiles, filepath.Join(d, "cgroup.procs"))
	}
	return cg
}

// checkDirs checks that each of dirs exists (want) or not.
func checkDirs(t *testing.T, dirs []string, want bool) {
	t.Helper()
	for _, d := range dirs {
		fi, err := os.Stat(d)
		switch {
		case want && (err != nil || !fi.IsDir()):
			t.Errorf("cgroup %s: %v, want a directory", d, err)
		case !want && !errors.Is(err, fs.ErrNotExist):
			t.Errorf("cgroup %s: %v, want it gone", d, err)
		}
	}
}

// checkFiles checks the v1 cgroup files of rel; want maps
// "hierarchy/file" to content.
func checkFiles(t *testing.T, rel string, want map[string]string) {
	t.Helper()
	for key, w := range want {
		h, f, _ := strings.Cut(key, "/")
		if got := readTrim(t, filepath.Join(hostRoot, h, "kigumi", rel, f)); got != w {
			t.Errorf("%s of %s = %q, want %q", key, rel, got, w)
		}
	}
}

// v1Limits returns what the v1 limit files hold for l.
func v1Limits(l Limits) map[string]string {
	want := map[string]string{
		"memory/memory.limit_in_bytes": unlimitedMemory,
		"cpu/cpu.cfs_period_us":        "100000",
		"cpu/cpu.cfs_quota_us":         "-1",
		"pids/pids.max":                "max",
	}
	if l.MemoryBytes > 0 {
		want["memory/memory.limit_in_bytes"] = strconv.FormatInt(l.MemoryBytes, 10)
	}
	if l.MilliCPU > 0 {
		want["cpu/cpu.cfs_quota_us"] = strconv.FormatInt(l.MilliCPU*100, 10)
	}
	if l.Pids > 0 {
		want["pids/pids.max"] = strconv.FormatInt(l.Pids, 10)
	}
	return want
}

// procGone reports whether pid has exited: it is gone or a zombie.
func procGone(t *testing.T, pid int) bool {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(l, "State:"); ok {
			v = strings.TrimSpace(v)
			return strings.HasPrefix(v, "Z") || strings.HasPrefix(v, "X")
		}
	}
	return false
}

// waitKilled checks that the test's child ended by SIGKILL, reaping it.
func waitKilled(t *testing.T, what string, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("%s ended with %v, want SIGKILL", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("%s still runs", what)
	}
}

// startCmdAsUser starts argv as uid with stdin (a file, so that Wait does
// not wait for it to be drained), returning the command and a
// channel that yields its Wait error; it is killed and reaped at the end.
func startCmdAsUser(t *testing.T, uid uint32, stdin *os.File, argv ...string) (*exec.Cmd, <-chan error) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done, waited := make(chan error, 1), make(chan struct{})
	go func() {
		done <- cmd.Wait()
		close(waited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-waited
	})
	return cmd, done
}

// join puts pid into every cgroup.procs file of cg.
func join(t *testing.T, cg sdk.Cgroup, pid int) {
	t.Helper()
	if len(cg.ProcsFiles) == 0 {
		t.Fatalf("cgroup %+v has no procs files", cg)
	}
	for _, f := range cg.ProcsFiles {
		if err := os.WriteFile(f, []byte(strconv.Itoa(pid)), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// waitProcs waits until list reports n processes and returns them.
func waitProcs(t *testing.T, n int, list func() ([]int, error)) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, err := list()
		if err != nil {
			t.Fatal(err)
		}
		if len(pids) == n {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes %v, want %d", pids, n)
		}
		time.Sleep(pollInterval)
	}
}

func TestEnsureInstance(t *testing.T) {
	tests := []struct {
		name     string
		instance string
		tenant   Limits
		// first is written by the first two calls, then changed by the third.
		first, changed Limits
	}{
		{
			name:     "limited in a limited tenant",
			instance: "web",
			tenant:   Limits{MemoryBytes: 256 << 20, MilliCPU: 2000, Pids: 200},
			first:    Limits{MemoryBytes: 64 << 20, MilliCPU: 500, Pids: 20},
			changed:  Limits{MemoryBytes: 128 << 20, MilliCPU: 1000, Pids: 40},
		},
		{
			name:     "unlimited becomes limited",
			instance: "db-1",
			first:    Limits{},
			changed:  Limits{MemoryBytes: 32 << 20, MilliCPU: 10, Pids: 1},
		},
		{
			name:     "limited becomes unlimited, longest name",
			instance: "a" + strings.Repeat("b", 62),
			first:    Limits{MemoryBytes: 16 << 20, MilliCPU: 250, Pids: 5},
			changed:  Limits{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			m := v1Manager(t)
			s := ensured(t, m, tt.tenant)
			rel := s.Tenant + "/" + tt.instance

			cg, err := m.EnsureInstance(ctx, s.Tenant, tt.instance, tt.first)
			if err != nil {
				t.Fatal(err)
			}
			if want := wantV1Cgroup(rel); !reflect.DeepEqual(cg, want) {
				t.Errorf("EnsureInstance = %+v, want %+v", cg, want)
			}
			checkDirs(t, v1Dirs(rel), true)
			for _, f := range cg.ProcsFiles {
				if _, err := os.Stat(f); err != nil {
					t.Errorf("procs file: %v", err)
				}
			}
			checkFiles(t, rel, v1Limits(tt.first))
			checkFiles(t, s.Tenant, v1Limits(tt.tenant))

			again, err := m.EnsureInstance(ctx, s.Tenant, tt.instance, tt.first)
			if err != nil {
				t.Fatalf("second EnsureInstance: %v", err)
			}
			if !reflect.DeepEqual(again, cg) {
				t.Errorf("second EnsureInstance = %+v, want %+v", again, cg)
			}
			checkFiles(t, rel, v1Limits(tt.first))

			changed, err := m.EnsureInstance(ctx, s.Tenant, tt.instance, tt.changed)
			if err != nil {
				t.Fatalf("EnsureInstance with changed limits: %v", err)
			}
			if !reflect.DeepEqual(changed, cg) {
				t.Errorf("EnsureInstance with changed limits = %+v, want %+v", changed, cg)
			}
			checkFiles(t, rel, v1Limits(tt.changed))
			checkFiles(t, s.Tenant, v1Limits(tt.tenant))
		})
	}
}

func TestEnsureInstanceErrors(t *testing.T) {
	m := v1Manager(t)
	s := ensured(t, m, Limits{})
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	missing := "t" + hex.EncodeToString(b) // never made
	tests := []struct {
		name             string
		tenant, instance string
		// removeOK says whether RemoveInstance accepts the names.
		removeOK bool
	}{
		{"empty tenant", "", "web", false},
		{"upper-case tenant", "Bad", "web", false},
		{"tenant with a slash", s.Tenant + "/x", "web", false},
		{"dot-dot tenant", "..", "web", false},
		{"tenant name too long", "a" + strings.Repeat("b", 29), "web", false},
		{"empty instance", s.Tenant, "", false},
		{"upper-case instance", s.Tenant, "Web", false},
		{"instance starting with a digit", s.Tenant, "1web", false},
		{"instance starting with a dash", s.Tenant, "-web", false},
		{"instance with a slash", s.Tenant, "a/b", false},
		{"dot-dot instance", s.Tenant, "..", false},
		{"instance with a dot", s.Tenant, "web.1", false},
		{"instance name too long", s.Tenant, "a" + strings.Repeat("b", 63), false},
		{"tenant never made", missing, "web", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			before := listDirs(t, v1Dirs(s.Tenant))
			if cg, err := m.EnsureInstance(ctx, tt.tenant, tt.instance, Limits{}); err == nil {
				t.Errorf("EnsureInstance(%q, %q) = %+v, want an error", tt.tenant, tt.instance, cg)
			}
			if err := m.RemoveInstance(ctx, tt.tenant, tt.instance); (err == nil) != tt.removeOK {
				t.Errorf("RemoveInstance(%q, %q) = %v, want error %v", tt.tenant, tt.instance, err, !tt.removeOK)
			}
			if after := listDirs(t, v1Dirs(s.Tenant)); !slices.Equal(after, before) {
				t.Errorf("tenant cgroups hold %v, want %v", after, before)
			}
			checkDirs(t, v1Dirs(missing), false)
		})
	}
}

// listDirs returns the subdirectories of dirs.
func listDirs(t *testing.T, dirs []string) []string {
	t.Helper()
	var sub []string
	for _, d := range dirs {
		es, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.IsDir() {
				sub = append(sub, filepath.Join(d, e.Name()))
			}
		}
	}
	return sub
}

func TestRemoveInstance(t *testing.T) {
	tests := []struct {
		name string
		// make says whether EnsureInstance makes the instance first.
		make bool
		// argv runs in the instance's cgroup, if set; forks says how many
		// children it starts once it is in the cgroup.
		argv  []string
		forks int
		// sibling adds another instance, with a process, that must survive.
		sibling bool
	}{
		{name: "with a process", make: true, argv: []string{"sleep", "60"}},
		{name: "with forking processes", make: true, argv: []string{"sh", "-c", "read x; sleep 60 & sleep 60 & wait"}, forks: 2},
		{name: "empty", make: true},
		{name: "sibling survives", make: true, argv: []string{"sleep", "60"}, sibling: true},
		{name: "never made"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			m := v1Manager(t)
			tl := Limits{MemoryBytes: 128 << 20, MilliCPU: 1000, Pids: 50}
			s := ensured(t, m, tl)
			rel := s.Tenant + "/web"
			var pids []int
			var done <-chan error
			if tt.make {
				cg, err := m.EnsureInstance(ctx, s.Tenant, "web", Limits{Pids: 10})
				if err != nil {
					t.Fatal(err)
				}
				if tt.argv != nil {
					r, w, err := os.Pipe()
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { w.Close() })
					var cmd *exec.Cmd
					cmd, done = startCmdAsUser(t, s.UID, r, tt.argv...)
					r.Close()
					join(t, cg, cmd.Process.Pid)
					if tt.forks > 0 {
						if _, err := io.WriteString(w, "go\n"); err != nil {
							t.Fatal(err)
						}
					}
					list := func() ([]int, error) { return m.Processes(s.Tenant) }
					pids = waitProcs(t, 1+tt.forks, list)
					if !slices.Contains(pids, cmd.Process.Pid) {
						t.Errorf("Processes = %v, want %d among them", pids, cmd.Process.Pid)
					}
				}
			}
			var sibDone <-chan error
			var sibPid int
			if tt.sibling {
				cg, err := m.EnsureInstance(ctx, s.Tenant, "db", Limits{})
				if err != nil {
					t.Fatal(err)
				}
				var cmd *exec.Cmd
				cmd, sibDone = startAsUser(t, s.UID)
				sibPid = cmd.Process.Pid
				join(t, cg, sibPid)
			}

			if err := m.RemoveInstance(ctx, s.Tenant, "web"); err != nil {
				t.Fatal(err)
			}
			for _, pid := range pids {
				if !procGone(t, pid) {
					t.Errorf("process %d still runs after RemoveInstance", pid)
				}
			}
			if done != nil {
				waitKilled(t, "instance process", done)
			}
			checkDirs(t, v1Dirs(rel), false)
			checkDirs(t, v1Dirs(s.Tenant), true)
			checkFiles(t, s.Tenant, v1Limits(tl))
			var want []int
			if tt.sibling {
				checkDirs(t, v1Dirs(s.Tenant+"/db"), true)
				if procGone(t, sibPid) {
					t.Errorf("sibling instance's process %d was killed", sibPid)
				}
				select {
				case err := <-sibDone:
					t.Errorf("sibling instance's process ended: %v", err)
				default:
				}
				want = []int{sibPid}
			}
			if got, err := m.Processes(s.Tenant); err != nil || !slices.Equal(got, want) {
				t.Errorf("Processes after RemoveInstance = %v, %v; want %v", got, err, want)
			}
			if err := m.RemoveInstance(ctx, s.Tenant, "web"); err != nil {
				t.Errorf("second RemoveInstance: %v", err)
			}
			if tt.sibling {
				if err := m.Remove(ctx, s.Tenant, s.Home); err != nil {
					t.Fatal(err)
				}
				waitKilled(t, "sibling instance's process", sibDone)
				assertGone(t, m, s)
			}
		})
	}
}

func TestRemoveTenantWithInstances(t *testing.T) {
	tests := []struct {
		name      string
		instances []string
		// busy are the instances that get a process.
		busy []string
	}{
		{"instance with a process", []string{"web"}, []string{"web"}},
		{"two instances, one busy", []string{"web", "db"}, []string{"db"}},
		{"two busy instances", []string{"web", "db"}, []string{"web", "db"}},
		{"idle instance", []string{"web"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			m := v1Manager(t)
			s := ensured(t, m, Limits{MilliCPU: 1000})
			var dones []<-chan error
			var pids []int
			for _, inst := range tt.instances {
				cg, err := m.EnsureInstance(ctx, s.Tenant, inst, Limits{MilliCPU: 500})
				if err != nil {
					t.Fatal(err)
				}
				if slices.Contains(tt.busy, inst) {
					cmd, done := startAsUser(t, s.UID)
					join(t, cg, cmd.Process.Pid)
					dones, pids = append(dones, done), append(pids, cmd.Process.Pid)
				}
			}
			slices.Sort(pids)
			if got, err := m.Processes(s.Tenant); err != nil || !slices.Equal(got, pids) {
				t.Errorf("Processes = %v, %v; want %v", got, err, pids)
			}
			if err := m.Remove(ctx, s.Tenant, s.Home); err != nil {
				t.Fatal(err)
			}
			for _, pid := range pids {
				if !procGone(t, pid) {
					t.Errorf("process %d still runs after Remove", pid)
				}
			}
			for _, done := range dones {
				waitKilled(t, "instance process", done)
			}
			for _, inst := range tt.instances {
				checkDirs(t, v1Dirs(s.Tenant+"/"+inst), false)
			}
			assertGone(t, m, s)
			if err := m.RemoveInstance(ctx, s.Tenant, tt.instances[0]); err != nil {
				t.Errorf("RemoveInstance after Remove: %v", err)
			}
		})
	}
}

// TestEnsureInstanceV2 checks instance cgroups on a fake cgroup2 tree: this
// host's cgroup2 mount has no controllers.
func TestEnsureInstanceV2(t *testing.T) {
	limited := Limits{MemoryBytes: 1 << 30, MilliCPU: 1500, Pids: 100}
	tests := []struct {
		name             string
		tenant, instance string
		// tenantSubtree is the tenant's cgroup.subtree_control before; nil
		// means the tenant's cgroup does not exist.
		tenantSubtree *string
		swap          bool
		limits        Limits
		// want maps files under the root to their content; "-" means absent.
		want    map[string]string
		wantErr bool
	}{
		{
			name: "controllers off", tenant: "t", instance: "web",
			tenantSubtree: ptr(""), swap: true, limits: limited,
			want: map[string]string{
				"kigumi/t/cgroup.subtree_control": "+cpu +io +memory +pids",
				"kigumi/t/web/memory.max":         "1073741824",
				"kigumi/t/web/memory.swap.max":    "0",
				"kigumi/t/web/cpu.max":            "150000 100000",
				"kigumi/t/web/pids.max":           "100",
				"kigumi/t/memory.max":             "-",
				"kigumi/t/pids.max":               "-",
			},
		},
		{
			name: "controllers partly on, unlimited", tenant: "t", instance: "web",
			tenantSubtree: ptr("cpu memory"),
			want: map[string]string{
				"kigumi/t/cgroup.subtree_control": "+io +pids",
				"kigumi/t/web/memory.max":         "max",
				"kigumi/t/web/memory.swap.max":    "-",
				"kigumi/t/web/cpu.max":            "max 100000",
				"kigumi/t/web/pids.max":           "max",
			},
		},
		{
			name: "controllers already on", tenant: "t", instance: "db",
			tenantSubtree: ptr("memory pids cpu io"), limits: Limits{Pids: 7},
			want: map[string]string{
				"kigumi/t/cgroup.subtree_control": "memory pids cpu io",
				"kigumi/t/db/pids.max":            "7",
			},
		},
		{
			name: "tenant cgroup missing", tenant: "t", instance: "web", wantErr: true,
			want: map[string]string{"kigumi/t": "-"},
		},
		{
			name: "invalid instance", tenant: "t", instance: "Web", tenantSubtree: ptr(""), wantErr: true,
			want: map[string]string{"kigumi/t/cgroup.subtree_control": "", "kigumi/t/Web": "-"},
		},
		{
			name: "invalid tenant", tenant: "T", instance: "web", wantErr: true,
			want: map[string]string{"kigumi/T": "-"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			root := t.TempDir()
			files := map[string]string{
				"cgroup.controllers":            "cpuset cpu io memory hugetlb pids",
				"cgroup.subtree_control":        "cpu memory pids",
				"kigumi/cgroup.subtree_control": "cpu memory pids",
			}
			if tt.tenantSubtree != nil {
				files["kigumi/t/cgroup.subtree_control"] = *tt.tenantSubtree
			}
			if tt.swap {
				files["kigumi/t/"+tt.instance+"/memory.swap.max"] = "max"
			}
			for name, content := range files {
				path := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			m := newManager(t, WithCgroupRoot(root))
			if !m.cg.v2 {
				t.Fatal("fake cgroup2 tree not detected as v2")
			}
			cg, err := m.EnsureInstance(ctx, tt.tenant, tt.instance, tt.limits)
			if (err != nil) != tt.wantErr {
				t.Fatalf("EnsureInstance = %+v, %v; want error %v", cg, err, tt.wantErr)
			}
			if !tt.wantErr {
				want := sdk.Cgroup{
					Path:       "/kigumi/t/" + tt.instance,
					ProcsFiles: []string{filepath.Join(root, "kigumi", "t", tt.instance, "cgroup.procs")},
				}
				if !reflect.DeepEqual(cg, want) {
					t.Errorf("EnsureInstance = %+v, want %+v", cg, want)
				}
			}
			for name, want := range tt.want {
				path := filepath.Join(root, name)
				if want == "-" {
					if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
						t.Errorf("%s: %v, want it absent", name, err)
					}
				} else if got := readTrim(t, path); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			if tt.wantErr {
				return
			}
			// Again, with the tenant's controllers on as the kernel shows
			// them, and with other limits.
			sub := filepath.Join(root, "kigumi", "t", "cgroup.subtree_control")
			if err := os.WriteFile(sub, []byte("cpu io memory pids"), 0o644); err != nil {
				t.Fatal(err)
			}
			again, err := m.EnsureInstance(ctx, tt.tenant, tt.instance, Limits{MemoryBytes: 4096, MilliCPU: 20, Pids: 3})
			if err != nil {
				t.Fatalf("second EnsureInstance: %v", err)
			}
			if !reflect.DeepEqual(again, cg) {
				t.Errorf("second EnsureInstance = %+v, want %+v", again, cg)
			}
			dir := filepath.Join("kigumi", "t", tt.instance)
			for name, want := range map[string]string{
				"kigumi/t/cgroup.subtree_control": "cpu io memory pids",
				filepath.Join(dir, "memory.max"):  "4096",
				filepath.Join(dir, "cpu.max"):     "2000 100000",
				filepath.Join(dir, "pids.max"):    "3",
			} {
				if got := readTrim(t, filepath.Join(root, name)); got != want {
					t.Errorf("after second EnsureInstance %s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// accountIDs returns the uids and gids in /etc/passwd and /etc/group, and the
// ranges in /etc/subuid and /etc/subgid, read here rather than with the
// package's code.
func accountIDs(t *testing.T) (ids map[uint64]bool, ranges [][2]uint64) {
	t.Helper()
	ids = map[uint64]bool{}
	for _, f := range []struct {
		file  string
		field int
	}{{passwdFile, 2}, {groupFile, 2}} {
		data, err := os.ReadFile(f.file)
		if err != nil {
			t.Fatal(err)
		}
		for l := range strings.Lines(string(data)) {
			if cols := strings.Split(strings.TrimSpace(l), ":"); len(cols) > f.field {
				if id, err := strconv.ParseUint(cols[f.field], 10, 32); err == nil {
					ids[id] = true
				}
			}
		}
	}
	for _, f := range []string{subuidFile, subgidFile} {
		data, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		for l := range strings.Lines(string(data)) {
			cols := strings.Split(strings.TrimSpace(l), ":")
			if len(cols) != 3 {
				continue
			}
			start, err1 := strconv.ParseUint(cols[1], 10, 32)
			count, err2 := strconv.ParseUint(cols[2], 10, 32)
			if err1 == nil && err2 == nil {
				ranges = append(ranges, [2]uint64{start, count})
			}
		}
	}
	return ids, ranges
}

func TestAllocate(t *testing.T) {
	m := v1Manager(t)
	// other is a tenant in the account database.
	other := ensured(t, m, Limits{})
	const c = 65536
	// Ids in [free, free+4c) are in no account file, so results there are
	// exact.
	free, err := FreeSubIDs(2e9+randInt(t, 30000)*c, 4*c, nil)
	if err != nil {
		t.Fatal(err)
	}
	never := func(uint32) bool { return false }
	below := func(n uint32) func(uint32) bool { return func(id uint32) bool { return id < n } }
	is := func(ns ...uint32) func(uint32) bool { return func(id uint32) bool { return slices.Contains(ns, id) } }
	tests := []struct {
		name               string
		uidBase, subBase   uint32
		subCount           uint32
		takenUID           func(uint32) bool
		takenSub           func(uint32) bool
		wantUID, wantSub   uint32 // 0: not known in advance
		uidAbove, subAbove uint32 // results must be at least these
		wantErr            bool
	}{
		{name: "free ids", uidBase: free + 3*c + 7, subBase: free, subCount: c, takenUID: never, takenSub: never,
			wantUID: free + 3*c + 7, wantSub: free},
		{name: "nil takenUID", uidBase: free + 3*c + 7, subBase: free, subCount: c, takenSub: never,
			wantUID: free + 3*c + 7, wantSub: free},
		{name: "taken uids skipped", uidBase: free + 3*c, subBase: free, subCount: c, takenUID: below(free + 3*c + 3), takenSub: never,
			wantUID: free + 3*c + 3, wantSub: free},
		{name: "taken sub starts skipped", uidBase: free + 3*c + 7, subBase: free, subCount: c, takenUID: never, takenSub: is(free, free+c),
			wantUID: free + 3*c + 7, wantSub: free + 2*c},
		{name: "range holding the uid skipped", uidBase: free + 5, subBase: free, subCount: c, takenUID: never, takenSub: never,
			wantUID: free + 5, wantSub: free + c},
		{name: "uid at the range's last id", uidBase: free + c - 1, subBase: free, subCount: c, takenUID: never, takenSub: never,
			wantUID: free + c - 1, wantSub: free + c},
		{name: "uid just past the range", uidBase: free + c - 2, subBase: free, subCount: c, takenUID: below(free + c), takenSub: never,
			wantUID: free + c, wantSub: free},
		{name: "uid and taken both skip", uidBase: free + 1, subBase: free, subCount: c, takenUID: never, takenSub: is(free + c),
			wantUID: free + 1, wantSub: free + 2*c},
		{name: "small ranges", uidBase: free + 10, subBase: free, subCount: 10, takenUID: never, takenSub: is(free + 20),
			wantUID: free + 10, wantSub: free},
		{name: "existing subordinate range skipped", uidBase: free + 3*c + 7, subBase: other.SubIDStart, subCount: c, takenUID: never, takenSub: never,
			wantUID: free + 3*c + 7, subAbove: other.SubIDStart + c},
		{name: "uid base inside a subordinate range", uidBase: other.SubIDStart + 5, subBase: free, subCount: c, takenUID: never, takenSub: never,
			uidAbove: other.SubIDStart + c, subAbove: free},
		{name: "uid base at an existing user", uidBase: other.UID, subBase: free, subCount: c, takenUID: never, takenSub: never,
			uidAbove: other.UID + 1},
		{name: "zero count", uidBase: free, subBase: free, subCount: 0, takenUID: never, takenSub: never, wantErr: true},
		{name: "zero base", uidBase: free, subBase: 0, subCount: c, takenUID: never, takenSub: never, wantErr: true},
		{name: "all starts taken", uidBase: free, subBase: 1<<32 - 3*c, subCount: c, takenUID: never, takenSub: func(uint32) bool { return true }, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uid, sub, err := m.Allocate(tt.uidBase, tt.subBase, tt.subCount, tt.takenUID, tt.takenSub)
			if tt.wantErr {
				if err == nil {
					t.Errorf("Allocate = %d, %d; want an error", uid, sub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantUID != 0 && uid != tt.wantUID || uid < max(tt.uidBase, tt.uidAbove) {
				t.Errorf("uid %d, want %d (at least %d)", uid, tt.wantUID, max(tt.uidBase, tt.uidAbove))
			}
			if tt.wantSub != 0 && sub != tt.wantSub || sub < max(tt.subBase, tt.subAbove) {
				t.Errorf("sub %d, want %d (at least %d)", sub, tt.wantSub, max(tt.subBase, tt.subAbove))
			}
			for _, db := range []string{"passwd", "group"} {
				if err := exec.Command("getent", db, strconv.Itoa(int(uid))).Run(); err == nil {
					t.Errorf("uid %d is in %s", uid, db)
				}
			}
			if tt.takenUID != nil && tt.takenUID(uid) {
				t.Errorf("uid %d is taken", uid)
			}
			if (sub-tt.subBase)%tt.subCount != 0 {
				t.Errorf("sub %d is not subBase %d + k*%d", sub, tt.subBase, tt.subCount)
			}
			if tt.takenSub(sub) {
				t.Errorf("sub %d is taken", sub)
			}
			start, end := uint64(sub), uint64(sub)+uint64(tt.subCount)
			if uint64(uid) >= start && uint64(uid) < end {
				t.Errorf("sub range [%d,%d) holds uid %d", start, end, uid)
			}
			ids, ranges := accountIDs(t)
			for _, r := range ranges {
				if r[0] <= uint64(uid) && uint64(uid) < r[0]+r[1] {
					t.Errorf("uid %d is in subordinate range %d+%d", uid, r[0], r[1])
				}
				if r[0] < end && start < r[0]+r[1] {
					t.Errorf("sub range [%d,%d) overlaps subordinate range %d+%d", start, end, r[0], r[1])
				}
			}
			for id := range ids {
				if id >= start && id < end {
					t.Errorf("sub range [%d,%d) holds account id %d", start, end, id)
				}
			}
		})
	}
}

func TestSharedAllocate(t *testing.T) {
	s := NewShared()
	tests := []struct {
		name  string
		taken func(uint32) bool
	}{
		{"nothing taken", func(uint32) bool { return false }},
		{"everything taken", func(uint32) bool { return true }},
		{"nil callbacks", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			uid, sub, err := s.Allocate(300000, 2e9, 65536, tt.taken, tt.taken)
			if err != nil || uid != 65534 || sub != 0 {
				t.Errorf("Allocate = %d, %d, %v; want 65534, 0, nil", uid, sub, err)
			}
		})
	}
}

// newShared returns a Shared for the host's v1 cgroups, a fresh tenant name
// and home, and removes that tenant when the test ends.
func newShared(t *testing.T) (*Shared, string, string) {
	t.Helper()
	s := NewShared()
	if s.uid != nobody || s.gid != nobody || s.cg == nil || s.cg.v2 || s.cg.root != hostRoot {
		t.Fatalf("NewShared as root = %+v, want nobody with v1 cgroups at %s", s, hostRoot)
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name, home := "s"+hex.EncodeToString(b), filepath.Join(t.TempDir(), "home")
	t.Cleanup(func() {
		if err := s.Remove(context.Background(), name, home); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return s, name, home
}

func TestShared(t *testing.T) {
	tests := []struct {
		name string
		// home prepares the home directory, if set.
		home   func(t *testing.T, home string)
		limits Limits
		// inTenant puts a process into the tenant's cgroup as well.
		inTenant bool
	}{
		{name: "fresh", limits: Limits{MemoryBytes: 64 << 20, MilliCPU: 500, Pids: 32}},
		{name: "unlimited, process in tenant cgroup", inTenant: true},
		{name: "existing home with wrong owner and mode", limits: Limits{Pids: 16}, home: func(t *testing.T, home string) {
			if err := os.Mkdir(home, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(home, "data"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			s, name, home := newShared(t)
			if tt.home != nil {
				tt.home(t, home)
			}
			ten, err := s.Ensure(ctx, Spec{Tenant: name, Home: home, Limits: tt.limits})
			if err != nil {
				t.Fatal(err)
			}
			wantUser := sdk.User{Name: "nobody", UID: 65534, GID: 65534, Home: home}
			if ten.User != wantUser || ten.Cgroup.Path != "/kigumi/"+name {
				t.Errorf("Ensure = %+v, want user %+v and cgroup /kigumi/%s", ten, wantUser, name)
			}
			fi, err := os.Lstat(home)
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0o700 || st.Uid != 65534 || st.Gid != 65534 {
				t.Errorf("home is %v owned by %d:%d, want a 0700 directory owned by 65534:65534", fi.Mode(), st.Uid, st.Gid)
			}
			checkDirs(t, v1Dirs(name), true)
			checkFiles(t, name, v1Limits(tt.limits))
			if _, err := s.Ensure(ctx, Spec{Tenant: name, Home: home, Limits: tt.limits}); err != nil {
				t.Errorf("second Ensure: %v", err)
			}

			il := Limits{Pids: 8}
			cg, err := s.EnsureInstance(ctx, name, "web", il)
			if err != nil {
				t.Fatal(err)
			}
			if want := wantV1Cgroup(name + "/web"); !reflect.DeepEqual(cg, want) {
				t.Errorf("EnsureInstance = %+v, want %+v", cg, want)
			}
			checkDirs(t, v1Dirs(name+"/web"), true)
			checkFiles(t, name+"/web", v1Limits(il))

			// An instance removed on its own takes its processes along.
			gone, err := s.EnsureInstance(ctx, name, "old", il)
			if err != nil {
				t.Fatal(err)
			}
			cmd, goneDone := startAsUser(t, nobody)
			join(t, gone, cmd.Process.Pid)
			if err := s.RemoveInstance(ctx, name, "old"); err != nil {
				t.Fatal(err)
			}
			if !procGone(t, cmd.Process.Pid) {
				t.Errorf("process %d still runs after RemoveInstance", cmd.Process.Pid)
			}
			waitKilled(t, "removed instance's process", goneDone)
			checkDirs(t, v1Dirs(name+"/old"), false)
			checkDirs(t, v1Dirs(name), true)
			if err := s.RemoveInstance(ctx, name, "old"); err != nil {
				t.Errorf("second RemoveInstance: %v", err)
			}

			cmd, inDone := startAsUser(t, nobody)
			join(t, cg, cmd.Process.Pid)
			pids := []int{cmd.Process.Pid}
			dones := []<-chan error{inDone}
			if tt.inTenant {
				cmd, done := startAsUser(t, nobody)
				join(t, wantV1Cgroup(name), cmd.Process.Pid)
				pids, dones = append(pids, cmd.Process.Pid), append(dones, done)
			}
			// nobody's processes outside the cgroup are not the tenant's.
			outside, outDone := startAsUser(t, nobody)
			slices.Sort(pids)
			if got := waitProcs(t, len(pids), func() ([]int, error) { return s.cg.procs(name) }); !slices.Equal(got, pids) {
				t.Errorf("processes in the cgroup %v, want %v", got, pids)
			}

			if err := s.Remove(ctx, name, home); err != nil {
				t.Fatal(err)
			}
			for _, pid := range pids {
				if !procGone(t, pid) {
					t.Errorf("process %d still runs after Remove", pid)
				}
			}
			for _, done := range dones {
				waitKilled(t, "tenant process", done)
			}
			if procGone(t, outside.Process.Pid) {
				t.Errorf("process %d of nobody outside the cgroup was killed", outside.Process.Pid)
			}
			select {
			case err := <-outDone:
				t.Errorf("process of nobody outside the cgroup ended: %v", err)
			default:
			}
			checkDirs(t, v1Dirs(name+"/web"), false)
			checkDirs(t, v1Dirs(name), false)
			if _, err := os.Lstat(home); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("home: %v, want it gone", err)
			}
			if err := s.Remove(ctx, name, home); err != nil {
				t.Errorf("second Remove: %v", err)
			}
		})
	}
}

func TestSharedErrors(t *testing.T) {
	s, name, home := newShared(t)
	tests := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Ensure with an invalid tenant", func(ctx context.Context) error {
			_, err := s.Ensure(ctx, Spec{Tenant: "Bad", Home: home})
			return err
		}},
		{"Ensure with an empty tenant", func(ctx context.Context) error {
			_, err := s.Ensure(ctx, Spec{Tenant: "", Home: home})
			return err
		}},
		{"Ensure with a relative home", func(ctx context.Context) error {
			_, err := s.Ensure(ctx, Spec{Tenant: name, Home: "home"})
			return err
		}},
		{"Ensure with an unclean home", func(ctx context.Context) error {
			_, err := s.Ensure(ctx, Spec{Tenant: name, Home: home + "/../home"})
			return err
		}},
		{"Ensure with a home whose parent is missing", func(ctx context.Context) error {
			_, err := s.Ensure(ctx, Spec{Tenant: name, Home: filepath.Join(home, "missing", "home")})
			return err
		}},
		{"Remove with an invalid tenant", func(ctx context.Context) error { return s.Remove(ctx, "../x", home) }},
		{"Remove with home /", func(ctx context.Context) error { return s.Remove(ctx, name, "/") }},
		{"EnsureInstance with an invalid tenant", func(ctx context.Context) error {
			_, err := s.EnsureInstance(ctx, "a/b", "web", Limits{})
			return err
		}},
		{"EnsureInstance with an invalid instance", func(ctx context.Context) error {
			_, err := s.EnsureInstance(ctx, name, "../web", Limits{})
			return err
		}},
		{"EnsureInstance of a tenant never made", func(ctx context.Context) error {
			_, err := s.EnsureInstance(ctx, name, "web", Limits{})
			return err
		}},
		{"RemoveInstance with an invalid tenant", func(ctx context.Context) error { return s.RemoveInstance(ctx, "", "web") }},
		{"RemoveInstance with an invalid instance", func(ctx context.Context) error { return s.RemoveInstance(ctx, name, "WEB") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(testCtx(t)); err == nil {
				t.Error("succeeded, want an error")
			}
			checkDirs(t, v1Dirs(name), false)
			if _, err := os.Lstat(home); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("home: %v, want none", err)
			}
		})
	}
}

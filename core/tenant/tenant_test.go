package tenant

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// randInt returns a random int in [0, n).
func randInt(t *testing.T, n int64) uint32 {
	t.Helper()
	v, err := rand.Int(rand.Reader, big.NewInt(n))
	if err != nil {
		t.Fatal(err)
	}
	return uint32(v.Int64())
}

// newSpec returns a spec for a fresh tenant with a random name, free ids and
// a home in a temporary directory, and removes the tenant when the test ends.
func newSpec(t *testing.T, m *Manager) Spec {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "t" + hex.EncodeToString(b)
	uid, err := FreeUID(300000+randInt(t, 1e9), nil)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := FreeSubIDs(2e9+randInt(t, 30000)*65536, 65536, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := Spec{Tenant: name, UID: uid, SubIDStart: sub, SubIDCount: 65536, Home: filepath.Join(t.TempDir(), "home")}
	t.Cleanup(func() {
		if err := m.Remove(context.Background(), s.Tenant, s.Home); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return s
}

func newManager(t *testing.T, opts ...Option) *Manager {
	t.Helper()
	m, err := NewManager(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// line returns the line of file that starts with "name:", or "".
func line(t *testing.T, file, name string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(data)) {
		if strings.HasPrefix(l, name+":") {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// accountState is everything of a tenant in the account database and home.
func accountState(t *testing.T, s Spec) string {
	t.Helper()
	name := UserName(s.Tenant)
	home := "absent"
	if fi, err := os.Lstat(s.Home); err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		home = fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
	}
	var b strings.Builder
	for _, f := range []string{passwdFile, groupFile, subuidFile, subgidFile} {
		fmt.Fprintf(&b, "%s=%q\n", f, line(t, f, name))
	}
	shadow := strings.Split(line(t, shadowFile, name), ":")
	fmt.Fprintf(&b, "shadow locked=%v\n", len(shadow) > 1 && strings.HasPrefix(shadow[1], "!"))
	fmt.Fprintf(&b, "home=%s\n", home)
	return b.String()
}

// assertGone checks that nothing of the tenant is left.
func assertGone(t *testing.T, m *Manager, s Spec) {
	t.Helper()
	name := UserName(s.Tenant)
	for _, f := range []string{passwdFile, shadowFile, groupFile, subuidFile, subgidFile} {
		if l := line(t, f, name); l != "" {
			t.Errorf("%s still has %q", f, l)
		}
	}
	if _, err := os.Lstat(s.Home); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("home %s: %v, want it gone", s.Home, err)
	}
	for _, d := range m.cg.dirs(s.Tenant) {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cgroup %s: %v, want it gone", d, err)
		}
	}
}

// cgroupFile returns the path of the tenant's cgroup file key,
// "hierarchy/file"; on cgroup v2 the hierarchy is dropped.
func cgroupFile(m *Manager, tenant, key string) string {
	h, f, _ := strings.Cut(key, "/")
	if m.cg.v2 {
		return filepath.Join(m.cg.root, parentCgroup, tenant, f)
	}
	return filepath.Join(m.cg.root, h, parentCgroup, tenant, f)
}

// unlimitedMemory is what v1 reports as the unlimited memory limit.
const unlimitedMemory = "9223372036854771712"

func TestEnsure(t *testing.T) {
	tests := []struct {
		name   string
		limits Limits
		// wantV1 and wantV2 map cgroup files (see cgroupFile) to their
		// content.
		wantV1, wantV2 map[string]string
	}{
		{
			name:   "limited",
			limits: Limits{MemoryBytes: 64 << 20, MilliCPU: 500, Pids: 64},
			wantV1: map[string]string{
				"memory/memory.limit_in_bytes":       "67108864",
				"memory/memory.memsw.limit_in_bytes": "67108864",
				"cpu/cpu.cfs_period_us":              "100000",
				"cpu/cpu.cfs_quota_us":               "50000",
				"pids/pids.max":                      "64",
			},
			wantV2: map[string]string{
				"memory/memory.max": "67108864",
				"cpu/cpu.max":       "50000 100000",
				"pids/pids.max":     "64",
			},
		},
		{
			name:   "unlimited",
			limits: Limits{},
			wantV1: map[string]string{
				"memory/memory.limit_in_bytes":       unlimitedMemory,
				"memory/memory.memsw.limit_in_bytes": unlimitedMemory,
				"cpu/cpu.cfs_quota_us":               "-1",
				"pids/pids.max":                      "max",
			},
			wantV2: map[string]string{
				"memory/memory.max": "max",
				"cpu/cpu.max":       "max 100000",
				"pids/pids.max":     "max",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t)
			s := newSpec(t, m)
			s.Limits = tt.limits
			ten, err := m.Ensure(context.Background(), s)
			if err != nil {
				t.Fatal(err)
			}
			name := UserName(s.Tenant)
			uid := strconv.FormatUint(uint64(s.UID), 10)
			out, err := exec.Command("getent", "passwd", name).Output()
			if err != nil {
				t.Fatalf("getent passwd %s: %v", name, err)
			}
			wantPasswd := fmt.Sprintf("%s:x:%s:%s:kigumi tenant %s:%s:/usr/sbin/nologin", name, uid, uid, s.Tenant, s.Home)
			if got := strings.TrimSpace(string(out)); got != wantPasswd {
				t.Errorf("passwd entry %q, want %q", got, wantPasswd)
			}
			if f := strings.Split(line(t, shadowFile, name), ":"); len(f) < 2 || !strings.HasPrefix(f[1], "!") {
				t.Errorf("shadow entry %q is not locked", line(t, shadowFile, name))
			}
			if got, want := line(t, groupFile, name), name+":x:"+uid+":"; got != want {
				t.Errorf("group entry %q, want %q", got, want)
			}
			wantSub := fmt.Sprintf("%s:%d:%d", name, s.SubIDStart, s.SubIDCount)
			for _, f := range []string{subuidFile, subgidFile} {
				if got := line(t, f, name); got != wantSub {
					t.Errorf("%s entry %q, want %q", f, got, wantSub)
				}
			}
			fi, err := os.Lstat(s.Home)
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || fi.Mode().Perm() != 0o700 || st.Uid != s.UID || st.Gid != s.UID {
				t.Errorf("home is %v owned by %d:%d, want a 0700 directory owned by %d", fi.Mode(), st.Uid, st.Gid, s.UID)
			}
			wantFiles := tt.wantV1
			if m.cg.v2 {
				wantFiles = tt.wantV2
			}
			for file, want := range wantFiles {
				if got := readTrim(t, cgroupFile(m, s.Tenant, file)); got != want {
					t.Errorf("%s = %q, want %q", file, got, want)
				}
			}
			wantUser := ten.User
			wantUser.Name, wantUser.UID, wantUser.GID, wantUser.Home = name, s.UID, s.UID, s.Home
			wantUser.SubUID, wantUser.SubGID, wantUser.Count = s.SubIDStart, s.SubIDStart, s.SubIDCount
			if ten.User != wantUser {
				t.Errorf("user %+v, want %+v", ten.User, wantUser)
			}
			var wantProcs []string
			for _, h := range v1Hierarchies {
				wantProcs = append(wantProcs, cgroupFile(m, s.Tenant, h+"/cgroup.procs"))
			}
			if m.cg.v2 {
				wantProcs = wantProcs[:1]
			}
			if ten.Cgroup.Path != "/kigumi/"+s.Tenant || !slices.Equal(ten.Cgroup.ProcsFiles, wantProcs) {
				t.Errorf("cgroup %+v, want path /kigumi/%s and procs files %v", ten.Cgroup, s.Tenant, wantProcs)
			}

			before := accountState(t, s)
			again, err := m.Ensure(context.Background(), s)
			if err != nil {
				t.Fatalf("second Ensure: %v", err)
			}
			if after := accountState(t, s); after != before {
				t.Errorf("second Ensure changed the accounts:\n%s\nwant\n%s", after, before)
			}
			if again.User != ten.User || !slices.Equal(again.Cgroup.ProcsFiles, ten.Cgroup.ProcsFiles) {
				t.Errorf("second Ensure returned %+v, want %+v", again, ten)
			}
			for file, want := range wantFiles {
				if got := readTrim(t, cgroupFile(m, s.Tenant, file)); got != want {
					t.Errorf("after second Ensure %s = %q, want %q", file, got, want)
				}
			}
		})
	}
}

func TestEnsureRepairs(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, m *Manager, s Spec)
	}{
		{"home mode and owner", func(t *testing.T, m *Manager, s Spec) {
			if err := os.Chmod(s.Home, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(s.Home, 0, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"shell and password lock", func(t *testing.T, m *Manager, s Spec) {
			if err := run(context.Background(), "usermod", "--shell", "/bin/sh", "--password", "x", UserName(s.Tenant)); err != nil {
				t.Fatal(err)
			}
		}},
		{"limits", func(t *testing.T, m *Manager, s Spec) {
			if err := os.WriteFile(cgroupFile(m, s.Tenant, "pids/pids.max"), []byte("7"), 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"cgroup removed", func(t *testing.T, m *Manager, s Spec) {
			if err := os.Remove(filepath.Dir(cgroupFile(m, s.Tenant, "memory/x"))); err != nil {
				t.Fatal(err)
			}
		}},
		{"subgid missing", func(t *testing.T, m *Manager, s Spec) {
			r := fmt.Sprintf("%d-%d", s.SubIDStart, s.SubIDStart+s.SubIDCount-1)
			if err := run(context.Background(), "usermod", "--del-subgids", r, UserName(s.Tenant)); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t)
			s := newSpec(t, m)
			s.Limits = Limits{Pids: 100}
			if _, err := m.Ensure(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			want := accountState(t, s)
			tt.damage(t, m, s)
			if _, err := m.Ensure(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			if got := accountState(t, s); got != want {
				t.Errorf("after repair:\n%s\nwant\n%s", got, want)
			}
			if got := readTrim(t, cgroupFile(m, s.Tenant, "pids/pids.max")); got != "100" {
				t.Errorf("pids.max = %q, want 100", got)
			}
			if _, err := os.Stat(cgroupFile(m, s.Tenant, "memory/cgroup.procs")); err != nil {
				t.Errorf("memory cgroup: %v", err)
			}
		})
	}
}

// startAsUser starts `sleep 60` as uid, returning the command and a channel
// that yields its Wait error.
func startAsUser(t *testing.T, uid uint32) (*exec.Cmd, <-chan error) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
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
		_ = cmd.Process.Kill() // already dead when the test passed
		<-waited
	})
	return cmd, done
}

func TestProcessesAndRemove(t *testing.T) {
	tests := []struct {
		name  string
		child string // cgroup below the tenant's to put the process in
	}{
		{"tenant cgroup", ""},
		{"child cgroup", "web"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t)
			s := newSpec(t, m)
			ten, err := m.Ensure(context.Background(), s)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(s.Home, "data"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			inCgroup, inDone := startAsUser(t, s.UID)
			for _, f := range ten.Cgroup.ProcsFiles {
				dir := filepath.Join(filepath.Dir(f), tt.child)
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(inCgroup.Process.Pid)), 0); err != nil {
					t.Fatal(err)
				}
			}
			_, outDone := startAsUser(t, s.UID)

			pids, err := m.Processes(s.Tenant)
			if err != nil {
				t.Fatal(err)
			}
			if want := []int{inCgroup.Process.Pid}; !slices.Equal(pids, want) {
				t.Errorf("Processes = %v, want %v", pids, want)
			}

			if err := m.Remove(context.Background(), s.Tenant, s.Home); err != nil {
				t.Fatal(err)
			}
			for name, done := range map[string]<-chan error{"in cgroup": inDone, "outside cgroup": outDone} {
				var exit *exec.ExitError
				if err := <-done; !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
					t.Errorf("process %s ended with %v, want SIGKILL", name, err)
				}
			}
			assertGone(t, m, s)
			if pids, err := m.Processes(s.Tenant); err != nil || len(pids) != 0 {
				t.Errorf("Processes after Remove = %v, %v; want none", pids, err)
			}
			if err := m.Remove(context.Background(), s.Tenant, s.Home); err != nil {
				t.Errorf("second Remove: %v", err)
			}
		})
	}
}

func TestEnsureConflicts(t *testing.T) {
	tests := []struct {
		name string
		// setup makes the conflict, returning what must be left untouched.
		setup func(t *testing.T, m *Manager, s *Spec) (file, line string)
	}{
		{"foreign user with the name", func(t *testing.T, m *Manager, s *Spec) (string, string) {
			name := UserName(s.Tenant)
			if err := run(context.Background(), "useradd", "--no-create-home", "--shell", nologin, "--uid", strconv.Itoa(int(s.UID+1)), "--user-group", name); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = run(context.Background(), "userdel", name) })
			return passwdFile, line(t, passwdFile, name)
		}},
		{"group with another gid", func(t *testing.T, m *Manager, s *Spec) (string, string) {
			name := UserName(s.Tenant)
			if err := run(context.Background(), "groupadd", "--gid", strconv.Itoa(int(s.UID+1)), name); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = run(context.Background(), "groupdel", name) })
			return groupFile, line(t, groupFile, name)
		}},
		{"uid of another user", func(t *testing.T, m *Manager, s *Spec) (string, string) {
			s.UID = 65534
			return passwdFile, line(t, passwdFile, "nobody")
		}},
		{"overlapping subordinate ids", func(t *testing.T, m *Manager, s *Spec) (string, string) {
			other := newSpec(t, m)
			if _, err := m.Ensure(context.Background(), other); err != nil {
				t.Fatal(err)
			}
			s.SubIDStart = other.SubIDStart + 100
			return subuidFile, line(t, subuidFile, UserName(other.Tenant))
		}},
		{"uid inside subordinate ids", func(t *testing.T, m *Manager, s *Spec) (string, string) {
			other := newSpec(t, m)
			if _, err := m.Ensure(context.Background(), other); err != nil {
				t.Fatal(err)
			}
			s.UID = other.SubIDStart + 5
			return subgidFile, line(t, subgidFile, UserName(other.Tenant))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t)
			s := newSpec(t, m)
			file, want := tt.setup(t, m, &s)
			before := accountState(t, s)
			if _, err := m.Ensure(context.Background(), s); !errors.Is(err, ErrConflict) {
				t.Fatalf("Ensure: %v, want ErrConflict", err)
			}
			if got := line(t, file, strings.SplitN(want, ":", 2)[0]); got != want {
				t.Errorf("%s entry %q changed to %q", file, want, got)
			}
			if after := accountState(t, s); after != before {
				t.Errorf("failed Ensure changed the accounts:\n%s\nwant\n%s", after, before)
			}
		})
	}
}

func TestEnsureFailureLeavesNothing(t *testing.T) {
	tests := []struct {
		name string
		// break makes Ensure fail; it may return options for the Manager.
		breakIt func(t *testing.T, s *Spec) []Option
	}{
		{"invalid subordinate range", func(t *testing.T, s *Spec) []Option {
			s.SubIDStart = 0
			return nil
		}},
		{"invalid tenant name", func(t *testing.T, s *Spec) []Option {
			s.Tenant = "Bad_" + s.Tenant
			return nil
		}},
		{"invalid limits", func(t *testing.T, s *Spec) []Option {
			s.Limits.MilliCPU = 5
			return nil
		}},
		{"relative home", func(t *testing.T, s *Spec) []Option {
			s.Home = "home"
			return nil
		}},
		{"home parent missing", func(t *testing.T, s *Spec) []Option {
			s.Home = filepath.Join(filepath.Dir(s.Home), "missing", "home")
			return nil
		}},
		{"cgroup hierarchy unusable", func(t *testing.T, s *Spec) []Option {
			root := t.TempDir()
			if err := os.WriteFile(filepath.Join(root, "memory"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			return []Option{WithCgroupRoot(root)}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host := newManager(t)
			s := newSpec(t, host)
			m := newManager(t, tt.breakIt(t, &s)...)
			if _, err := m.Ensure(context.Background(), s); err == nil {
				t.Fatal("Ensure succeeded, want an error")
			}
			assertGone(t, host, s)
		})
	}
}

func TestEnsureFailureKeepsWhatExisted(t *testing.T) {
	m := newManager(t)
	s := newSpec(t, m)
	name := UserName(s.Tenant)
	id := strconv.Itoa(int(s.UID))
	if err := run(context.Background(), "groupadd", "--gid", id, name); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(s.Home, 0o755); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "memory"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	broken := newManager(t, WithCgroupRoot(root))
	if _, err := broken.Ensure(context.Background(), s); err == nil {
		t.Fatal("Ensure succeeded, want an error")
	}
	if got, want := line(t, groupFile, name), name+":x:"+id+":"; got != want {
		t.Errorf("group entry %q, want %q", got, want)
	}
	if _, err := os.Stat(s.Home); err != nil {
		t.Errorf("home that existed before: %v", err)
	}
	for _, f := range []string{passwdFile, subuidFile, subgidFile} {
		if l := line(t, f, name); l != "" {
			t.Errorf("%s still has %q", f, l)
		}
	}
}

func TestEnsureConcurrent(t *testing.T) {
	m := newManager(t)
	specs := make([]Spec, 4)
	for i := range specs {
		specs[i] = newSpec(t, m)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(specs))
	for i, s := range specs {
		wg.Go(func() { _, errs[i] = m.Ensure(context.Background(), s) })
	}
	wg.Wait()
	for i, s := range specs {
		if errs[i] != nil {
			t.Errorf("Ensure %s: %v", s.Tenant, errs[i])
		} else if line(t, passwdFile, UserName(s.Tenant)) == "" {
			t.Errorf("no passwd entry for %s", s.Tenant)
		}
	}
}

func TestRemoveRefusesForeignHome(t *testing.T) {
	m := newManager(t)
	s := newSpec(t, m)
	if err := os.Mkdir(s.Home, 0o700); err != nil { // owned by root
		t.Fatal(err)
	}
	if err := m.Remove(context.Background(), s.Tenant, s.Home); err == nil {
		t.Error("Remove of a root-owned home succeeded, want an error")
	}
	if _, err := os.Stat(s.Home); err != nil {
		t.Errorf("root-owned home: %v, want it kept", err)
	}
	if err := os.Remove(s.Home); err != nil {
		t.Fatal(err)
	}
}

func TestPreflight(t *testing.T) {
	fileRoot := t.TempDir()
	if err := os.WriteFile(filepath.Join(fileRoot, "memory"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		root    string
		wantErr string
	}{
		{"host cgroups", "/sys/fs/cgroup", ""},
		{"v2 without controllers", "/sys/fs/cgroup/unified", "not available"},
		{"unusable v1", fileRoot, "read-write"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := newManager(t, WithCgroupRoot(tt.root)).Preflight()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Preflight = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestMemoryLimitChanges: memory and memory+swap limits move together, up
// and down, although the kernel keeps memsw at or above the memory limit.
func TestMemoryLimitChanges(t *testing.T) {
	m := newManager(t)
	s := newSpec(t, m)
	for _, mem := range []int64{64 << 20, 32 << 20, 128 << 20, 0, 16 << 20} {
		s.Limits = Limits{MemoryBytes: mem}
		if _, err := m.Ensure(context.Background(), s); err != nil {
			t.Fatalf("memory %d: %v", mem, err)
		}
		want := strconv.FormatInt(mem, 10)
		if mem == 0 {
			want = unlimitedMemory
		}
		for _, f := range []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"} {
			got, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory/kigumi", s.Tenant, f))
			if err != nil || strings.TrimSpace(string(got)) != want {
				t.Errorf("memory %d: %s = %q (%v), want %s", mem, f, got, err, want)
			}
		}
	}
}

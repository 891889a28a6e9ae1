package tenant

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cpuTicks returns the user and system CPU ticks process pid used.
func cpuTicks(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command's closing parenthesis; utime and stime
	// are the 14th and 15th of the line.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

// TestFreezeInstance freezes a busy instance: it stops using CPU until it is
// thawed, while a sibling instance of the same tenant keeps running.
func TestFreezeInstance(t *testing.T) {
	ctx := testCtx(t)
	m := v1Manager(t)
	s := ensured(t, m, Limits{MemoryBytes: 128 << 20, MilliCPU: 2000, Pids: 50})
	busy := map[string]int{}
	for _, name := range []string{"web", "db"} {
		cg, err := m.EnsureInstance(ctx, s.Tenant, name, Limits{Pids: 10})
		if err != nil {
			t.Fatal(err)
		}
		cmd, _ := startCmdAsUser(t, s.UID, nil, "sh", "-c", "while :; do :; done")
		join(t, cg, cmd.Process.Pid)
		busy[name] = cmd.Process.Pid
	}
	thaw, err := m.FreezeInstance(ctx, s.Tenant, "web")
	if err != nil {
		t.Fatal(err)
	}
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			thaw() // a frozen process cannot be killed
		}
	})
	state, err := os.ReadFile("/sys/fs/cgroup/freezer/kigumi/" + s.Tenant + "/web/freezer.state")
	if err != nil || strings.TrimSpace(string(state)) != "FROZEN" {
		t.Errorf("freezer.state = %q, %v; want FROZEN", state, err)
	}
	web, db := cpuTicks(t, busy["web"]), cpuTicks(t, busy["db"])
	time.Sleep(300 * time.Millisecond)
	if got := cpuTicks(t, busy["web"]); got != web {
		t.Errorf("the frozen instance used %d CPU ticks", got-web)
	}
	if got := cpuTicks(t, busy["db"]); got == db {
		t.Errorf("the sibling instance stopped too")
	}
	if err := thaw(); err != nil {
		t.Fatal(err)
	}
	thawed = true
	web = cpuTicks(t, busy["web"])
	deadline := time.Now().Add(10 * time.Second)
	for cpuTicks(t, busy["web"]) == web {
		if time.Now().After(deadline) {
			t.Fatal("the thawed instance does not run")
		}
		time.Sleep(20 * time.Millisecond)
	}

	for _, tt := range []struct{ tenant, instance string }{
		{s.Tenant, "never-made"},
		{s.Tenant, "../web"},
		{"Bad Tenant", "web"},
	} {
		if thaw, err := m.FreezeInstance(ctx, tt.tenant, tt.instance); err == nil {
			thaw()
			t.Errorf("FreezeInstance(%q, %q) succeeded", tt.tenant, tt.instance)
		}
	}
}

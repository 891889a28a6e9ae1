package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKilledApplyResumes kills `kigumi apply` with SIGKILL at several points
// and checks that the next apply finishes the job: every instance runs
// exactly once, and a destroy then leaves nothing.
func TestKilledApplyResumes(t *testing.T) {
	for _, delay := range []time.Duration{50 * time.Millisecond, 300 * time.Millisecond, 700 * time.Millisecond, 1200 * time.Millisecond} {
		t.Run(delay.String(), func(t *testing.T) {
			w := newWorkspace(t, 2)
			cmd := exec.Command(kigumiBin, "apply", "-c", w.host, "--auto-approve")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(delay)
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()

			out := mustKigumi(t, "apply", "-c", w.host, "--auto-approve")
			t.Logf("resuming apply:\n%s", out)
			st := status(t, w.host)
			if len(st.Tenants) != 2 {
				t.Fatalf("tenants after resume: %+v", st)
			}
			for _, ten := range st.Tenants {
				if len(ten.Instances) != 1 || ten.Instances[0].State != "running" {
					t.Fatalf("tenant %s instances: %+v", ten.Name, ten.Instances)
				}
				u, err := user.Lookup(ten.User)
				if err != nil {
					t.Fatal(err)
				}
				uid, _ := strconv.Atoi(u.Uid)
				if pids := processesOf(t, uid); len(pids) != 1 || pids[0] != ten.Instances[0].Pid {
					t.Errorf("tenant %s runs processes %v, want exactly [%d]", ten.Name, pids, ten.Instances[0].Pid)
				}
			}
			if out := mustKigumi(t, "plan", "-c", w.host); !strings.Contains(out, "No changes.") {
				t.Errorf("plan after resume:\n%s", out)
			}
			mustKigumi(t, "destroy", "-c", w.host, "--auto-approve")
			for _, n := range w.names {
				if _, err := user.Lookup("kg-" + n); err == nil {
					t.Errorf("user kg-%s left after destroy", n)
				}
			}
		})
	}
}

// processesOf returns the live (not zombie) processes running as uid.
func processesOf(t *testing.T, uid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !alive(pid) {
			continue
		}
		if f := strings.Fields(procField(pid, "Uid")); len(f) > 0 && f[0] == fmt.Sprint(uid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

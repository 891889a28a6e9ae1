package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"sync"
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

// TestPluginCrashMidApply kills the runtime plugin process while apply is
// compiling a module through it: apply fails with a clear error and exit
// code 2, and the next apply converges.
func TestPluginCrashMidApply(t *testing.T) {
	w := newWorkspace(t, 1)
	cmd := exec.Command(kigumiBin, "apply", "-c", w.host, "--auto-approve")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The first start compiles the module (about a second, with a cold
	// cache): kill the plugin as soon as the instance create begins.
	var plugin int
	eventually(t, "the runtime plugin process", func() bool {
		plugin = childWithArgs(t, cmd.Process.Pid, "plugin serve runtime wasm")
		return plugin != 0 && strings.Contains(out.String(), "Creating instance")
	})
	if err := syscall.Kill(plugin, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitFailed {
		t.Fatalf("apply after the plugin died: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), `plugin runtime "wasm" exited`) {
		t.Errorf("apply output does not say the plugin exited:\n%s", out.String())
	}
	mustKigumi(t, "apply", "-c", w.host, "--auto-approve")
	st := status(t, w.host)
	if len(st.Tenants) != 1 || len(st.Tenants[0].Instances) != 1 || st.Tenants[0].Instances[0].State != "running" {
		t.Fatalf("status after recovery: %+v", st)
	}
	u, err := user.Lookup(st.Tenants[0].User)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	if pids := processesOf(t, uid); len(pids) != 1 {
		t.Errorf("tenant runs %v, want exactly one process", pids)
	}
}

// childWithArgs returns the pid of a child of parent whose command line
// contains args, or 0.
func childWithArgs(t *testing.T, parent int, args string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || procField(pid, "PPid") != strconv.Itoa(parent) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(strings.ReplaceAll(string(cmdline), "\x00", " "), args) {
			return pid
		}
	}
	return 0
}

// syncBuffer is a bytes.Buffer that a command writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

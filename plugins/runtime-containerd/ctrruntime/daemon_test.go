package ctrruntime

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// TestDecodeTenant refuses tenant handles that would point the plugin's
// kills and removals elsewhere.
func TestDecodeTenant(t *testing.T) {
	dir := "/home/alice/" + daemonDirName
	good := tenantData{Mode: ModePerTenant, Tenant: "alice", Dir: dir, Address: daemonSocket(dir), Pid: 4242, StartTime: 7, UID: 1001}
	for _, tc := range []struct {
		name string
		edit func(*tenantData)
		ok   bool
	}{
		{"per-tenant", func(*tenantData) {}, true},
		{"shared", func(d *tenantData) { *d = tenantData{Mode: ModeShared, Tenant: "alice"} }, true},
		{"no-tenant", func(d *tenantData) { d.Tenant = "" }, false},
		{"unknown-mode", func(d *tenantData) { d.Mode = "rootless" }, false},
		{"other-dir", func(d *tenantData) { d.Dir, d.Address = "/etc", "/etc/ctd.sock" }, false},
		{"relative-dir", func(d *tenantData) { d.Dir = daemonDirName; d.Address = daemonSocket(d.Dir) }, false},
		{"other-socket", func(d *tenantData) { d.Address = "/run/containerd/containerd.sock" }, false},
		{"init", func(d *tenantData) { d.Pid = 1 }, false},
		{"legacy-no-uid", func(d *tenantData) { d.UID = 0 }, true},
		{"relative-run-dir", func(d *tenantData) { d.RunDir = "run/alice" }, false},
		{"run-dir", func(d *tenantData) { d.RunDir = "/run/alice" }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := good
			tc.edit(&d)
			h, err := d.encode()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeTenant(h); (err == nil) != tc.ok {
				t.Errorf("decode %+v: %v", d, err)
			}
		})
	}
	b, _ := json.Marshal(good)
	if _, err := decodeTenant(sdk.Handle{Version: tenantHandleVersion + 1, Data: b}); sdk.CodeOf(err) != sdk.CodeInvalid {
		t.Errorf("another version: %v", err)
	}
}

// TestDaemonProcessesReusedPid finds no daemon process when the pid is
// another process's: the daemon's session is gone.
func TestDaemonProcessesReusedPid(t *testing.T) {
	st, err := startTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if pids := daemonProcesses(tenantData{Pid: os.Getpid(), StartTime: st + 1}); len(pids) != 0 {
		t.Errorf("processes %v of a daemon whose pid was reused", pids)
	}
}

func TestDaemonFailure(t *testing.T) {
	for _, tc := range []struct{ name, log, want string }{
		{"thread limit", "runtime: failed to create new OS thread (have 2 already; errno=11)\nruntime: may need to increase max user processes (ulimit -u)\nfatal error: newosproc\n\ngoroutine 1 [running]:\n0x00007ffd 0x0000",
			"runtime: failed to create new OS thread (have 2 already; errno=11); runtime: may need to increase max user processes (ulimit -u); fatal error: newosproc"},
		{"rootlesskit", "[rootlesskit:parent] error: failed to setup UID/GID map\n", "[rootlesskit:parent] error: failed to setup UID/GID map"},
		{"cgo thread", "runtime/cgo: pthread_create failed: Resource temporarily unavailable\nSIGABRT: abort\nPC=0x7f89 m=0 sigcode=18446744073709551610\n",
			"runtime/cgo: pthread_create failed: Resource temporarily unavailable"},
		{"no marker", "  just this  \n", "just this"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := daemonFailure([]byte(tc.log)); got != tc.want {
				t.Errorf("daemonFailure = %q, want %q", got, tc.want)
			}
		})
	}
}

package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// pluginPid returns the pid of the agent's plugin process serving kind
// and name, or 0.
func pluginPid(agent int, kind, name string) int {
	entries, _ := os.ReadDir("/proc")
	want := "plugin\x00serve\x00" + kind + "\x00" + name + "\x00"
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || procField(pid, "PPid") != strconv.Itoa(agent) {
			continue
		}
		if cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); strings.Contains(string(cmd), want) && alive(pid) {
			return pid
		}
	}
	return 0
}

// freeLoopbackAddr returns a loopback address with a port free right now.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// metric returns the line of the agent's metrics at addr that starts with
// series, or "".
func metric(addr, series string) string {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for l := range strings.Lines(string(body)) {
		if strings.HasPrefix(l, series) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// TestAgentLiveness runs the agent with a resync period far beyond the
// test, so that only the runtime's exit stream and the plugin host's
// observer can make it act: a killed sandbox is restarted at once, and a
// killed runtime plugin is relaunched and recovers the sandbox as it runs,
// with its restart counted.
func TestAgentLiveness(t *testing.T) {
	w := newWorkspace(t, 0)
	addr := freeLoopbackAddr(t)
	host, err := os.ReadFile(w.host)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, w.host, strings.Replace(string(host), "  capacity {", fmt.Sprintf("  agent {\n    metrics_address = %q\n  }\n  capacity {", addr), 1))
	var b [3]byte
	rand.Read(b[:])
	name := "lv" + hex.EncodeToString(b[:]) + "a"
	w.writeTenant(t, name, "Hello")
	a := startAgentWith(t, w.host, "-resync", "1h")
	m := a.mark()
	a.waitLine(t, m, "action_done", name+"/app", "create")

	// A killed sandbox is noticed and restarted without a resync.
	killSandbox := func() {
		t.Helper()
		pids := sandboxPids(name, "app")
		if len(pids) == 0 {
			t.Fatalf("no sandbox\n%s", a.since(0))
		}
		m = a.mark()
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		a.waitLine(t, m, "instance_exited", name+"/app")
		a.waitLine(t, m, "instance_restart", name+"/app")
		eventually(t, "the restarted sandbox", func() bool {
			got := sandboxPids(name, "app")
			return len(got) > 0 && got[0] != pids[0] && alive(got[0])
		})
	}
	killSandbox()

	// A killed runtime plugin is relaunched; the sandbox keeps running and
	// is recovered, not restarted.
	plugin := pluginPid(a.cmd.Process.Pid, "runtime", "wasm")
	if plugin == 0 {
		t.Fatalf("no wasm plugin process under the agent %d", a.cmd.Process.Pid)
	}
	pids := sandboxPids(name, "app")
	m = a.mark()
	syscall.Kill(plugin, syscall.SIGKILL)
	a.waitLine(t, m, "plugin_restart", "(signal: killed)", `runtime plugin "wasm" exited`)
	a.waitLine(t, m, "reconcile", name)
	eventually(t, "a relaunched wasm plugin", func() bool {
		p := pluginPid(a.cmd.Process.Pid, "runtime", "wasm")
		return p != 0 && p != plugin
	})
	if got := sandboxPids(name, "app"); len(got) == 0 || got[0] != pids[0] || !alive(pids[0]) {
		t.Fatalf("the sandbox changed over the plugin's restart: %v -> %v\n%s", pids, got, a.since(m))
	}
	if out := a.since(m); strings.Contains(out, "action_begin "+name) || strings.Contains(out, "instance_exited "+name) {
		t.Fatalf("the plugin's restart touched the instance:\n%s", out)
	}
	if got := metric(addr, `kigumi_plugin_restarts_total{cause="signal: killed"}`); !strings.HasSuffix(got, " 1") {
		t.Errorf("plugin restarts metric: %q", got)
	}

	// The relaunched plugin watches the sandbox it recovered.
	killSandbox()
	a.stop(t)
}

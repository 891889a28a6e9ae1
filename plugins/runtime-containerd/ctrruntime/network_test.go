package ctrruntime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	cnins "github.com/containernetworking/plugins/pkg/ns"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// The tests' network: a bridge and subnet of their own, and a pool of
// four ports.
const (
	testBridge = "kgmt0"
	testSubnet = "10.231.0.0/24"
	testGW     = "10.231.0.1"
	testPortLo = 23000
	testPortHi = 23003
)

// netRuntime returns a runtime on the tests' network.
func netRuntime(t *testing.T) *Runtime {
	return newRuntime(t, sdk.Config{
		"network": sdk.Config{"bridge": testBridge, "subnet": testSubnet},
		"ports":   sdk.Config{"from": float64(testPortLo), "to": float64(testPortHi)},
	})
}

// netSettings are the settings of a networked instance with the named
// container ports.
func netSettings(outbound string, ports ...int) sdk.Config {
	pm := map[string]sdk.Config{}
	for i, p := range ports {
		pm[fmt.Sprintf("p%d", i)] = sdk.Config{"container": float64(p)}
	}
	return sdk.Config{"network": sdk.Config{"outbound": outbound, "port": pm}}
}

// run runs a host command, failing the test on error.
func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v: %s", args, err, out)
	}
	return string(out)
}

// outsideNS makes a network namespace standing for the host's LAN and
// the internet: a veth from the host with 10.232.0.2 (a local network)
// and 198.51.100.2 (TEST-NET-2, standing for a public address) in it,
// each with a listener on port 9999 that says "hi". No packet leaves the
// machine.
func outsideNS(t *testing.T) {
	t.Helper()
	// ip makes the namespace: netns.NewNetNS would end the OS thread it
	// used, and a process started from it with a parent-death signal
	// (the tests' containerd) with it.
	const name = "kgmt-outside"
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", "kgmtv0").Run()
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("%v: %s", err, out)
		}
	})
	ns, err := cnins.GetNS(filepath.Join(netnsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	run(t, "ip", "link", "add", "kgmtv0", "type", "veth", "peer", "name", "kgmtv1", "netns", name)
	run(t, "ip", "addr", "add", "10.232.0.1/24", "dev", "kgmtv0")
	run(t, "ip", "addr", "add", "198.51.100.1/24", "dev", "kgmtv0")
	run(t, "ip", "link", "set", "kgmtv0", "up")
	run(t, "ip", "-n", name, "addr", "add", "10.232.0.2/24", "dev", "kgmtv1")
	run(t, "ip", "-n", name, "addr", "add", "198.51.100.2/24", "dev", "kgmtv1")
	run(t, "ip", "-n", name, "link", "set", "kgmtv1", "up")
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	err = ns.Do(func(cnins.NetNS) error {
		l, err := net.Listen("tcp", ":9999")
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		go sayHi(l)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// sayHi writes "hi" to each connection it accepts on l.
func sayHi(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write([]byte("hi\n"))
		c.Close()
	}
}

// probeArgs is a container command that tries each HOST:PORT target,
// a sayHi listener or another container's httpd, prints "HOST:PORT
// open" or "HOST:PORT closed", then its network interfaces and the
// number of its IPv6 addresses, then "probed", then
// serves /etc over HTTP on port 8080.
func probeArgs(targets ...string) []string {
	script := `for t in ` + strings.Join(targets, " ") + `; do
  if printf 'GET /passwd HTTP/1.0\r\n\r\n' | nc -w 2 ${t%:*} ${t#*:} | grep -q -e hi -e workload; then echo "$t open"; else echo "$t closed"; fi
done
echo "interfaces: $(sed -n 's/^ *\([^:]*\):.*/\1/p' /proc/net/dev | tr '\n' ' ')"
echo "ipv6 addresses: $(wc -l </proc/net/if_inet6)"
echo probed
exec httpd -f -p 8080 -h /etc`
	return []string{"sh", "-c", script}
}

// containerRule matches the iptables rules and chains of one container
// on the tests' network: by its address, or the chains CNI names after it.
var containerRule = regexp.MustCompile(`10\.231\.0\.[0-9]+(/32|:)|CNI-DN-|CNI-[0-9a-f]{20,}`)

// hostState is what the tests' network leaves on the host.
func hostState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "netns", "list"},
	} {
		b.WriteString(run(t, args...))
	}
	// The rules of one container; the chains they hang on are made once.
	for _, table := range []string{"filter", "nat"} {
		for _, l := range strings.Split(run(t, "iptables", "-t", table, "-S"), "\n") {
			if containerRule.MatchString(l) {
				b.WriteString(l + "\n")
			}
		}
	}
	// The containers' anti-spoofing chains and the jumps to them.
	for _, l := range strings.Split(run(t, ebtablesCmd, "-t", "nat", "-L"), "\n") {
		if strings.Contains(l, "KGM-") {
			b.WriteString(l + "\n")
		}
	}
	// The bridge's ports; the bridge itself is made on first use.
	for _, l := range strings.Split(run(t, "ip", "-o", "link", "show"), "\n") {
		if strings.Contains(l, " master "+testBridge+" ") {
			b.WriteString(l + "\n")
		}
	}
	ents, err := os.ReadDir("/var/lib/cni/networks/kigumi-" + testBridge)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "lock" && !strings.HasPrefix(e.Name(), "last_reserved_ip") {
			b.WriteString("lease " + e.Name() + "\n")
		}
	}
	return b.String()
}

// containerIP returns the address of the handle's container.
func containerIP(t *testing.T, h sdk.Handle) string {
	t.Helper()
	return containerLabels(t, h)[labelIP]
}

// containerLabels returns the labels of the handle's container.
func containerLabels(t *testing.T, h sdk.Handle) map[string]string {
	t.Helper()
	d, err := decodeHandle(h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, c := client(t)
	ctr, err := c.LoadContainer(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	labels, err := ctr.Labels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return labels
}

// hostPorts returns the handle's published ports.
func hostPorts(t *testing.T, h sdk.Handle) map[string]int {
	t.Helper()
	d, err := decodeHandle(h)
	if err != nil {
		t.Fatal(err)
	}
	return d.Ports
}

// get fetches /passwd from 127.0.0.1:port, retrying while the server
// starts.
func get(t *testing.T, port int) string {
	t.Helper()
	hc := http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/passwd", port))
		if err == nil {
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK {
				return string(b)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d: %v", port, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestNetwork checks published ports and outbound filtering on real CNI:
// a container's published port answers on 127.0.0.1; with outbound
// "internet" it reaches a public address but neither the host (its
// addresses on the bridge and towards the outside), a local network nor
// another tenant's container, directly or through its published port,
// and has no IPv6; with "none" it
// reaches nothing. Destroy leaves no network behind.
func TestNetwork(t *testing.T) {
	outsideNS(t)
	before := hostState(t)
	r := netRuntime(t)
	ctx := context.Background()

	// A neighbour, outbound none: it reaches nothing.
	hn, _ := start(t, r, newTenant(t), instance{name: "nb", settings: netSettings(outboundNone, 8080),
		args: probeArgs("198.51.100.2:9999", "10.232.0.2:9999")})
	out := waitLog(t, r, hn, "probed", 30*time.Second)
	for _, want := range []string{"198.51.100.2:9999 closed", "10.232.0.2:9999 closed", "ipv6 addresses: 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("outbound none: no %q in:\n%s", want, out)
		}
	}
	if got := get(t, hostPorts(t, hn)["p0"]); !strings.Contains(got, "workload:x:10000") {
		t.Errorf("neighbour's published port: %q", got)
	}

	// The host listens on the bridge's gateway and on its address towards
	// the outside.
	for _, addr := range []string{testGW + ":9999", "10.232.0.1:9999"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go sayHi(l)
	}
	// The neighbour's published port, through the host.
	nbHairpin := fmt.Sprintf("%s:%d", testGW, hostPorts(t, hn)["p0"])

	nbIP := containerIP(t, hn)
	hw, _ := start(t, r, newTenant(t), instance{name: "web", settings: netSettings(outboundInternet, 8080, 9090),
		args: probeArgs("198.51.100.2:9999", "10.232.0.2:9999", testGW+":9999", "10.232.0.1:9999", "169.254.169.254:80", nbIP+":8080", nbHairpin)})
	out = waitLog(t, r, hw, "probed", 30*time.Second)
	for _, want := range []string{"198.51.100.2:9999 open", "10.232.0.2:9999 closed", testGW + ":9999 closed", "10.232.0.1:9999 closed", "169.254.169.254:80 closed", nbIP + ":8080 closed", nbHairpin + " closed", "ipv6 addresses: 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("outbound internet: no %q in:\n%s", want, out)
		}
	}
	ports := hostPorts(t, hw)
	if ports["p0"] != testPortLo+1 || ports["p1"] != testPortLo+2 {
		t.Errorf("ports %v, want a block after the neighbour's %v", ports, hostPorts(t, hn))
	}
	if got := get(t, ports["p0"]); !strings.Contains(got, "workload:x:10000") {
		t.Errorf("published port: %q", got)
	}
	st, err := r.Inspect(ctx, hw)
	if want := fmt.Sprintf("published ports: p0=%d p1=%d", testPortLo+1, testPortLo+2); err != nil || st.Message != want {
		t.Errorf("status %+v, %v; want message %q", st, err, want)
	}
	if got := get(t, hostPorts(t, hn)["p0"]); !strings.Contains(got, "workload:x:10000") {
		t.Errorf("neighbour's published port, with web running: %q", got)
	}

	for _, h := range []sdk.Handle{hw, hn} {
		if err := r.Destroy(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if after := hostState(t); after != before {
		t.Errorf("destroy left network state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestPortPool checks the pool on real containers: exhaustion is a clear
// error that leaves nothing, a new Runtime (a plugin restart) recovers
// the blocks in use from the containers' labels, and a destroyed
// instance's block is reused.
func TestPortPool(t *testing.T) {
	before := hostState(t)
	ctx := context.Background()
	tn := newTenant(t)
	r := netRuntime(t)
	ha, _ := start(t, r, tn, instance{name: "a", settings: netSettings(outboundNone, 80, 81), args: []string{"sleep", "1000"}})
	if got := hostPorts(t, ha); got["p0"] != testPortLo || got["p1"] != testPortLo+1 {
		t.Fatalf("a: ports %v", got)
	}
	// A new Runtime knows nothing but what containerd holds.
	r2 := netRuntime(t)
	hb, _ := start(t, r2, tn, instance{name: "b", settings: netSettings(outboundNone, 80), args: []string{"sleep", "1000"}})
	if got := hostPorts(t, hb); got["p0"] != testPortLo+2 {
		t.Fatalf("b after restart: ports %v", got)
	}
	withB := hostState(t)
	_, err := r2.Start(ctx, request(t, tn, instance{name: "c", settings: netSettings(outboundNone, 80, 81), args: []string{"sleep", "1000"}}))
	if !errors.Is(err, sdk.ErrUnavailable) || !strings.Contains(err.Error(), "port pool") {
		t.Fatalf("exhausted pool: %v", err)
	}
	checkNothingLeft(t, tn.name+".c")
	if after := hostState(t); after != withB {
		t.Errorf("a refused start left network state:\nbefore:\n%s\nafter:\n%s", withB, after)
	}
	if err := r2.Destroy(ctx, ha); err != nil {
		t.Fatal(err)
	}
	hc, _ := start(t, r2, tn, instance{name: "d", settings: netSettings(outboundNone, 80, 81), args: []string{"sleep", "1000"}})
	if got := hostPorts(t, hc); got["p0"] != testPortLo || got["p1"] != testPortLo+1 {
		t.Fatalf("d: ports %v, want a's freed block", got)
	}
	for _, h := range []sdk.Handle{hb, hc} {
		if err := r2.Destroy(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if after := hostState(t); after != before {
		t.Errorf("destroy left network state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestNetworkSetupFails checks that a start whose CNI attachment fails
// (no plugins in cni_path) is an error that leaves no container, network
// namespace, rule or lease.
func TestNetworkSetupFails(t *testing.T) {
	before := hostState(t)
	tn := newTenant(t)
	r := newRuntime(t, sdk.Config{
		"network": sdk.Config{"bridge": testBridge, "subnet": testSubnet, "cni_path": t.TempDir()},
		"ports":   sdk.Config{"from": float64(testPortLo), "to": float64(testPortHi)},
	})
	_, err := r.Start(context.Background(), request(t, tn, instance{name: "x", settings: netSettings(outboundInternet, 80), args: []string{"sleep", "1000"}}))
	if err == nil || !strings.Contains(err.Error(), "attach to bridge") {
		t.Fatalf("start without CNI plugins: %v", err)
	}
	checkNothingLeft(t, tn.name+".x")
	if after := hostState(t); after != before {
		t.Errorf("a failed start left network state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

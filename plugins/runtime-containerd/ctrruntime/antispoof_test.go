package ctrruntime

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	cnins "github.com/containernetworking/plugins/pkg/ns"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// The outside address the spoofed datagrams are sent to, a public one
// (TEST-NET-2) in outsideNS.
const (
	outsideIP      = "198.51.100.2"
	outsideUDPPort = 9998
)

// serveIDArgs is a container command that runs script, then serves name
// as /id over HTTP on port 8080: the host tells by the answer which
// container it reached.
func serveIDArgs(script, name string) []string {
	return []string{"sh", "-c", script + "\nmkdir /tmp/www && echo " + name + " >/tmp/www/id && exec httpd -f -p 8080 -h /tmp/www"}
}

// workloadSpoofScript tries, as the workload, to take the address ip and
// MAC address mac of another container: adding the address, changing its
// MAC address, a gratuitous ARP for the address, the MAC change from a
// user namespace of its own, and spoofer's sends from the address. It
// prints "NAME refused: ERROR" or "NAME allowed..." for each, then
// "tried".
func workloadSpoofScript(ip, mac string) string {
	return `try() { n=$1; shift; if out=$("$@" 2>&1 </dev/null); then echo "$n allowed: $out"; else echo "$n refused: $out"; fi; }
try addr ip addr add ` + ip + `/32 dev eth0
try mac ip link set dev eth0 address ` + mac + `
try arping arping -U -c 1 -w 1 -I eth0 -s ` + ip + ` ` + ip + `
try userns unshare -r ip link set dev eth0 address ` + mac + `
/state/spoofer ` + ip + ` ` + outsideIP + ` ` + strconv.Itoa(outsideUDPPort) + `
echo tried`
}

// workloadTries are the tries of workloadSpoofScript.
var workloadTries = []string{"addr", "mac", "arping", "userns", "bind", "freebind", "transparent", "rawip", "packet"}

// buildSpoofer builds testdata/spoofer, static: the test image has no C
// library.
func buildSpoofer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "spoofer")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/spoofer")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build spoofer: %v: %s", err, out)
	}
	return bin
}

// fetchID fetches /id from 127.0.0.1:port, once.
func fetchID(port int) (string, error) {
	hc := http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/id", port))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}

// waitID fetches /id from 127.0.0.1:port, retrying while the server
// starts.
func waitID(t *testing.T, port int) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		id, err := fetchID(port)
		if err == nil && id != "" {
			return id
		}
		if time.Now().After(deadline) {
			t.Fatalf("port %d: %q, %v", port, id, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// outsideUDP listens on outsideIP:outsideUDPPort in outsideNS's namespace
// and sends what it receives on the returned channel.
func outsideUDP(t *testing.T) <-chan string {
	t.Helper()
	ns, err := cnins.GetNS(filepath.Join(netnsDir, "kgmt-outside"))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	got := make(chan string, 16)
	err = ns.Do(func(cnins.NetNS) error {
		c, err := net.ListenPacket("udp4", fmt.Sprintf("%s:%d", outsideIP, outsideUDPPort))
		if err != nil {
			return err
		}
		t.Cleanup(func() { c.Close() })
		go func() {
			buf := make([]byte, 1500)
			for {
				n, _, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				got <- string(buf[:n])
			}
		}()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// received returns the first datagram within wait, "" if none came.
func received(got <-chan string, wait time.Duration) string {
	select {
	case s := <-got:
		return s
	case <-time.After(wait):
		return ""
	}
}

// sendFrames sends raw Ethernet frames out of eth0 in the network
// namespace at path, as root: what a workload with CAP_NET_RAW in its own
// namespace could do.
func sendFrames(t *testing.T, path string, frames ...[]byte) {
	t.Helper()
	ns, err := cnins.GetNS(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	err = ns.Do(func(cnins.NetNS) error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		// Protocol 0: the socket sends and receives nothing.
		fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer syscall.Close(fd)
		for _, f := range frames {
			sa := &syscall.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
			copy(sa.Addr[:], f[:6])
			if err := syscall.Sendto(fd, f, 0, sa); err != nil {
				return fmt.Errorf("send frame: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// broadcastMAC and zeroMAC are the Ethernet broadcast address and the
// unknown target address of an ARP request.
var (
	broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	zeroMAC      = net.HardwareAddr{0, 0, 0, 0, 0, 0}
)

// ethernet returns an Ethernet header.
func ethernet(dst, src net.HardwareAddr, ethertype uint16) []byte {
	b := append(append([]byte{}, dst...), src...)
	return binary.BigEndian.AppendUint16(b, ethertype)
}

// arpFrame returns an ARP request (op 1) or reply (op 2) for IPv4 over
// Ethernet, from src to dst.
func arpFrame(src, dst net.HardwareAddr, op uint16, sha net.HardwareAddr, spa net.IP, tha net.HardwareAddr, tpa net.IP) []byte {
	b := ethernet(dst, src, 0x0806)
	b = append(b, 0, 1, 0x08, 0, 6, 4)
	b = binary.BigEndian.AppendUint16(b, op)
	b = append(b, sha...)
	b = append(b, spa.To4()...)
	b = append(b, tha...)
	return append(b, tpa.To4()...)
}

// udpFrame returns an IPv4 UDP datagram of payload from src to dst (and
// the Ethernet addresses srcMAC to dstMAC), port 40000 to port.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst net.IP, port int, payload string) []byte {
	udp := binary.BigEndian.AppendUint16(nil, 40000)
	udp = binary.BigEndian.AppendUint16(udp, uint16(port))
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(udp, 0, 0) // no checksum
	udp = append(udp, payload...)
	ip := []byte{0x45, 0}
	ip = binary.BigEndian.AppendUint16(ip, uint16(20+len(udp)))
	ip = append(ip, 0, 0, 0x40, 0, 64, syscall.IPPROTO_UDP, 0, 0)
	ip = append(ip, src.To4()...)
	ip = append(ip, dst.To4()...)
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	return append(append(ethernet(dstMAC, srcMAC, 0x0800), ip...), udp...)
}

// ipv6Frame returns an IPv6 packet with no payload from a link-local
// address to all nodes.
func ipv6Frame(src net.HardwareAddr) []byte {
	b := ethernet(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, src, 0x86dd)
	b = append(b, 0x60, 0, 0, 0, 0, 0, 59, 255) // no next header, hop limit 255
	b = append(b, net.ParseIP("fe80::1")...)
	return append(b, net.ParseIP("ff02::1")...)
}

// dropCounter matches the drop rule of a listing with counters.
var dropCounter = regexp.MustCompile(`(?m)^-j DROP , pcnt = ([0-9]+)`)

// drops returns how many frames the chain's drop rule dropped.
func drops(t *testing.T, chain string) int {
	t.Helper()
	m := dropCounter.FindStringSubmatch(run(t, ebtablesCmd, "-t", "nat", "-L", chain, "--Lc"))
	if m == nil {
		t.Fatalf("no drop rule in chain %s", chain)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestSpoofing checks that a container on the shared bridge cannot pass
// for another tenant's. As the workload it can add no address, change no
// MAC address and open no raw socket, not even from a user namespace of
// its own. Past that (the test acts as root in its network namespace),
// its anti-spoofing filter drops its ARP claims to the other's address,
// its datagrams from that address (which would use the other's outbound
// rule), its IPv6 and its frames from the other's MAC address: the host's
// connections to the other's published port still reach the other, which
// works throughout. Without the filter the same frames do take over the
// other's traffic; Recover in a restarted plugin restores it; Destroy
// removes it.
func TestSpoofing(t *testing.T) {
	outsideNS(t)
	outside := outsideUDP(t)
	before := hostState(t)
	r := netRuntime(t)
	ctx := context.Background()

	// Bob may go out: a spoofer with his address would too.
	hb, _ := start(t, r, newTenant(t), instance{name: "bob", settings: netSettings(outboundInternet, 8080), args: serveIDArgs("", "bob")})
	bob := containerLabels(t, hb)
	bobPort := hostPorts(t, hb)["p0"]
	if id := waitID(t, bobPort); id != "bob" {
		t.Fatalf("bob's port answers %q", id)
	}
	// Alice runs spoofer from her state directory.
	req := request(t, newTenant(t), instance{name: "alice", settings: netSettings(outboundNone, 8080), state: true,
		args: serveIDArgs(workloadSpoofScript(bob[labelIP], bob[labelMAC]), "alice")})
	b, err := os.ReadFile(buildSpoofer(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(req.Mounts[0].Source, "spoofer"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	ha, err := r.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Destroy(context.Background(), ha); err != nil {
			t.Errorf("destroy alice: %v", err)
		}
	})
	out := waitLog(t, r, ha, "tried", 30*time.Second)
	for _, try := range workloadTries {
		if !regexp.MustCompile(`(?m)^` + try + ` refused: `).MatchString(out) {
			t.Errorf("the workload's %s was not refused:\n%s", try, out)
		}
	}
	if id := waitID(t, hostPorts(t, ha)["p0"]); id != "alice" {
		t.Fatalf("alice's port answers %q", id)
	}
	alice := containerLabels(t, ha)
	f, ok, err := spoofFilterOf(alice)
	if err != nil || !ok {
		t.Fatalf("alice's filter: %v, %v (labels %v)", ok, err, alice)
	}
	filter := run(t, ebtablesCmd, "-t", "nat", "-L", f.chain())

	bobIP, gw := net.ParseIP(bob[labelIP]).To4(), net.ParseIP(testGW).To4()
	bobMAC, err := net.ParseMAC(bob[labelMAC])
	if err != nil {
		t.Fatal(err)
	}
	br, err := net.InterfaceByName(testBridge)
	if err != nil {
		t.Fatal(err)
	}
	gwMAC, aliceMAC := br.HardwareAddr, f.mac
	// bobWorks checks that the host's connection to bob's port reaches
	// bob, and that the host's neighbour entry of bob's address (if any)
	// is bob's MAC address.
	bobWorks := func(when string) {
		t.Helper()
		if id, err := fetchID(bobPort); id != "bob" {
			t.Errorf("%s: bob's port answers %q, %v", when, id, err)
		}
		if neigh := run(t, "ip", "neigh", "show", bob[labelIP], "dev", testBridge); strings.Contains(neigh, aliceMAC.String()) {
			t.Errorf("%s: the host's neighbour entry of bob: %s", when, neigh)
		}
	}
	poison := [][]byte{
		// Gratuitous ARP: "bob's address is at alice's MAC address".
		arpFrame(aliceMAC, broadcastMAC, 1, aliceMAC, bobIP, zeroMAC, bobIP),
		// A request to the host, which learns the sender from it.
		arpFrame(aliceMAC, broadcastMAC, 1, aliceMAC, bobIP, zeroMAC, gw),
		// An unsolicited reply.
		arpFrame(aliceMAC, gwMAC, 2, aliceMAC, bobIP, gwMAC, gw),
	}
	spoofed := udpFrame(aliceMAC, gwMAC, bobIP, net.ParseIP(outsideIP), outsideUDPPort, "spoofed")
	// Alice holds bob's address too, as a man in the middle would.
	ns := filepath.Base(alice[labelNetNS])
	run(t, "ip", "-n", ns, "addr", "add", bob[labelIP]+"/32", "dev", "eth0")

	n := drops(t, f.chain())
	sendFrames(t, alice[labelNetNS], poison...)
	bobWorks("after ARP claims")
	sendFrames(t, alice[labelNetNS], spoofed, ipv6Frame(aliceMAC))
	if got := received(outside, time.Second); got != "" {
		t.Errorf("a datagram from bob's address got out: %q", got)
	}
	if got := drops(t, f.chain()); got < n+len(poison)+2 {
		t.Errorf("the filter dropped %d frames, want at least %d", got-n, len(poison)+2)
	}

	// Without the filter (a flushed firewall), the same frames work.
	if err := ebtables(ctx, append([]string{"-D", "PREROUTING"}, f.jump()...)...); err != nil {
		t.Fatal(err)
	}
	sendFrames(t, alice[labelNetNS], spoofed)
	if got := received(outside, 2*time.Second); got != "spoofed" {
		t.Errorf("unfiltered, a datagram from bob's address did not get out: %q", got)
	}
	poisoned := false
	for i := 0; i < 10 && !poisoned; i++ {
		sendFrames(t, alice[labelNetNS], poison...)
		id, _ := fetchID(bobPort)
		poisoned = id == "alice"
	}
	if !poisoned {
		t.Error("unfiltered, ARP claims did not take bob's port over")
	}

	// A restarted plugin's Recover puts the filter back.
	r2 := netRuntime(t)
	if _, err := r2.Recover(ctx, ha); err != nil {
		t.Fatal(err)
	}
	if got := run(t, ebtablesCmd, "-t", "nat", "-L", f.chain()); got != filter {
		t.Errorf("recovered chain:\n%s\nwant:\n%s", got, filter)
	}
	if _, err := r2.Recover(ctx, ha); err != nil {
		t.Fatalf("recover twice: %v", err)
	}
	if got := strings.Count(run(t, ebtablesCmd, "-t", "nat", "-L", "PREROUTING"), " -j "+f.chain()); got != 1 {
		t.Errorf("%d jumps to %s after recovering twice, want 1", got, f.chain())
	}
	run(t, "ip", "neigh", "flush", "to", bob[labelIP], "dev", testBridge)
	sendFrames(t, alice[labelNetNS], poison...)
	bobWorks("after ARP claims, recovered")
	sendFrames(t, alice[labelNetNS], spoofed)
	if got := received(outside, time.Second); got != "" {
		t.Errorf("recovered, a datagram from bob's address got out: %q", got)
	}

	// Alice takes bob's MAC address: the bridge must not learn it on her
	// port.
	run(t, "ip", "-n", ns, "link", "set", "dev", "eth0", "address", bob[labelMAC])
	sendFrames(t, alice[labelNetNS],
		arpFrame(bobMAC, broadcastMAC, 1, bobMAC, bobIP, zeroMAC, bobIP),
		arpFrame(bobMAC, broadcastMAC, 1, bobMAC, bobIP, zeroMAC, gw),
		udpFrame(bobMAC, gwMAC, bobIP, net.ParseIP(outsideIP), outsideUDPPort, "spoofed"))
	if fdb := run(t, "bridge", "fdb", "show", "dev", f.veth); strings.Contains(fdb, bob[labelMAC]) {
		t.Errorf("the bridge learned bob's MAC address on alice's port:\n%s", fdb)
	}
	bobWorks("after alice took bob's MAC address")
	if got := received(outside, time.Second); got != "" {
		t.Errorf("a datagram from bob's MAC and address got out: %q", got)
	}

	// CNI's DEL would tear down masquerading for each address of eth0,
	// bob's too, and fail on it.
	run(t, "ip", "-n", ns, "addr", "del", bob[labelIP]+"/32", "dev", "eth0")
	for _, h := range []sdk.Handle{ha, hb} {
		if err := r.Destroy(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if ebtablesOK(ctx, "-L", f.chain()) {
		t.Errorf("chain %s left after destroy", f.chain())
	}
	if after := hostState(t); after != before {
		t.Errorf("destroy left network state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestSpoofFilterOf checks the labels a filter is read from: none without
// a veth, and an error for a veth name that is no interface name (it
// names the chain and goes to ebtables), a MAC address that is not
// Ethernet's or an address that is not IPv4.
func TestSpoofFilterOf(t *testing.T) {
	good := map[string]string{labelVeth: "veth1a2b3c4d", labelMAC: "02:42:0a:e7:00:05", labelIP: "10.231.0.5"}
	with := func(k, v string) map[string]string {
		l := map[string]string{}
		for lk, lv := range good {
			l[lk] = lv
		}
		l[k] = v
		return l
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		ok     bool
		err    string
	}{
		{"good", good, true, ""},
		{"no network", map[string]string{}, false, ""},
		{"no veth", with(labelVeth, ""), false, ""},
		{"veth an option", with(labelVeth, "-j"), false, "bad interface name"},
		{"veth with a space", with(labelVeth, "veth1 -j"), false, "bad interface name"},
		{"veth too long", with(labelVeth, "veth1a2b3c4d5e6f"), false, "bad interface name"},
		{"no MAC", with(labelMAC, ""), false, "bad MAC"},
		{"long MAC", with(labelMAC, "02:00:5e:10:00:00:00:01"), false, "bad MAC"},
		{"no address", with(labelIP, ""), false, "bad IPv4"},
		{"IPv6 address", with(labelIP, "fe80::1"), false, "bad IPv4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, ok, err := spoofFilterOf(tc.labels)
			if ok != tc.ok || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("spoofFilterOf = %+v, %v, %v; want ok %v, error %q", f, ok, err, tc.ok, tc.err)
			}
			if !ok {
				return
			}
			want := []string{
				"-p ARP -s 02:42:0a:e7:00:05 --arp-mac-src 02:42:0a:e7:00:05 --arp-ip-src 10.231.0.5 -j RETURN",
				"-p IPv4 -s 02:42:0a:e7:00:05 --ip-src 10.231.0.5 -j RETURN",
				"-j DROP",
			}
			for i, r := range f.rules() {
				if got := strings.Join(r, " "); got != want[i] {
					t.Errorf("rule %d: %q, want %q", i, got, want[i])
				}
			}
			if got := strings.Join(f.jump(), " "); got != "-i veth1a2b3c4d -j KGM-veth1a2b3c4d" {
				t.Errorf("jump %q", got)
			}
		})
	}
}

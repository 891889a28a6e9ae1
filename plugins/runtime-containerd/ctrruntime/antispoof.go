package ctrruntime

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strings"
)

// The labels of a networked container's anti-spoofing filter, besides
// labelIP.
const (
	labelVeth = "kigumi.veth"
	labelMAC  = "kigumi.mac"
)

// ebtablesCmd is the bridge firewall tool. The nf_tables flavour ships
// with the iptables package and works on kernels without the legacy
// ebtables modules; its restore applies a chain in one transaction.
const ebtablesCmd = "ebtables-nft"

// vethName is what a host-side veth name, and so the filter's chain name,
// may be: CNI's bridge plugin names them veth and 8 hex digits.
var vethName = regexp.MustCompile(`^[a-z][a-z0-9]{0,14}$`)

// spoofFilter keeps one container from spoofing on the shared bridge: only
// ARP and IPv4 frames with its own MAC address, and its own address as the
// ARP sender or the IPv4 source, may enter the bridge from its host-side
// veth; everything else (other addresses, IPv6, other ethertypes) is
// dropped. The rules are in the bridge nat table's PREROUTING chain, which
// sees a frame before the bridge learns its source MAC address and before
// the host's ARP or IP stack takes it: a container can poison neither the
// bridge's forwarding table nor the host's neighbour table, nor borrow
// another container's address (and its outbound rule).
type spoofFilter struct {
	veth string
	mac  net.HardwareAddr
	ip   net.IP
}

// spoofFilterOf returns the filter a container's labels record, and false
// for a container without one (no network, or the per-tenant mode's).
func spoofFilterOf(labels map[string]string) (spoofFilter, bool, error) {
	veth := labels[labelVeth]
	if veth == "" {
		return spoofFilter{}, false, nil
	}
	if !vethName.MatchString(veth) {
		return spoofFilter{}, false, fmt.Errorf("label %s: bad interface name %q", labelVeth, veth)
	}
	mac, err := net.ParseMAC(labels[labelMAC])
	if err != nil || len(mac) != 6 {
		return spoofFilter{}, false, fmt.Errorf("label %s: bad MAC address %q", labelMAC, labels[labelMAC])
	}
	ip := net.ParseIP(labels[labelIP]).To4()
	if ip == nil {
		return spoofFilter{}, false, fmt.Errorf("label %s: bad IPv4 address %q", labelIP, labels[labelIP])
	}
	return spoofFilter{veth: veth, mac: mac, ip: ip}, true, nil
}

// chain is the filter's own chain, named after the veth.
func (f spoofFilter) chain() string { return "KGM-" + f.veth }

// jump is the PREROUTING rule that sends the veth's frames to the chain.
func (f spoofFilter) jump() []string { return []string{"-i", f.veth, "-j", f.chain()} }

// rules are the chain's rules, in order: what the container may send
// returns to PREROUTING (and on to the bridge), the rest is dropped.
func (f spoofFilter) rules() [][]string {
	mac, ip := f.mac.String(), f.ip.String()
	return [][]string{
		{"-p", "ARP", "-s", mac, "--arp-mac-src", mac, "--arp-ip-src", ip, "-j", "RETURN"},
		{"-p", "IPv4", "-s", mac, "--ip-src", ip, "-j", "RETURN"},
		{"-j", "DROP"},
	}
}

// install makes the filter, or restores it when it was lost or altered
// (Recover): the chain is flushed and filled in one transaction, then the
// jump to it is added if missing, so that at no moment does a jump lead to
// a chain that lets more through.
func (f spoofFilter) install(ctx context.Context) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*nat\n:%s RETURN\n", f.chain())
	for _, r := range f.rules() {
		fmt.Fprintf(&b, "-A %s %s\n", f.chain(), strings.Join(r, " "))
	}
	cmd := exec.CommandContext(ctx, ebtablesCmd+"-restore", "--noflush")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s-restore: %w: %s", ebtablesCmd, err, bytes.TrimSpace(out))
	}
	if ebtablesOK(ctx, append([]string{"--check", "PREROUTING"}, f.jump()...)...) {
		return nil
	}
	return ebtables(ctx, append([]string{"-I", "PREROUTING", "1"}, f.jump()...)...)
}

// remove deletes the jump and the chain. It succeeds on what is gone.
func (f spoofFilter) remove(ctx context.Context) error {
	if ebtablesOK(ctx, append([]string{"--check", "PREROUTING"}, f.jump()...)...) {
		if err := ebtables(ctx, append([]string{"-D", "PREROUTING"}, f.jump()...)...); err != nil {
			return err
		}
	}
	if !ebtablesOK(ctx, "-L", f.chain()) {
		return nil
	}
	if err := ebtables(ctx, "-F", f.chain()); err != nil {
		return err
	}
	return ebtables(ctx, "-X", f.chain())
}

// ebtables runs an ebtables command on the nat table.
func ebtables(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, ebtablesCmd, append([]string{"-t", "nat"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", ebtablesCmd, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ebtablesOK reports whether an ebtables check or listing on the nat
// table succeeds: the rule or chain exists.
func ebtablesOK(ctx context.Context, args ...string) bool {
	return exec.CommandContext(ctx, ebtablesCmd, append([]string{"-t", "nat"}, args...)...).Run() == nil
}

package ctrruntime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/pkg/netns"
	gocni "github.com/containerd/go-cni"
	"github.com/coreos/go-iptables/iptables"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// Defaults of the host's network settings.
const (
	defaultBridge   = "kgm0"
	defaultSubnet   = "10.88.0.0/16"
	defaultCNIPath  = "/usr/lib/cni"
	defaultPortFrom = 20000
	defaultPortTo   = 29999
	// netnsDir holds the named network namespaces of networked containers.
	netnsDir = "/var/run/netns"
)

// The labels of a networked container, besides labelPorts and
// labelPortMap.
const (
	labelNetNS    = "kigumi.netns"
	labelIP       = "kigumi.ip"
	labelOutbound = "kigumi.outbound"
)

// The outbound settings of an instance's network.
const (
	outboundNone     = "none"
	outboundInternet = "internet"
)

// The iptables chains of the runtime, in the filter table.
const (
	chainInput    = "KGM-INPUT"
	chainForward  = "KGM-FORWARD"
	chainInternet = "KGM-INTERNET"
)

// localNets are the destinations a container with outbound "internet"
// may not reach: the host's local networks, link-local (the cloud
// metadata address 169.254.169.254 among them), CGNAT, loopback and
// multicast. The bridge's subnet is one of the private ranges or is added.
var localNets = []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "224.0.0.0/4", "0.0.0.0/8", "240.0.0.0/4"}

// hostNetwork is the host's network settings.
type hostNetwork struct {
	bridge  string
	subnet  *net.IPNet
	cniPath string
	// slirp is the slirp4netns executable of the per-tenant mode.
	slirp string
	ports portBlock
}

// netBlocks are the host settings' network blocks.
var netBlocks = []sdk.Block{
	{Name: "network", Nesting: sdk.NestingSingle, Description: "the bridge networked containers are attached to", Schema: sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "bridge", Type: sdk.TypeString, Description: "the bridge's name (default " + defaultBridge + ")"},
		{Name: "subnet", Type: sdk.TypeString, Description: "the bridge's IPv4 subnet (default " + defaultSubnet + ")"},
		{Name: "cni_path", Type: sdk.TypeString, Description: "the directory of the CNI plugins (default " + defaultCNIPath + ")"},
		{Name: "slirp4netns", Type: sdk.TypeString, Description: "the absolute path of slirp4netns, which networks the per-tenant mode's containers (default: found in PATH)"},
	}}},
	{Name: "ports", Nesting: sdk.NestingSingle, Description: "the host's pool of published ports", Schema: sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "from", Type: sdk.TypeNumber, Description: fmt.Sprintf("the pool's first port (default %d)", defaultPortFrom)},
		{Name: "to", Type: sdk.TypeNumber, Description: fmt.Sprintf("the pool's last port (default %d)", defaultPortTo)},
	}}},
}

// instanceNetBlock is the instance settings' network block.
var instanceNetBlock = sdk.Block{Name: "network", Nesting: sdk.NestingSingle, Description: "gives the container a network (without it: loopback only)", Schema: sdk.Schema{
	Attributes: []sdk.Attribute{{Name: "outbound", Type: sdk.TypeString, Description: `"none" (default) or "internet": outbound connections except to the host and its local networks`}},
	Blocks: []sdk.Block{{Name: "port", Nesting: sdk.NestingMap, Description: "a port published on the host, from the host's pool", Schema: sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "container", Type: sdk.TypeNumber, Description: "the port in the container"},
		{Name: "protocol", Type: sdk.TypeString, Description: `"tcp" (default) or "udp"`},
	}}}},
}}

// parseHostNetwork decodes the host's network and ports blocks.
func parseHostNetwork(settings sdk.Config) (hostNetwork, error) {
	_, subnet, _ := net.ParseCIDR(defaultSubnet)
	hn := hostNetwork{bridge: defaultBridge, subnet: subnet, cniPath: defaultCNIPath, slirp: defaultSlirp, ports: portBlock{defaultPortFrom, defaultPortTo}}
	if v, ok := settings["network"]; ok && v != nil {
		c, ok := v.(sdk.Config)
		if !ok {
			return hn, sdk.InvalidAttribute("network", "must be a block")
		}
		for k, v := range c {
			s, _ := v.(string)
			switch k {
			case "bridge":
				if len(s) == 0 || len(s) > 15 || !containerID.MatchString(s) {
					return hn, sdk.InvalidAttribute("network.bridge", "must be an interface name of 1 to 15 lower-case letters, digits, '.' and '-', not %q", s)
				}
				hn.bridge = s
			case "subnet":
				ip, n, err := net.ParseCIDR(s)
				if ones, bits := n.Mask.Size(); err != nil || ip.To4() == nil || !ip.Equal(n.IP) || ones > 28 || bits != 32 {
					return hn, sdk.InvalidAttribute("network.subnet", "must be an IPv4 network such as 10.88.0.0/16, of at most /28, not %q", s)
				}
				hn.subnet = n
			case "cni_path":
				if !filepath.IsAbs(s) {
					return hn, sdk.InvalidAttribute("network.cni_path", "must be an absolute path, not %q", s)
				}
				hn.cniPath = s
			case "slirp4netns":
				if !filepath.IsAbs(s) {
					return hn, sdk.InvalidAttribute("network.slirp4netns", "must be an absolute path, not %q", s)
				}
				hn.slirp = s
			default:
				return hn, sdk.InvalidAttribute("network."+k, "the network block has no setting %q", k)
			}
		}
	}
	if v, ok := settings["ports"]; ok && v != nil {
		c, ok := v.(sdk.Config)
		if !ok {
			return hn, sdk.InvalidAttribute("ports", "must be a block")
		}
		for k, v := range c {
			p, ok := portNumber(v)
			switch {
			case k != "from" && k != "to":
				return hn, sdk.InvalidAttribute("ports."+k, "the ports block has no setting %q", k)
			case !ok:
				return hn, sdk.InvalidAttribute("ports."+k, "must be a port from 1 to 65535, not %v", v)
			case k == "from":
				hn.ports.from = p
			default:
				hn.ports.to = p
			}
		}
		if hn.ports.to < hn.ports.from {
			return hn, sdk.InvalidAttribute("ports.to", "must not be below ports.from (%d)", hn.ports.from)
		}
	}
	return hn, nil
}

// portNumber returns v as a port number.
func portNumber(v any) (int, bool) {
	f, ok := v.(float64)
	if !ok || f != math.Trunc(f) || f < 1 || f > 65535 {
		return 0, false
	}
	return int(f), true
}

// portSpec is one published port of an instance.
type portSpec struct {
	name      string
	container int
	protocol  string
}

// instanceNetwork is an instance's network settings.
type instanceNetwork struct {
	outbound string
	// ports are sorted by name: the i-th takes the i-th port of the
	// instance's block.
	ports []portSpec
}

// parseInstanceNetwork decodes an instance's network block.
func parseInstanceNetwork(v any) (*instanceNetwork, error) {
	c, ok := v.(sdk.Config)
	if !ok {
		return nil, sdk.InvalidAttribute("settings.network", "must be a block")
	}
	in := &instanceNetwork{outbound: outboundNone}
	for k, v := range c {
		switch k {
		case "outbound":
			s, _ := v.(string)
			if s != outboundNone && s != outboundInternet {
				return nil, sdk.InvalidAttribute("settings.network.outbound", `must be "none" or "internet", not %v`, v)
			}
			in.outbound = s
		case "port":
			ports, ok := v.(map[string]sdk.Config)
			if !ok {
				return nil, sdk.InvalidAttribute("settings.network.port", "must be labeled blocks")
			}
			for name, pc := range ports {
				attr := fmt.Sprintf("settings.network.port[%q]", name)
				p := portSpec{name: name, protocol: "tcp"}
				for pk, pv := range pc {
					switch pk {
					case "container":
						n, ok := portNumber(pv)
						if !ok {
							return nil, sdk.InvalidAttribute(attr+".container", "must be a port from 1 to 65535, not %v", pv)
						}
						p.container = n
					case "protocol":
						s, _ := pv.(string)
						if s != "tcp" && s != "udp" {
							return nil, sdk.InvalidAttribute(attr+".protocol", `must be "tcp" or "udp", not %v`, pv)
						}
						p.protocol = s
					default:
						return nil, sdk.InvalidAttribute(attr+"."+pk, "a port block has no setting %q", pk)
					}
				}
				if p.container == 0 {
					return nil, sdk.InvalidAttribute(attr+".container", "a port needs its container port")
				}
				in.ports = append(in.ports, p)
			}
		default:
			return nil, sdk.InvalidAttribute("settings.network."+k, "the network block has no setting %q", k)
		}
	}
	if len(in.ports) > maxPorts {
		return nil, sdk.InvalidAttribute("settings.network.port", "an instance publishes at most %d ports, not %d", maxPorts, len(in.ports))
	}
	sort.Slice(in.ports, func(i, j int) bool { return in.ports[i].name < in.ports[j].name })
	return in, nil
}

// cniConfList is the CNI network of the host's bridge: a veth on the
// bridge with an address from host-local IPAM, masquerading out, IPv6
// disabled in the container, and portmap for the published ports.
func (hn hostNetwork) cniConfList() ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "kigumi-" + hn.bridge,
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": hn.bridge, "isGateway": true, "ipMasq": true,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]map[string]string{{{"subnet": hn.subnet.String()}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			// No IPv6: its link-local addresses would reach the host
			// past the IPv4 rules.
			map[string]any{"type": "tuning", "sysctl": map[string]string{
				"net.ipv6.conf.all.disable_ipv6":     "1",
				"net.ipv6.conf.default.disable_ipv6": "1",
			}},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	return json.Marshal(conf)
}

// cni returns the CNI of the host's bridge.
func (hn hostNetwork) cni() (gocni.CNI, error) {
	b, err := hn.cniConfList()
	if err != nil {
		return nil, err
	}
	c, err := gocni.New(gocni.WithPluginDir([]string{hn.cniPath}), gocni.WithMinNetworkCount(1), gocni.WithConfListBytes(b))
	if err != nil {
		return nil, fmt.Errorf("load CNI network: %w", err)
	}
	return c, nil
}

// ensureChains makes the runtime's iptables chains, once per bridge:
//   - KGM-INPUT, for packets from the bridge to the host itself: replies
//     only, so that no container opens a connection to any of the host's
//     addresses;
//   - KGM-FORWARD, for packets from the bridge routed on: replies, and
//     for each container with outbound "internet" a jump to KGM-INTERNET;
//     everything else is dropped;
//   - KGM-INTERNET: drops the local networks, accepts the rest.
func (hn hostNetwork) ensureChains(ipt *iptables.IPTables) error {
	for _, chain := range []string{chainInput, chainForward, chainInternet} {
		ok, err := ipt.ChainExists("filter", chain)
		if err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
		if !ok {
			if err := ipt.NewChain("filter", chain); err != nil {
				return fmt.Errorf("iptables: %w", err)
			}
		}
	}
	established := []string{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"}
	for _, r := range []struct {
		chain string
		rule  []string
	}{
		{chainInput, established},
		{chainInput, []string{"-j", "DROP"}},
		{chainForward, established},
		{chainForward, []string{"-j", "DROP"}},
	} {
		if err := ipt.AppendUnique("filter", r.chain, r.rule...); err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
	}
	for _, dst := range append(localNets, hn.subnet.String()) {
		if err := ipt.AppendUnique("filter", chainInternet, "-d", dst, "-j", "DROP"); err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
	}
	if err := ipt.AppendUnique("filter", chainInternet, "-j", "ACCEPT"); err != nil {
		return fmt.Errorf("iptables: %w", err)
	}
	for _, j := range [][2]string{{"INPUT", chainInput}, {"FORWARD", chainForward}} {
		rule := []string{"-i", hn.bridge, "-j", j[1]}
		ok, err := ipt.Exists("filter", j[0], rule...)
		if err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
		if !ok {
			if err := ipt.Insert("filter", j[0], 1, rule...); err != nil {
				return fmt.Errorf("iptables: %w", err)
			}
		}
	}
	return nil
}

// internetRule is the KGM-FORWARD rule that lets a container out.
func internetRule(ip string) []string { return []string{"-s", ip + "/32", "-j", chainInternet} }

// hostPorts returns the host port of each of the instance's ports, by
// name, in its block.
func (in *instanceNetwork) hostPorts(block portBlock) map[string]int {
	if len(in.ports) == 0 {
		return nil
	}
	hp := map[string]int{}
	for i, p := range in.ports {
		hp[p.name] = block.from + i
	}
	return hp
}

// labels returns the labels a networked container is created with.
func (in *instanceNetwork) labels(block portBlock) map[string]string {
	l := map[string]string{labelOutbound: in.outbound}
	if len(in.ports) > 0 {
		l[labelPorts] = block.String()
		l[labelPortMap] = portMapLabel(in.ports)
	}
	return l
}

// allocBlock returns a free block of n ports from the host's pool, the
// zero block for n = 0. The pool is shared by the shared daemon and the
// tenants' own: the blocks in use are those of the containers of all the
// daemons the runtime follows. A tenant's daemon that does not answer is
// left out, so that one tenant cannot stop the others' starts. The caller
// holds netMu until the container that takes it is created.
func (r *Runtime) allocBlock(ctx context.Context, n int) (portBlock, error) {
	if n == 0 {
		return portBlock{}, nil
	}
	r.exits.mu.Lock()
	daemons := map[string]*daemonPeer{"": nil}
	for address, peer := range r.exits.daemons {
		daemons[address] = &peer
	}
	r.exits.mu.Unlock()
	var used []portBlock
	for address, peer := range daemons {
		if address == "" {
			// A host of tenants' daemons only runs no shared one.
			if _, err := os.Stat(r.address); errors.Is(err, fs.ErrNotExist) {
				continue
			}
		}
		cctx, c, err := r.connect(ctx, address, peer)
		if err != nil && address != "" {
			continue
		}
		if err != nil {
			return portBlock{}, err
		}
		u, err := usedPorts(cctx, c)
		if err != nil {
			return portBlock{}, err
		}
		used = append(used, u...)
	}
	return allocPorts(r.net.ports, used, n)
}

// setupNetwork pins the network namespace of the created (not yet
// started) task pid under a name, attaches it to the host's bridge with
// the instance's ports published from its block, and records it in the
// container's labels, each step before the next so that Destroy finds
// all of it. It returns the labels; on failure the caller tears them
// down.
func (r *Runtime) setupNetwork(ctx context.Context, ctr containerd.Container, pid uint32, in *instanceNetwork, block portBlock) (map[string]string, error) {
	labels := in.labels(block)
	c, err := r.net.cni()
	if err != nil {
		return labels, err
	}
	ipt, err := iptables.New()
	if err != nil {
		return labels, fmt.Errorf("iptables: %w", err)
	}
	if err := r.net.ensureChains(ipt); err != nil {
		return labels, err
	}
	ns, err := netns.NewNetNSFromPID(netnsDir, pid)
	if err != nil {
		return labels, fmt.Errorf("pin network namespace: %w", err)
	}
	labels[labelNetNS] = ns.GetPath()
	if _, err := ctr.SetLabels(ctx, map[string]string{labelNetNS: ns.GetPath()}); err != nil {
		return labels, fmt.Errorf("record network namespace: %w", err)
	}
	res, err := c.Setup(ctx, ctr.ID(), ns.GetPath(), gocni.WithCapabilityPortMap(portMappings(in, block)))
	if err != nil {
		return labels, fmt.Errorf("attach to bridge %s: %w", r.net.bridge, err)
	}
	for name, cfg := range res.Interfaces {
		if cfg.Sandbox != "" {
			if len(cfg.IPConfigs) > 0 {
				labels[labelIP] = cfg.IPConfigs[0].IP.String()
			}
			labels[labelMAC] = cfg.Mac
			continue
		}
		if name == r.net.bridge {
			continue
		}
		labels[labelVeth] = name
		// An isolated bridge port forwards to the bridge (the host) only,
		// never to another isolated port: containers do not see each other.
		if out, err := exec.CommandContext(ctx, "ip", "link", "set", "dev", name, "type", "bridge_slave", "isolated", "on").CombinedOutput(); err != nil {
			return labels, fmt.Errorf("isolate bridge port %s: %w: %s", name, err, out)
		}
	}
	if labels[labelIP] == "" || labels[labelMAC] == "" || labels[labelVeth] == "" {
		return labels, fmt.Errorf("attach to bridge %s: CNI returned no address, MAC address or veth", r.net.bridge)
	}
	if _, err := ctr.SetLabels(ctx, map[string]string{labelIP: labels[labelIP], labelMAC: labels[labelMAC], labelVeth: labels[labelVeth]}); err != nil {
		return labels, fmt.Errorf("record address: %w", err)
	}
	// The task has not started: the filter is in place before the
	// workload sends its first frame.
	f, _, err := spoofFilterOf(labels)
	if err != nil {
		return labels, err
	}
	if err := f.install(ctx); err != nil {
		return labels, fmt.Errorf("anti-spoofing filter: %w", err)
	}
	if in.outbound == outboundInternet {
		if err := ipt.Insert("filter", chainForward, 2, internetRule(labels[labelIP])...); err != nil {
			return labels, fmt.Errorf("iptables: %w", err)
		}
	}
	return labels, nil
}

// portMappings maps the instance's ports to its block, in name order.
func portMappings(in *instanceNetwork, block portBlock) []gocni.PortMapping {
	var pm []gocni.PortMapping
	for i, p := range in.ports {
		pm = append(pm, gocni.PortMapping{HostPort: int32(block.from + i), ContainerPort: int32(p.container), Protocol: p.protocol})
	}
	return pm
}

// teardownNetwork removes what setupNetwork made, as its labels record:
// the anti-spoofing filter, the internet rule, the CNI attachment (veth,
// IPAM lease, port mappings) and the network namespace. It succeeds on
// what is gone.
func (r *Runtime) teardownNetwork(ctx context.Context, id string, labels map[string]string) error {
	path := labels[labelNetNS]
	if path == "" {
		return nil
	}
	var errs []error
	if f, ok, err := spoofFilterOf(labels); err != nil || ok {
		if err == nil {
			err = f.remove(ctx)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("anti-spoofing filter: %w", err))
		}
	}
	if ip := labels[labelIP]; ip != "" && labels[labelOutbound] == outboundInternet {
		ipt, err := iptables.New()
		if err == nil {
			err = ipt.DeleteIfExists("filter", chainForward, internetRule(ip)...)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("iptables: %w", err))
		}
	}
	if err := r.detach(ctx, id, path, labels); err != nil {
		errs = append(errs, fmt.Errorf("detach from bridge %s: %w", r.net.bridge, err))
	}
	// The namespace goes even when detaching failed: CNI's DEL works
	// without it when Destroy is retried.
	if err := netns.LoadNetNS(path).Remove(); err != nil {
		errs = append(errs, fmt.Errorf("remove network namespace: %w", err))
	}
	return errors.Join(errs...)
}

// detach runs CNI's DEL for the container: the veth, the IPAM lease and
// the port mappings its labels record.
func (r *Runtime) detach(ctx context.Context, id, path string, labels map[string]string) error {
	c, err := r.net.cni()
	if err != nil {
		return err
	}
	in := &instanceNetwork{}
	var block portBlock
	if labels[labelPorts] != "" {
		if block, err = parsePortBlock(labels[labelPorts]); err != nil {
			return err
		}
		if in.ports, err = parsePortMap(labels[labelPortMap]); err != nil {
			return err
		}
	}
	// portmap removes its rules only when given the mappings.
	return c.Remove(ctx, id, path, gocni.WithCapabilityPortMap(portMappings(in, block)))
}

// usedPorts returns the port blocks of the containers in the runtime's
// namespace.
func usedPorts(ctx context.Context, c *containerd.Client) ([]portBlock, error) {
	ctrs, err := c.Containers(ctx, "labels.\""+labelPorts+"\"")
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var used []portBlock
	for _, ctr := range ctrs {
		labels, err := ctr.Labels(ctx)
		if err != nil {
			return nil, fmt.Errorf("container labels: %w", err)
		}
		b, err := parsePortBlock(labels[labelPorts])
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", ctr.ID(), err)
		}
		used = append(used, b)
	}
	return used, nil
}

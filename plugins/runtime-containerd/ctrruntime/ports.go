package ctrruntime

import (
	"fmt"
	"sort"
	"strings"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// labelPorts is the label of a networked container that records its block
// of published host ports, "FROM-TO". The pool is rebuilt from these
// labels on every allocation, so it survives a plugin restart.
const labelPorts = "kigumi.ports"

// labelPortMap is the label that records the container side of the
// block's ports, in order: "8080/tcp,53/udp". Destroy needs it to remove
// the port mappings.
const labelPortMap = "kigumi.portmap"

// maxPorts is the most ports one instance may publish; it keeps the
// labels well below containerd's 4 KiB limit.
const maxPorts = 64

// portMapLabel returns the labelPortMap value of ports.
func portMapLabel(ports []portSpec) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprintf("%d/%s", p.container, p.protocol)
	}
	return strings.Join(s, ",")
}

// parsePortMap parses a labelPortMap value.
func parsePortMap(s string) ([]portSpec, error) {
	var ports []portSpec
	for _, f := range strings.Split(s, ",") {
		num, proto, _ := strings.Cut(f, "/")
		var p portSpec
		if _, err := fmt.Sscanf(num, "%d", &p.container); err != nil || p.container < 1 || p.container > 65535 || (proto != "tcp" && proto != "udp") {
			return nil, fmt.Errorf("malformed port map %q", s)
		}
		p.protocol = proto
		ports = append(ports, p)
	}
	return ports, nil
}

// portBlock is a contiguous range of host ports, both ends included.
type portBlock struct{ from, to int }

func (b portBlock) String() string { return fmt.Sprintf("%d-%d", b.from, b.to) }

// parsePortBlock parses a labelPorts value.
func parsePortBlock(s string) (portBlock, error) {
	var b portBlock
	if _, err := fmt.Sscanf(s, "%d-%d", &b.from, &b.to); err != nil || b.from < 1 || b.to < b.from || b.to > 65535 {
		return b, fmt.Errorf("malformed port block %q", s)
	}
	return b, nil
}

// allocPorts returns the lowest block of n contiguous ports in pool that
// overlaps none of used. It fails with CodeUnavailable when the
// pool has no such block.
func allocPorts(pool portBlock, used []portBlock, n int) (portBlock, error) {
	sort.Slice(used, func(i, j int) bool { return used[i].from < used[j].from })
	next := pool.from
	for _, u := range used {
		if u.to < next {
			continue
		}
		if u.from-next >= n {
			break
		}
		next = u.to + 1
	}
	if next+n-1 > pool.to {
		return portBlock{}, sdk.Errorf(sdk.CodeUnavailable, "the host's port pool %s has no free block of %d ports", pool, n)
	}
	return portBlock{next, next + n - 1}, nil
}

// portsMessage tells the host ports of a running instance, by port name,
// for kigumi status: "published ports: http=20000 metrics=20001".
func portsMessage(ports map[string]int) string {
	if len(ports) == 0 {
		return ""
	}
	names := make([]string, 0, len(ports))
	for name := range ports {
		names = append(names, name)
	}
	sort.Strings(names)
	for i, name := range names {
		names[i] = fmt.Sprintf("%s=%d", name, ports[name])
	}
	return "published ports: " + strings.Join(names, " ")
}

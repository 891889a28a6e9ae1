package spec

import (
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/hashicorp/hcl/v2"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// The defaults of a host spec.
const (
	defaultStateRoot  = "/var/lib/kigumi"
	defaultPluginDir  = "/usr/lib/kigumi/plugins"
	defaultTenantDir  = "tenants"
	defaultUIDBase    = 61000
	defaultSubIDBase  = 1000000000
	defaultSubIDCount = 65536
)

// hostName matches host, instance and plugin names.
var hostName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

var (
	hostFileSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{
		{Type: "host", LabelNames: []string{"name"}},
		{Type: string(sdk.KindRuntime), LabelNames: []string{"name"}},
		{Type: string(sdk.KindStateFS), LabelNames: []string{"name"}},
		{Type: string(sdk.KindLedger), LabelNames: []string{"name"}},
	}}
	hostSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "state_dir"}, {Name: "plugin_dir"}, {Name: "artifacts_dir"}, {Name: "policies"}},
		Blocks:     []hcl.BlockHeaderSchema{{Type: "capacity"}, {Type: "isolation"}, {Type: "tenants"}, {Type: "agent"}},
	}
	agentSchema    = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "metrics_address"}}}
	capacitySchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "cpu"}, {Name: "memory"}, {Name: "disk"}, {Name: "instances"},
	}}
	isolationSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "tenant_users"}, {Name: "uid_base"}, {Name: "subid_base"}, {Name: "subid_count"},
	}}
	tenantsSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "dir"}}}
)

// LoadHost loads the host spec at path, resolving relative paths against
// its directory and applying defaults. It returns nil and the diagnostics
// when the spec is invalid.
func (p *Parser) LoadHost(path string) (*Host, hcl.Diagnostics) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Invalid host spec path", Detail: err.Error()}}
	}
	src, err := readSpecFile(abs, "")
	if err != nil {
		return nil, hcl.Diagnostics{readFailure(abs, err, "")}
	}
	return p.parseHost(abs, src)
}

// parseHost decodes src, the host spec at the absolute path file.
func (p *Parser) parseHost(file string, src []byte) (*Host, hcl.Diagnostics) {
	f, diags := p.parse(file, src)
	if diags.HasErrors() {
		return nil, sorted(diags)
	}
	d := &decoder{diags: diags}
	h := d.hostFile(f.Body, file)
	if d.diags.HasErrors() {
		return nil, sorted(d.diags)
	}
	return h, sorted(d.diags)
}

// hostFile decodes the body of the host spec file.
func (d *decoder) hostFile(body hcl.Body, file string) *Host {
	c := d.content(body, hostFileSchema, body.MissingItemRange())
	var plugins []PluginBlock
	for _, b := range c.Blocks {
		if b.Type != "host" {
			plugins = d.plugin(plugins, b)
		}
	}
	hb := d.single(c.Blocks, "host")
	if hb == nil {
		d.errorAt(c.MissingItemRange, "Missing host block", "The host spec must hold a host block, such as host \"quickstart\" { ... }.")
		return nil
	}
	h := d.host(hb, file)
	h.Plugins = plugins
	for _, pb := range plugins {
		if pb.Kind == sdk.KindRuntime {
			return h
		}
	}
	d.errorAt(h.DeclRange, "Missing runtime block", "The host spec must declare at least one runtime, such as runtime \"wasm\" {}.")
	return h
}

// plugin appends the plugin block b to plugins, checking that it is the
// only one of its name and, for a statefs or ledger, of its kind.
func (d *decoder) plugin(plugins []PluginBlock, b *hcl.Block) []PluginBlock {
	pb := PluginBlock{Kind: sdk.Kind(b.Type), Name: b.Labels[0], Body: b.Body, DeclRange: b.DefRange}
	d.name(pb.Name, b.LabelRanges[0], b.Type, hostName, 63)
	for _, prev := range plugins {
		switch {
		case prev.Kind == pb.Kind && prev.Name == pb.Name:
			d.errorAt(b.DefRange, "Duplicate plugin block", "A %s %q block is already declared at %s.", pb.Kind, pb.Name, at(prev.DeclRange))
			return plugins
		case prev.Kind == pb.Kind && pb.Kind != sdk.KindRuntime:
			d.errorAt(b.DefRange, fmt.Sprintf("Duplicate %s block", pb.Kind), "A host has at most one %s; %s %q is already declared at %s.", pb.Kind, pb.Kind, prev.Name, at(prev.DeclRange))
			return plugins
		}
	}
	return append(plugins, pb)
}

// host decodes the host block b of the spec file.
func (d *decoder) host(b *hcl.Block, file string) *Host {
	dir := filepath.Dir(file)
	h := &Host{
		Name:      b.Labels[0],
		File:      file,
		StateDir:  filepath.Join(defaultStateRoot, b.Labels[0]),
		PluginDir: defaultPluginDir,
		Isolation: Isolation{
			TenantUsers: true,
			UIDBase:     defaultUIDBase,
			SubIDBase:   defaultSubIDBase,
			SubIDCount:  defaultSubIDCount,
		},
		PolicyFiles: []string{},
		TenantDir:   filepath.Join(dir, defaultTenantDir),
		ArtifactDir: dir,
		DeclRange:   b.DefRange,
	}
	d.name(h.Name, b.LabelRanges[0], "host", hostName, 63)
	c := d.content(b.Body, hostSchema, b.DefRange)
	if a := c.Attributes["state_dir"]; a != nil {
		h.StateDir = d.path(a, dir)
	}
	if a := c.Attributes["plugin_dir"]; a != nil {
		h.PluginDir = d.path(a, dir)
	}
	if a := c.Attributes["artifacts_dir"]; a != nil {
		h.ArtifactDir = d.path(a, dir)
	}
	if a := c.Attributes["policies"]; a != nil {
		h.PolicyFiles = d.policies(a, dir)
	}
	if cb := d.single(c.Blocks, "capacity"); cb != nil {
		h.Capacity = d.capacity(cb)
	} else {
		d.errorAt(b.DefRange, "Missing capacity block", "The host block must hold a capacity block.")
	}
	if ib := d.single(c.Blocks, "isolation"); ib != nil {
		d.isolation(ib, &h.Isolation)
	}
	if ab := d.single(c.Blocks, "agent"); ab != nil {
		d.agent(ab, &h.Agent)
	}
	var tenantDir *hcl.Attribute
	if tb := d.single(c.Blocks, "tenants"); tb != nil {
		tenantDir = d.content(tb.Body, tenantsSchema, tb.DefRange).Attributes["dir"]
	}
	if tenantDir != nil {
		h.TenantDir = d.path(tenantDir, dir)
	}
	if h.TenantDir != "" {
		d.checkTenantDir(h, tenantDir)
	}
	return h
}

// checkTenantDir reports h.TenantDir unless it is a directory, at the dir
// argument or, when the default applies, at the host block.
func (d *decoder) checkTenantDir(h *Host, a *hcl.Attribute) {
	fi, err := os.Stat(h.TenantDir)
	if err == nil && fi.IsDir() {
		return
	}
	detail := fmt.Sprintf("The tenants directory %s must exist and be a directory", h.TenantDir)
	if err != nil {
		detail = fmt.Sprintf("%s: %v", detail, err)
	}
	if a != nil {
		d.invalid(a.Expr, a.Name, "%s.", detail)
		return
	}
	d.errorAt(h.DeclRange, "Missing tenants directory", "%s; set another with tenants { dir = \"...\" }.", detail)
}

// policies decodes the policies argument: files or directories of *.hcl
// files, which must exist.
func (d *decoder) policies(a *hcl.Attribute, dir string) []string {
	paths, ranges := d.strings(a)
	files := []string{}
	seen := map[string]bool{}
	for i, p := range paths {
		p = resolve(dir, p)
		fi, err := os.Stat(p)
		var found []string
		switch {
		case err != nil:
			d.errorAt(ranges[i], "Policy path not found", "Cannot use %s as a policy file or directory: %v.", p, err)
		case fi.IsDir():
			if found, err = hclFiles(p); err != nil {
				d.errorAt(ranges[i], "Cannot read policy directory", "%v.", err)
			}
		default:
			found = []string{p}
		}
		for _, f := range found {
			if !seen[f] {
				seen[f] = true
				files = append(files, f)
			}
		}
	}
	return files
}

// capacity decodes the capacity block b.
func (d *decoder) capacity(b *hcl.Block) Capacity {
	c := d.content(b.Body, capacitySchema, b.DefRange, "cpu", "memory", "disk", "instances")
	var cp Capacity
	if a := c.Attributes["cpu"]; a != nil {
		cp.MilliCPU = d.milliCPU(a)
	}
	if a := c.Attributes["memory"]; a != nil {
		cp.MemoryBytes = d.size(a, 1)
	}
	if a := c.Attributes["disk"]; a != nil {
		cp.DiskBytes = d.size(a, 1)
	}
	if a := c.Attributes["instances"]; a != nil {
		cp.MaxInstances = d.whole(a, 1, math.MaxInt64)
	}
	return cp
}

// agent decodes the agent block b into a.
func (d *decoder) agent(b *hcl.Block, a *Agent) {
	c := d.content(b.Body, agentSchema, b.DefRange)
	if attr := c.Attributes["metrics_address"]; attr != nil {
		addr := d.str(attr)
		if err := checkLoopback(addr); err != nil {
			d.invalid(attr.Expr, attr.Name, "%v. The metrics are for the host's own collector: use a loopback address such as \"127.0.0.1:9464\" or \"[::1]:9464\".", err)
			return
		}
		a.MetricsAddress = addr
	}
}

// checkLoopback checks that addr is host:port with a loopback host and a
// port number.
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q has no port number (1 to 65535)", addr)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address", addr)
	}
	return nil
}

// isolation decodes the isolation block b into iso, which holds defaults.
func (d *decoder) isolation(b *hcl.Block, iso *Isolation) {
	c := d.content(b.Body, isolationSchema, b.DefRange)
	if a := c.Attributes["tenant_users"]; a != nil {
		iso.TenantUsers = d.bool(a)
	}
	if a := c.Attributes["uid_base"]; a != nil {
		iso.UIDBase = uint32(d.whole(a, 1000, 4294900000))
	}
	if a := c.Attributes["subid_base"]; a != nil {
		iso.SubIDBase = uint32(d.whole(a, 100000, math.MaxUint32))
	}
	count := c.Attributes["subid_count"]
	if count != nil {
		iso.SubIDCount = uint32(d.whole(count, 65536, math.MaxUint32))
	}
	if uint64(iso.SubIDBase)+uint64(iso.SubIDCount) > 1<<32 {
		a := c.Attributes["subid_base"]
		if count != nil {
			a = count
		}
		d.invalid(a.Expr, a.Name, "The subordinate id range %d..%d does not fit in 32 bits.",
			iso.SubIDBase, uint64(iso.SubIDBase)+uint64(iso.SubIDCount)-1)
	}
}

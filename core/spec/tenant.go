package spec

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/dustin/go-humanize"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// The defaults of an instance's resources.
const (
	defaultMemory   = 64 << 20
	defaultMilliCPU = 100
	defaultDisk     = 64 << 20
	defaultPids     = 32
	minMemory       = 1 << 20
)

var (
	// tenantName keeps "kg-" + name a valid Linux user name.
	tenantName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,28}$`)
	envName    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	digest     = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

var (
	tenantFileSchema = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "tenant", LabelNames: []string{"name"}}}}
	tenantSchema     = &hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{{Type: "instance", LabelNames: []string{"name"}}}}
	instanceSchema   = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "runtime"}, {Name: "module"}, {Name: "image"}, {Name: "archive"}, {Name: "digest"},
			{Name: "args"}, {Name: "env"}, {Name: "permissions"}, {Name: "restart"},
			{Name: "stdin"},
		},
		Blocks: []hcl.BlockHeaderSchema{
			{Type: "resources"}, {Type: "state"}, {Type: "settings"},
			{Type: "permission", LabelNames: []string{"name"}},
			{Type: "mount"},
		},
	}
	resourcesSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "memory"}, {Name: "cpu"}, {Name: "disk"}, {Name: "pids"},
		{Name: "io_read_bps"}, {Name: "io_write_bps"}, {Name: "io_read_iops"}, {Name: "io_write_iops"},
	}}
	stateSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "size"}, {Name: "seed"}, {Name: "guest"}}}
	mountSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "source"}, {Name: "guest"}}}
)

// LoadTenants loads every *.hcl file of h.TenantDir, in name order (hidden
// files are left out), and checks the tenants against h and each other. It
// returns the tenants sorted by name, or nil and the diagnostics when a spec
// is invalid. A file is read only if it is a regular file inside
// h.TenantDir (symlinks resolved) within the size limit MaxFileSize. Files
// are read and decoded in parallel, at most GOMAXPROCS at once; the
// diagnostics come in the same order all the same.
func (p *Parser) LoadTenants(h *Host) ([]*Tenant, hcl.Diagnostics) {
	files, err := hclFiles(h.TenantDir)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot read tenant specs",
			Detail:   err.Error() + ".",
			Subject:  h.DeclRange.Ptr(),
		}}
	}
	loaded := make([]tenantFile, len(files))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(files)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(files); i = int(next.Add(1) - 1) {
				loaded[i] = readTenantFile(h, files[i])
			}
		})
	}
	wg.Wait()
	var all []*Tenant
	var diags hcl.Diagnostics
	for i, l := range loaded {
		if l.kept != nil {
			p.AddFile(files[i], l.kept)
		}
		diags = append(diags, l.diags...)
		all = append(all, l.tenants...)
	}
	tenants, ds := CheckTenants(h, all)
	diags = append(diags, ds...)
	if diags.HasErrors() {
		return nil, sorted(diags)
	}
	return tenants, sorted(diags)
}

// LoadTenantFile reads and decodes one tenant spec file of h's tenant
// directory, and checks its tenants against h on their own (not against the
// tenants of other files). The file is read as LoadTenants reads it: only a
// regular file inside the tenant directory, through the size cap.
func (p *Parser) LoadTenantFile(h *Host, path string) ([]*Tenant, hcl.Diagnostics) {
	l := readTenantFile(h, path)
	if l.kept != nil {
		p.AddFile(path, l.kept)
	}
	if l.diags.HasErrors() {
		return nil, l.diags
	}
	tenants, ds := CheckTenants(h, l.tenants)
	return tenants, append(l.diags, ds...)
}

// ReadTenantFile reads one tenant spec file of h's tenant directory as
// LoadTenants reads it: only a regular file inside the tenant directory
// (symlinks resolved), through the size cap MaxFileSize, without blocking
// on a FIFO or a device. The diagnostic of a failure never holds the
// file's content.
func ReadTenantFile(h *Host, path string) ([]byte, hcl.Diagnostics) {
	src, err := readSpecFile(path, h.TenantDir)
	if err != nil {
		return nil, hcl.Diagnostics{readFailure(path, err, h.TenantDir)}
	}
	return src, nil
}

// tenantFile is one tenant spec file read and decoded on its own.
type tenantFile struct {
	tenants []*Tenant
	// kept is the file to keep for rendering diagnostics; nil when the
	// file could not be read.
	kept  *hcl.File
	diags hcl.Diagnostics
}

// readTenantFile reads a tenant spec file safely and decodes it. It touches
// no Parser.
func readTenantFile(h *Host, path string) tenantFile {
	src, diags := ReadTenantFile(h, path)
	if diags.HasErrors() {
		return tenantFile{diags: diags}
	}
	return decodeTenantFile(path, src)
}

// decodeTenantFile parses and decodes src, the tenant spec file filename,
// as ParseTenant does. It touches no Parser.
func decodeTenantFile(filename string, src []byte) tenantFile {
	f, kept, diags := parseSource(filename, src)
	if diags.HasErrors() {
		return tenantFile{kept: kept, diags: sorted(diags)}
	}
	tenants, ds := decodeTenants(f.Body, filename)
	diags = append(diags, ds...)
	if diags.HasErrors() {
		return tenantFile{kept: kept, diags: sorted(diags)}
	}
	return tenantFile{tenants: tenants, kept: kept, diags: sorted(diags)}
}

// ParseTenant decodes src, a tenant spec file named filename, on its own:
// it needs no host and reads no file, so that a spec arriving over the
// network can be validated with it alone. Module paths are resolved against
// filename's directory. What depends on the host (the runtimes it declares,
// modules inside its artifacts directory, its capacity, tenants of other
// files) is left to CheckTenants. A file parsed before under the same name
// is replaced. It returns the tenants in file order, or nil and the
// diagnostics when the spec is invalid.
func (p *Parser) ParseTenant(filename string, src []byte) ([]*Tenant, hcl.Diagnostics) {
	l := decodeTenantFile(filename, src)
	p.AddFile(filename, l.kept)
	return l.tenants, l.diags
}

// CheckTenants checks tenants, decoded by ParseTenant from one or more
// files, against h: each instance's runtime must be declared, its module
// must be a file inside the artifacts directory, its resources within the
// capacity; tenant names must be unique across files, and the instances in
// all must not exceed h's capacity. It returns the tenants sorted by name,
// or nil and the diagnostics when a check fails.
func CheckTenants(h *Host, tenants []*Tenant) ([]*Tenant, hcl.Diagnostics) {
	return NewChecker(h).Check(tenants)
}

// A Checker checks tenants against a host, as CheckTenants does, over
// several calls: one pass over the files of a tenant directory, each
// checked on its own. It looks at each module path once, so a module that
// a thousand instances name costs one look; make a new Checker for each
// pass, so that each pass sees the artifacts as they are then. A Checker
// is not safe for concurrent use.
type Checker struct {
	host    *Host
	modules map[string]*moduleProblem // by module path; nil: no problem
}

// moduleProblem is what is wrong with a module path, for a diagnostic.
type moduleProblem struct{ summary, detail string }

// NewChecker returns a Checker of tenants against h.
func NewChecker(h *Host) *Checker {
	return &Checker{host: h, modules: map[string]*moduleProblem{}}
}

// Check checks tenants as CheckTenants does. It returns the tenants sorted
// by name, or nil and the diagnostics when a check fails.
func (c *Checker) Check(tenants []*Tenant) ([]*Tenant, hcl.Diagnostics) {
	h := c.host
	d := &decoder{}
	seen := map[string]*Tenant{}
	var count int64
	for _, t := range tenants {
		// ParseTenant reported duplicates within a file.
		if first := seen[t.Name]; first != nil && first.File != t.File {
			d.errorAt(t.DeclRange, "Duplicate tenant", "Tenant %q is already defined at %s.", t.Name, at(first.DeclRange))
		}
		if seen[t.Name] == nil {
			seen[t.Name] = t
		}
		for i := range t.Instances {
			in := &t.Instances[i]
			c.checkInstance(d, in)
			if count++; count == h.Capacity.MaxInstances+1 {
				d.errorAt(in.DeclRange, "Too many instances",
					"The host's capacity allows %d instances in all; this is instance number %d.", h.Capacity.MaxInstances, count)
			}
		}
	}
	if d.diags.HasErrors() {
		return nil, sorted(d.diags)
	}
	out := slices.Clone(tenants)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, sorted(d.diags)
}

// checkInstance checks the instance in against the host, into d.
func (c *Checker) checkInstance(d *decoder, in *Instance) {
	h := c.host
	if r, ok := in.Ranges["runtime"]; ok && in.Runtime != "" {
		d.checkRuntime(r, in.Runtime, h)
	}
	for _, f := range []struct{ attr, noun, path string }{{"module", "Module", in.Module}, {"archive", "Archive", in.Archive}} {
		r, ok := in.Ranges[f.attr]
		if !ok || f.path == "" {
			continue
		}
		problem, ok := c.modules[f.path]
		if !ok {
			problem = checkArtifactFile(f.noun, f.path, h)
			c.modules[f.path] = problem
		}
		if problem != nil {
			d.errorAt(r, problem.summary, "%s", problem.detail)
		}
	}
	c.checkGuest(d, in)
	d.checkCapacity(in, h)
}

// checkArtifactFile reports what is wrong with the path of a module or
// archive (noun), or nil: it must be a regular file inside h's artifacts
// directory.
func checkArtifactFile(noun, path string, h *Host) *moduleProblem {
	// Containment first, so a spec learns nothing of files outside.
	if !within(h.ArtifactDir, path) {
		return &moduleProblem{noun + " outside the artifacts directory",
			fmt.Sprintf("%s is not inside the host's artifacts directory %s (symlinks resolved); set artifacts_dir in the host spec.", path, h.ArtifactDir)}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return &moduleProblem{noun + " not found", fmt.Sprintf("Cannot use %s as the %s: %v.", path, strings.ToLower(noun), err)}
	}
	if !fi.Mode().IsRegular() {
		return &moduleProblem{noun + " is not a file", fmt.Sprintf("%s is not a regular file.", path)}
	}
	return nil
}

// decodeTenants decodes the body of the tenant spec file named filename,
// reporting tenants defined twice in it.
func decodeTenants(body hcl.Body, filename string) ([]*Tenant, hcl.Diagnostics) {
	d := &decoder{}
	dir, err := filepath.Abs(filepath.Dir(filename))
	if err != nil {
		d.errorAt(body.MissingItemRange(), "Invalid tenant spec path", "%v.", err)
		return nil, d.diags
	}
	c := d.content(body, tenantFileSchema, body.MissingItemRange())
	tenants := make([]*Tenant, 0, len(c.Blocks))
	seen := map[string]*Tenant{}
	for _, b := range c.Blocks {
		t := d.tenant(b, filename, dir)
		if first := seen[t.Name]; first != nil {
			d.errorAt(t.DeclRange, "Duplicate tenant", "Tenant %q is already defined at %s.", t.Name, at(first.DeclRange))
			continue
		}
		seen[t.Name] = t
		tenants = append(tenants, t)
	}
	return tenants, d.diags
}

// tenant decodes the tenant block b.
func (d *decoder) tenant(b *hcl.Block, file, dir string) *Tenant {
	t := &Tenant{Name: b.Labels[0], File: file, DeclRange: b.DefRange}
	d.name(t.Name, b.LabelRanges[0], "tenant", tenantName, 29)
	c := d.content(b.Body, tenantSchema, b.DefRange)
	seen := map[string]hcl.Range{}
	for _, ib := range c.Blocks {
		in := d.instance(ib, dir)
		if first, ok := seen[in.Name]; ok {
			d.errorAt(in.DeclRange, "Duplicate instance", "Tenant %q already has an instance %q, at %s.", t.Name, in.Name, at(first))
			continue
		}
		seen[in.Name] = in.DeclRange
		t.Instances = append(t.Instances, in)
	}
	return t
}

// instance decodes the instance block b.
func (d *decoder) instance(b *hcl.Block, dir string) Instance {
	in := Instance{
		Name:        b.Labels[0],
		Args:        []string{},
		Env:         map[string]string{},
		Permissions: sdk.Permissions{},
		Resources: sdk.Resources{
			MemoryBytes: defaultMemory,
			MilliCPU:    defaultMilliCPU,
			DiskBytes:   defaultDisk,
			Pids:        defaultPids,
		},
		Restart:   RestartOnFailure,
		DeclRange: b.DefRange,
		Ranges:    map[string]hcl.Range{},
	}
	d.name(in.Name, b.LabelRanges[0], "instance", hostName, 63)
	c := d.content(b.Body, instanceSchema, b.DefRange, "runtime")
	for name, a := range c.Attributes {
		in.Ranges[name] = a.Expr.Range()
	}
	if a := c.Attributes["runtime"]; a != nil {
		if v := d.value(a.Expr, a.Name, cty.String); v != cty.NilVal {
			in.Runtime = v.AsString()
		}
	}
	d.artifact(&in, c, dir)
	if a := c.Attributes["args"]; a != nil {
		in.Args, _ = d.strings(a)
	}
	if a := c.Attributes["env"]; a != nil {
		in.Env = d.env(a)
	}
	in.Permissions = d.permissions(c, &in)
	if a := c.Attributes["restart"]; a != nil {
		if in.Restart = d.str(a); !slices.Contains(RestartPolicies, in.Restart) {
			d.invalid(a.Expr, a.Name, "%q is not a restart policy; write \"never\", \"on-failure\" or \"always\".", in.Restart)
		}
	}
	if rb := d.single(c.Blocks, "resources"); rb != nil {
		d.resources(rb, &in)
	}
	if sb := d.single(c.Blocks, "state"); sb != nil {
		sc := d.content(sb.Body, stateSchema, sb.DefRange)
		if a := sc.Attributes["size"]; a != nil {
			in.Ranges["state.size"] = a.Expr.Range()
			in.StateBytes = d.size(a, 0)
		}
		d.stateGuest(&in, sc, dir, sb.DefRange)
	}
	d.guestFiles(&in, c, dir)
	if sb := d.single(c.Blocks, "settings"); sb != nil {
		in.SettingsBody = sb.Body
		in.Ranges["settings"] = sb.DefRange
		// Policies that read a setting point at it.
		attrs, _ := sb.Body.JustAttributes()
		for name, a := range attrs {
			in.Ranges["settings."+name] = a.Expr.Range()
		}
	}
	for _, name := range []string{sdk.PermStateRead, sdk.PermStateWrite} {
		if r, ok := in.Ranges["permission."+name]; ok && in.StateBytes == 0 {
			d.errorAt(r, "State permission without state",
				"The instance is granted %s but has no state: add a state block with a size.", name)
		}
	}
	return in
}

// Guest is what an instance's workload sees of the host's files, apart
// from its state's content.
type Guest struct {
	// Mounts are directories of the artifacts directory that the workload
	// sees, read-only, at guest paths, in spec order.
	Mounts []Mount
	// Stdin is the absolute path of the file the workload reads as its
	// standard input; "" for an empty input.
	Stdin string
	// StateGuest is the guest path of the instance's state: "/" unless the
	// state block sets guest; "" without state.
	StateGuest string
	// StateSeed is the absolute path of the directory or tar archive that
	// fills a new instance's state, once; "" for none.
	StateSeed string
}

// Mount is a read-only directory of the artifacts directory, seen by the
// workload at Guest.
type Mount struct {
	// Source is the absolute path of the directory, resolved against the
	// spec file's directory.
	Source string
	Guest  string
}

// DefaultStateGuest is where a workload sees its state unless the spec
// says otherwise: at the root, where WASI programs (wasi-libc's and Rust's
// relative paths among them) look for their files.
const DefaultStateGuest = "/"

// stateGuest decodes the state block's guest and seed arguments into in.
func (d *decoder) stateGuest(in *Instance, sc *hcl.BodyContent, dir string, def hcl.Range) {
	in.StateGuest = DefaultStateGuest
	in.Ranges["state.guest"] = def
	if a := sc.Attributes["guest"]; a != nil {
		in.Ranges["state.guest"] = a.Expr.Range()
		in.StateGuest = d.guestPath(a)
	}
	if a := sc.Attributes["seed"]; a != nil {
		in.Ranges["state.seed"] = a.Expr.Range()
		in.StateSeed = d.path(a, dir)
	}
}

// guestFiles decodes the stdin argument and the mount blocks into in.
func (d *decoder) guestFiles(in *Instance, c *hcl.BodyContent, dir string) {
	if a := c.Attributes["stdin"]; a != nil {
		in.Stdin = d.path(a, dir)
	}
	for _, b := range c.Blocks {
		if b.Type != "mount" {
			continue
		}
		mc := d.content(b.Body, mountSchema, b.DefRange, "source", "guest")
		src, guest := mc.Attributes["source"], mc.Attributes["guest"]
		if src == nil || guest == nil {
			continue
		}
		m := Mount{Source: d.path(src, dir), Guest: d.guestPath(guest)}
		if m.Guest == "" {
			continue
		}
		key := "mount." + m.Guest
		if first, ok := in.Ranges[key]; ok {
			d.errorAt(guest.Expr.Range(), "Duplicate mount", "Another mount is at %s, at %s.", m.Guest, at(first))
			continue
		}
		if m.Guest == in.StateGuest {
			d.errorAt(guest.Expr.Range(), "Mount over the state", "The instance's state is at %s; mount this directory elsewhere, or move the state with the state block's guest.", m.Guest)
			continue
		}
		in.Ranges[key] = guest.Expr.Range()
		in.Ranges[key+".source"] = src.Expr.Range()
		in.Mounts = append(in.Mounts, m)
	}
}

// guestPath decodes a guest path: absolute and clean, as "/data".
func (d *decoder) guestPath(a *hcl.Attribute) string {
	p := d.str(a)
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p || strings.ContainsRune(p, 0) {
		d.invalid(a.Expr, a.Name, "%q is not a guest path: write an absolute, clean path such as \"/data\".", p)
		return ""
	}
	return p
}

// checkGuest checks, into d, that the files in's guest config names are
// inside h's artifacts directory and of the right kind.
func (c *Checker) checkGuest(d *decoder, in *Instance) {
	check := func(key, p, what string, ok func(fs.FileMode) bool) {
		if !within(c.host.ArtifactDir, p) {
			d.errorAt(in.Ranges[key], "Outside the artifacts directory",
				"%s is not inside the host's artifacts directory %s (symlinks resolved).", p, c.host.ArtifactDir)
			return
		}
		fi, err := os.Stat(p)
		if err != nil {
			d.errorAt(in.Ranges[key], "Not found", "Cannot use %s as %s: %v.", p, what, err)
			return
		}
		if !ok(fi.Mode()) {
			d.errorAt(in.Ranges[key], "Wrong kind of file", "%s is not %s.", p, what)
		}
	}
	isDir := func(m fs.FileMode) bool { return m.IsDir() }
	for _, m := range in.Mounts {
		check("mount."+m.Guest+".source", m.Source, "a directory to mount", isDir)
	}
	if in.Stdin != "" {
		check("stdin", in.Stdin, "a regular file for stdin", fs.FileMode.IsRegular)
	}
	if in.StateSeed != "" {
		check("state.seed", in.StateSeed, "a seed: a directory or a tar archive", func(m fs.FileMode) bool { return m.IsDir() || m.IsRegular() })
	}
}

// checkRuntime reports the runtime name, set at r, unless h declares it.
func (d *decoder) checkRuntime(r hcl.Range, name string, h *Host) {
	var declared []string
	for _, pb := range h.Plugins {
		if pb.Kind != sdk.KindRuntime {
			continue
		}
		if pb.Name == name {
			return
		}
		declared = append(declared, fmt.Sprintf("%q", pb.Name))
	}
	d.errorAt(r, "Unknown runtime", "The host declares no runtime %q; it declares %s.", name, strings.Join(declared, ", "))
}

// within reports whether path, with symlinks resolved, lies inside dir.
func within(dir, path string) bool {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		// A missing file is judged by its directory.
		parent, perr := filepath.EvalSymlinks(filepath.Dir(path))
		if perr != nil {
			return false
		}
		real = filepath.Join(parent, filepath.Base(path))
	}
	rel, err := filepath.Rel(root, real)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// artifact decodes the module, image, archive and digest arguments of c
// into in: exactly one of the first three.
func (d *decoder) artifact(in *Instance, c *hcl.BodyContent, dir string) {
	var set []*hcl.Attribute
	for _, name := range []string{"module", "image", "archive"} {
		if a := c.Attributes[name]; a != nil {
			set = append(set, a)
		}
	}
	slices.SortFunc(set, func(a, b *hcl.Attribute) int { return a.Range.Start.Byte - b.Range.Start.Byte })
	switch {
	case len(set) > 1:
		d.errorAt(set[1].Range, "Conflicting artifact", "An instance runs one of a module, an image or an archive; %s is set already.", set[0].Name)
	case len(set) == 0:
		d.errorAt(in.DeclRange, "Missing artifact", "An instance must set one of module (a wasm file), image (an OCI image reference) or archive (an OCI image-layout tar).")
	case set[0].Name == "module":
		// CheckTenants checks the file.
		in.Module = d.path(set[0], dir)
	case set[0].Name == "archive":
		in.Archive = d.path(set[0], dir)
	default:
		image := set[0]
		in.Image = d.str(image)
		if in.Image == "" || strings.ContainsAny(in.Image, " \t\r\n") {
			d.invalid(image.Expr, image.Name, "%q is not an image reference such as \"registry.example/app:1.0\".", in.Image)
		}
	}
	if a := c.Attributes["digest"]; a != nil {
		if in.Digest = d.str(a); !digest.MatchString(in.Digest) {
			d.invalid(a.Expr, a.Name, "%q is not a digest: write \"sha256:\" and 64 lowercase hex digits.", in.Digest)
		}
	}
}

// env decodes the env argument, written as a map of environment variables.
func (d *decoder) env(a *hcl.Attribute) map[string]string {
	pairs, diags := hcl.ExprMap(a.Expr)
	if diags.HasErrors() {
		d.invalid(a.Expr, a.Name, "A map such as { NAME = \"value\" } is required.")
	}
	env := make(map[string]string, len(pairs))
	keys := map[string]hcl.Range{}
	for _, kv := range pairs {
		k, v := d.value(kv.Key, a.Name, cty.String), d.value(kv.Value, a.Name, cty.String)
		if k == cty.NilVal || v == cty.NilVal {
			continue
		}
		key := k.AsString()
		if first, ok := keys[key]; ok {
			d.errorAt(kv.Key.Range(), "Duplicate environment variable", "%q is already set at %s.", key, at(first))
			continue
		}
		keys[key] = kv.Key.Range()
		if !envName.MatchString(key) {
			d.errorAt(kv.Key.Range(), "Invalid environment variable name",
				"%q is not a valid environment variable name: it must start with a letter or underscore and hold only letters, digits and underscores.", key)
			continue
		}
		env[key] = v.AsString()
	}
	return env
}

// permissions decodes the permissions argument, a list of the names of
// permissions without parameters, and the permission blocks, which grant
// one permission each with its parameters as arguments. A name is granted
// once. Whether the instance's runtime offers a permission is checked by
// CheckPermissions, once the runtime is known.
func (d *decoder) permissions(c *hcl.BodyContent, in *Instance) sdk.Permissions {
	perms := sdk.Permissions{}
	grant := func(p sdk.Permission, r hcl.Range) {
		key := "permission." + p.Name
		if first, ok := in.Ranges[key]; ok {
			d.errorAt(r, "Duplicate permission", "%q is already granted at %s.", p.Name, at(first))
			return
		}
		if p.Name == "" {
			d.errorAt(r, "Invalid permission", "A permission needs a name.")
			return
		}
		in.Ranges[key] = r
		perms = append(perms, p)
	}
	if a := c.Attributes["permissions"]; a != nil {
		names, ranges := d.strings(a)
		for i, n := range names {
			grant(sdk.Permission{Name: n}, ranges[i])
		}
	}
	for _, b := range c.Blocks {
		if b.Type != "permission" {
			continue
		}
		attrs, diags := b.Body.JustAttributes()
		d.diags = append(d.diags, diags...)
		p := sdk.Permission{Name: b.Labels[0], Params: map[string]string{}}
		for name, a := range attrs {
			if v := d.value(a.Expr, name, cty.String); v != cty.NilVal {
				p.Params[name] = v.AsString()
				in.Ranges["permission."+p.Name+"."+name] = a.Expr.Range()
			}
		}
		if len(p.Params) == 0 {
			p.Params = nil
		}
		grant(p, b.DefRange)
	}
	return perms
}

// resources decodes the resources block b into in.
func (d *decoder) resources(b *hcl.Block, in *Instance) {
	c := d.content(b.Body, resourcesSchema, b.DefRange)
	for name, a := range c.Attributes {
		in.Ranges["resources."+name] = a.Expr.Range()
	}
	r := &in.Resources
	if a := c.Attributes["memory"]; a != nil {
		r.MemoryBytes = d.size(a, minMemory)
	}
	if a := c.Attributes["cpu"]; a != nil {
		r.MilliCPU = d.milliCPU(a)
	}
	if a := c.Attributes["disk"]; a != nil {
		r.DiskBytes = d.size(a, 1)
	}
	if a := c.Attributes["pids"]; a != nil {
		r.Pids = d.whole(a, 1, 1<<22)
	}
	d.ioLimits(c, &r.IO)
}

// minIOBytes is the least I/O rate in bytes per second a spec may set.
const minIOBytes = 4096

// ioLimits decodes the disk I/O rates of a resources block: bytes per
// second as sizes ("20MiB"), operations per second as whole numbers.
// Unset means unlimited.
func (d *decoder) ioLimits(c *hcl.BodyContent, l *sdk.IOLimits) {
	for _, f := range []struct {
		name string
		to   *int64
	}{{"io_read_bps", &l.ReadBPS}, {"io_write_bps", &l.WriteBPS}} {
		if a := c.Attributes[f.name]; a != nil {
			*f.to = d.size(a, minIOBytes)
		}
	}
	for _, f := range []struct {
		name string
		to   *int64
	}{{"io_read_iops", &l.ReadIOPS}, {"io_write_iops", &l.WriteIOPS}} {
		if a := c.Attributes[f.name]; a != nil {
			*f.to = d.whole(a, 1, 1<<30)
		}
	}
}

// checkCapacity reports each resource of in that exceeds h's capacity, at
// its argument or, for a default, at the instance block.
func (d *decoder) checkCapacity(in *Instance, h *Host) {
	bytes := func(n int64) string { return humanize.IBytes(uint64(n)) }
	cores := func(m int64) string { return fmt.Sprintf("%g cores", float64(m)/1000) }
	for _, c := range []struct {
		key       string
		what      string
		want, max int64
		format    func(int64) string
	}{
		{"resources.memory", "memory", in.Resources.MemoryBytes, h.Capacity.MemoryBytes, bytes},
		{"resources.cpu", "CPU", in.Resources.MilliCPU, h.Capacity.MilliCPU, cores},
		{"resources.disk", "disk", in.Resources.DiskBytes, h.Capacity.DiskBytes, bytes},
		{"state.size", "state size", in.StateBytes, h.Capacity.DiskBytes, bytes},
	} {
		if c.want <= c.max {
			continue
		}
		r, ok := in.Ranges[c.key]
		if !ok {
			r = in.DeclRange
		}
		d.errorAt(r, "Exceeds host capacity", "The instance's %s of %s exceeds the host capacity of %s.", c.what, c.format(c.want), c.format(c.max))
	}
}

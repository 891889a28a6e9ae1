package spec

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// testdata returns the absolute path of a file under testdata.
func testdata(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// wantDiag describes an expected error diagnostic.
type wantDiag struct {
	summary string
	// detail is a substring of the detail.
	detail string
	// file is the subject's file, relative to testdata.
	file      string
	line, col int
}

// checkDiags checks that the error diagnostics of diags are want, in order.
func checkDiags(t *testing.T, diags hcl.Diagnostics, want ...wantDiag) {
	t.Helper()
	errs := diags.Errs()
	if len(errs) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(errs), len(want), dump(diags))
	}
	for i, w := range want {
		d := diags[i]
		if d.Summary != w.summary || !strings.Contains(d.Detail, w.detail) {
			t.Errorf("error %d is %q: %q; want %q containing %q", i, d.Summary, d.Detail, w.summary, w.detail)
		}
		if d.Subject == nil {
			t.Errorf("error %d has no subject", i)
			continue
		}
		file := w.file
		if !filepath.IsAbs(file) {
			file = testdata(t, file)
		}
		if d.Subject.Filename != file || d.Subject.Start.Line != w.line || d.Subject.Start.Column != w.col {
			t.Errorf("error %d is at %s, want %s:%d,%d", i, at(*d.Subject), file, w.line, w.col)
		}
	}
}

// dump formats diags for a failure message.
func dump(diags hcl.Diagnostics) string {
	var b strings.Builder
	for _, d := range diags {
		loc := "-"
		if d.Subject != nil {
			loc = at(*d.Subject)
		}
		fmt.Fprintf(&b, "  %s: %s: %s\n", loc, d.Summary, d.Detail)
	}
	return b.String()
}

// pluginSummary lists the kind and name of each plugin block.
func pluginSummary(plugins []PluginBlock) []string {
	var s []string
	for _, p := range plugins {
		s = append(s, string(p.Kind)+" "+p.Name)
	}
	return s
}

func TestLoadHost(t *testing.T) {
	tests := []struct {
		file    string
		want    Host
		plugins []string
	}{
		{
			file: "good/host.hcl",
			want: Host{
				Name:      "quickstart",
				File:      testdata(t, "good/host.hcl"),
				StateDir:  testdata(t, "good/state"),
				PluginDir: "/opt/kigumi/plugins",
				Capacity:  Capacity{MilliCPU: 2500, MemoryBytes: 2 << 30, DiskBytes: 10 << 30, MaxInstances: 16},
				Isolation: Isolation{TenantUsers: false, UIDBase: 62000, SubIDBase: 2000000000, SubIDCount: 131072},
				Agent:     Agent{MetricsAddress: "127.0.0.1:9464"},
				PolicyFiles: []string{
					testdata(t, "good/policies/10-base.hcl"),
					testdata(t, "good/policies/20-tenants.hcl"),
					testdata(t, "good/extra.hcl"),
				},
				TenantDir:   testdata(t, "good/tenants"),
				ArtifactDir: testdata(t, "good"),
			},
			plugins: []string{"runtime wasm", "runtime native", "statefs fuse", "ledger xrpl"},
		},
		{
			file: "minimal/host.hcl",
			want: Host{
				Name:        "mini",
				File:        testdata(t, "minimal/host.hcl"),
				StateDir:    "/var/lib/kigumi/mini",
				PluginDir:   "/usr/lib/kigumi/plugins",
				Capacity:    Capacity{MilliCPU: 1000, MemoryBytes: 512 << 20, DiskBytes: 32 << 20, MaxInstances: 1},
				Isolation:   Isolation{TenantUsers: true, UIDBase: 61000, SubIDBase: 1000000000, SubIDCount: 65536},
				PolicyFiles: []string{},
				TenantDir:   testdata(t, "minimal/tenants"),
				ArtifactDir: testdata(t, "minimal"),
			},
			plugins: []string{"runtime wasm"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			h, diags := NewParser().LoadHost(filepath.Join("testdata", tt.file))
			if diags.HasErrors() {
				t.Fatalf("unexpected errors:\n%s", dump(diags))
			}
			if got := pluginSummary(h.Plugins); !reflect.DeepEqual(got, tt.plugins) {
				t.Errorf("plugins = %v, want %v", got, tt.plugins)
			}
			if h.DeclRange.Start.Line != 1 || h.DeclRange.Start.Column != 1 {
				t.Errorf("DeclRange = %s, want line 1, column 1", h.DeclRange)
			}
			got := *h
			got.Plugins, got.DeclRange = nil, hcl.Range{}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("host = %+v\nwant   %+v", got, tt.want)
			}
		})
	}
}

func TestLoadHostErrors(t *testing.T) {
	tests := []struct {
		file string
		want []wantDiag
	}{
		{"syntax.hcl", []wantDiag{{"Invalid expression", "Expected the start of an expression", "hosts/syntax.hcl", 3, 17}}},
		{"unknown-attribute.hcl", []wantDiag{{"Unsupported argument", `"colour" is not expected`, "hosts/unknown-attribute.hcl", 2, 3}}},
		{"unknown-block.hcl", []wantDiag{{"Unsupported block type", `Blocks of type "network" are not expected`, "hosts/unknown-block.hcl", 2, 3}}},
		{"missing-attribute.hcl", []wantDiag{{"Missing required argument", `"instances" is required`, "hosts/missing-attribute.hcl", 2, 3}}},
		{"missing-capacity.hcl", []wantDiag{{"Missing capacity block", "capacity block", "hosts/missing-capacity.hcl", 1, 1}}},
		{"missing-host.hcl", []wantDiag{{"Missing host block", "host block", "hosts/missing-host.hcl", 1, 1}}},
		{"missing-runtime.hcl", []wantDiag{{"Missing runtime block", "at least one runtime", "hosts/missing-runtime.hcl", 1, 1}}},
		{"negative-memory.hcl", []wantDiag{{`Invalid value for "memory"`, "greater than zero", "hosts/negative-memory.hcl", 4, 17}}},
		{"zero-disk.hcl", []wantDiag{{`Invalid value for "disk"`, "greater than zero", "hosts/zero-disk.hcl", 5, 17}}},
		{"bad-unit.hcl", []wantDiag{{`Invalid value for "memory"`, `"2 gigs" is not a size (unhandled size name: gigs)`, "hosts/bad-unit.hcl", 4, 17}}},
		{"size-overflow.hcl", []wantDiag{{`Invalid value for "disk"`, "out of range", "hosts/size-overflow.hcl", 5, 17}}},
		{"size-fraction.hcl", []wantDiag{{`Invalid value for "disk"`, "1.5 is not a whole number of bytes", "hosts/size-fraction.hcl", 5, 17}}},
		{"size-type.hcl", []wantDiag{{`Invalid value for "disk"`, "not a bool", "hosts/size-type.hcl", 5, 17}}},
		{"instances-fraction.hcl", []wantDiag{{`Invalid value for "instances"`, "1.5 is not a whole number", "hosts/instances-fraction.hcl", 6, 17}}},
		{"instances-zero.hcl", []wantDiag{{`Invalid value for "instances"`, "at least 1", "hosts/instances-zero.hcl", 6, 17}}},
		{"cpu-negative.hcl", []wantDiag{{`Invalid value for "cpu"`, "greater than zero", "hosts/cpu-negative.hcl", 3, 17}}},
		{"cpu-tiny.hcl", []wantDiag{{`Invalid value for "cpu"`, "at least 0.001", "hosts/cpu-tiny.hcl", 3, 17}}},
		{"variable.hcl", []wantDiag{{"Variables not allowed", "", "hosts/variable.hcl", 3, 17}}},
		{"bad-host-name.hcl", []wantDiag{{"Invalid host name", `"Quick_Start" is not a valid host name`, "hosts/bad-host-name.hcl", 1, 6}}},
		{"bad-plugin-name.hcl", []wantDiag{{"Invalid runtime name", `"Wasm"`, "hosts/bad-plugin-name.hcl", 10, 9}}},
		{"duplicate-plugin.hcl", []wantDiag{{"Duplicate plugin block", "hosts/duplicate-plugin.hcl:10,1", "hosts/duplicate-plugin.hcl", 11, 1}}},
		{"second-statefs.hcl", []wantDiag{{"Duplicate statefs block", `statefs "fuse" is already declared`, "hosts/second-statefs.hcl", 12, 1}}},
		{"duplicate-host.hcl", []wantDiag{{"Duplicate host block", "hosts/duplicate-host.hcl:1,1", "hosts/duplicate-host.hcl", 11, 1}}},
		{"duplicate-capacity.hcl", []wantDiag{{"Duplicate capacity block", "hosts/duplicate-capacity.hcl:2,3", "hosts/duplicate-capacity.hcl", 8, 3}}},
		{"uid-base.hcl", []wantDiag{{`Invalid value for "uid_base"`, "between 1000 and 4294900000", "hosts/uid-base.hcl", 9, 16}}},
		{"subid-range.hcl", []wantDiag{{`Invalid value for "subid_count"`, "does not fit in 32 bits", "hosts/subid-range.hcl", 10, 19}}},
		{"bad-bool.hcl", []wantDiag{{"Incorrect attribute value type", "a bool is required", "hosts/bad-bool.hcl", 9, 20}}},
		{"missing-policy.hcl", []wantDiag{{"Policy path not found", "no-such-policy.hcl", "hosts/missing-policy.hcl", 2, 26}}},
		{"missing-tenant-dir.hcl", []wantDiag{{`Invalid value for "dir"`, "must exist and be a directory", "hosts/missing-tenant-dir.hcl", 9, 11}}},
		{"tenant-dir-file.hcl", []wantDiag{{`Invalid value for "dir"`, "must exist and be a directory", "hosts/tenant-dir-file.hcl", 9, 11}}},
		{"empty-state-dir.hcl", []wantDiag{{`Invalid value for "state_dir"`, "must not be empty", "hosts/empty-state-dir.hcl", 2, 15}}},
		{"metrics-public.hcl", []wantDiag{{`Invalid value for "metrics_address"`, `"0.0.0.0:9464" is not a loopback address`, "hosts/metrics-public.hcl", 9, 23}}},
		{"metrics-no-port.hcl", []wantDiag{{`Invalid value for "metrics_address"`, `"127.0.0.1" is not host:port`, "hosts/metrics-no-port.hcl", 9, 23}}},
		{"metrics-bad-port.hcl", []wantDiag{{`Invalid value for "metrics_address"`, `"[::1]:99999" has no port number`, "hosts/metrics-bad-port.hcl", 9, 23}}},
		{"metrics-hostname.hcl", []wantDiag{{`Invalid value for "metrics_address"`, `"metrics.example:9464" is not a loopback address`, "hosts/metrics-hostname.hcl", 9, 23}}},
		{"../no-tenants/host.hcl", []wantDiag{{"Missing tenants directory", "no-tenants/tenants must exist", "no-tenants/host.hcl", 1, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			h, diags := NewParser().LoadHost(filepath.Join("testdata/hosts", tt.file))
			if h != nil {
				t.Errorf("LoadHost returned a host despite errors")
			}
			checkDiags(t, diags, tt.want...)
		})
	}
}

func TestLoadHostMissingFile(t *testing.T) {
	h, diags := NewParser().LoadHost("testdata/hosts/no-such-host.hcl")
	if h != nil || !diags.HasErrors() || diags[0].Summary != "Failed to read file" {
		t.Fatalf("LoadHost = %v, diagnostics:\n%s", h, dump(diags))
	}
}

// loadHost loads a host spec that must be valid.
func loadHost(t *testing.T, p *Parser, file string) *Host {
	t.Helper()
	h, diags := p.LoadHost(testdata(t, file))
	if diags.HasErrors() {
		t.Fatalf("LoadHost(%s):\n%s", file, dump(diags))
	}
	return h
}

// stripped returns copies of tenants with their ranges cleared.
func stripped(tenants []*Tenant) []Tenant {
	var out []Tenant
	for _, t := range tenants {
		c := *t
		c.DeclRange = hcl.Range{}
		c.Instances = nil
		for _, in := range t.Instances {
			in.DeclRange, in.Ranges = hcl.Range{}, nil
			c.Instances = append(c.Instances, in)
		}
		out = append(out, c)
	}
	return out
}

func TestLoadTenants(t *testing.T) {
	p := NewParser()
	h := loadHost(t, p, "good/host.hcl")
	tenants, diags := p.LoadTenants(h)
	if diags.HasErrors() {
		t.Fatalf("unexpected errors:\n%s", dump(diags))
	}
	wasm := testdata(t, "good/build/hello.wasm")
	defaults := sdk.Resources{MemoryBytes: 64 << 20, MilliCPU: 100, DiskBytes: 64 << 20, Pids: 32}
	want := []Tenant{
		{
			Name: "alice",
			File: testdata(t, "good/tenants/alice.hcl"),
			Instances: []Instance{{
				Name:        "hello",
				Runtime:     "wasm",
				Module:      wasm,
				Digest:      "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
				Args:        []string{"--name", "alice"},
				Env:         map[string]string{"GREETING": "hello", "_DEBUG": "1"},
				Resources:   sdk.Resources{MemoryBytes: 32 << 20, MilliCPU: 250, DiskBytes: 1 << 20, Pids: 16},
				StateBytes:  16 << 20,
				Guest:       Guest{StateGuest: "/"},
				Permissions: sdk.Permissions{{Name: sdk.PermStateWrite}, {Name: sdk.PermClock}},
				Restart:     RestartOnFailure,
			}},
		},
		{
			Name: "bob",
			File: testdata(t, "good/tenants/bob.hcl"),
			Instances: []Instance{
				{
					Name: "web", Runtime: "native", Image: "127.0.0.1:5000/busybox:1.36",
					Args: []string{}, Env: map[string]string{}, Resources: defaults, Permissions: sdk.Permissions{},
					Restart: RestartOnFailure,
				},
				{
					Name: "worker", Runtime: "wasm", Module: wasm,
					Args: []string{}, Env: map[string]string{}, Resources: defaults, Permissions: sdk.Permissions{},
					Restart: RestartOnFailure,
				},
			},
		},
		{Name: "carol", File: testdata(t, "good/tenants/bob.hcl")},
	}
	if got := stripped(tenants); !reflect.DeepEqual(got, want) {
		t.Errorf("tenants = %+v\nwant      %+v", got, want)
	}

	rangeTests := []struct {
		tenant, instance string
		keys             []string
	}{
		{"alice", "hello", []string{
			"args", "digest", "env", "module", "permission.clock", "permission.state.write", "permissions", "resources.cpu", "resources.disk",
			"resources.memory", "resources.pids", "runtime", "state.guest", "state.size",
		}},
		{"bob", "web", []string{"image", "runtime"}},
	}
	for _, tt := range rangeTests {
		for _, tn := range tenants {
			for _, in := range tn.Instances {
				if tn.Name != tt.tenant || in.Name != tt.instance {
					continue
				}
				var keys []string
				for k := range in.Ranges {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				if !reflect.DeepEqual(keys, tt.keys) {
					t.Errorf("%s/%s ranges = %v, want %v", tt.tenant, tt.instance, keys, tt.keys)
				}
			}
		}
	}
	mem := tenants[0].Instances[0].Ranges["resources.memory"]
	if mem.Filename != testdata(t, "good/tenants/alice.hcl") || mem.Start.Line != 10 || mem.Start.Column != 16 {
		t.Errorf("alice/hello resources.memory range = %s, want alice.hcl:10,16", mem)
	}
}

func TestParseTenant(t *testing.T) {
	p := NewParser()
	h := loadHost(t, p, "good/host.hcl")
	file := testdata(t, "good/tenants/alice.hcl")
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	tenants, diags := parseTenant(p, file, src, h)
	if diags.HasErrors() {
		t.Fatalf("unexpected errors:\n%s", dump(diags))
	}
	if len(tenants) != 1 || tenants[0].Name != "alice" || tenants[0].Instances[0].Module != testdata(t, "good/build/hello.wasm") {
		t.Errorf("ParseTenant = %+v, want tenant alice running good/build/hello.wasm", stripped(tenants))
	}
	// A new source under the same name is parsed afresh, not taken from
	// the parser's files.
	tenants, diags = parseTenant(p, file, []byte(`tenant "alice" {`), h)
	if tenants != nil {
		t.Errorf("ParseTenant returned tenants despite errors")
	}
	checkDiags(t, diags, wantDiag{"Unclosed configuration block", "no closing brace", "good/tenants/alice.hcl", 1, 16})
}

// parseTenant decodes src with ParseTenant and checks it with CheckTenants.
func parseTenant(p *Parser, file string, src []byte, h *Host) ([]*Tenant, hcl.Diagnostics) {
	tenants, diags := p.ParseTenant(file, src)
	if diags.HasErrors() {
		return nil, diags
	}
	return CheckTenants(h, tenants)
}

func TestParseTenantErrors(t *testing.T) {
	tests := []struct {
		file string
		// host is the host spec, relative to testdata; good/host.hcl when empty.
		host string
		want []wantDiag
	}{
		{"syntax.hcl", "", []wantDiag{{"Argument or block definition required", "", "tenants/syntax.hcl", 3, 5}}},
		{"unknown-attribute.hcl", "", []wantDiag{{"Unsupported argument", `"colour" is not expected`, "tenants/unknown-attribute.hcl", 5, 5}}},
		{"unknown-block.hcl", "", []wantDiag{{"Unsupported block type", `Blocks of type "network" are not expected`, "tenants/unknown-block.hcl", 5, 5}}},
		{"top-level-attribute.hcl", "", []wantDiag{{"Unsupported argument", `"owner" is not expected`, "tenants/top-level-attribute.hcl", 1, 1}}},
		{"null-runtime.hcl", "", []wantDiag{{`Invalid value for "runtime"`, "must not be null", "tenants/null-runtime.hcl", 3, 15}}},
		{"missing-runtime.hcl", "", []wantDiag{{"Missing required argument", `"runtime" is required`, "tenants/missing-runtime.hcl", 2, 3}}},
		{"negative-memory.hcl", "", []wantDiag{{`Invalid value for "memory"`, "greater than zero", "tenants/negative-memory.hcl", 6, 16}}},
		{"small-memory.hcl", "", []wantDiag{{`Invalid value for "memory"`, "at least 1.0 MiB", "tenants/small-memory.hcl", 6, 16}}},
		{"bad-unit.hcl", "", []wantDiag{{`Invalid value for "disk"`, `"32 megs" is not a size`, "tenants/bad-unit.hcl", 6, 14}}},
		{"pids-fraction.hcl", "", []wantDiag{{`Invalid value for "pids"`, "2.5 is not a whole number", "tenants/pids-fraction.hcl", 6, 14}}},
		{"cpu-zero.hcl", "", []wantDiag{{`Invalid value for "cpu"`, "greater than zero", "tenants/cpu-zero.hcl", 6, 13}}},
		{"disk-overflow.hcl", "", []wantDiag{{`Invalid value for "disk"`, `"9EiB" is out of range`, "tenants/disk-overflow.hcl", 6, 14}}},
		{"negative-state.hcl", "", []wantDiag{{`Invalid value for "size"`, "must not be negative", "tenants/negative-state.hcl", 6, 14}}},
		{"name-uppercase.hcl", "", []wantDiag{{"Invalid tenant name", `"Alice" is not a valid tenant name`, "tenants/name-uppercase.hcl", 1, 8}}},
		{"name-slash.hcl", "", []wantDiag{{"Invalid tenant name", `"a/b" is not a valid tenant name`, "tenants/name-slash.hcl", 1, 8}}},
		{"name-long.hcl", "", []wantDiag{{"Invalid tenant name", "at most 29 characters", "tenants/name-long.hcl", 1, 8}}},
		{"instance-name.hcl", "", []wantDiag{{"Invalid instance name", `"hello world"`, "tenants/instance-name.hcl", 2, 12}}},
		{"duplicate-instance.hcl", "", []wantDiag{{"Duplicate instance", "tenants/duplicate-instance.hcl:2,3", "tenants/duplicate-instance.hcl", 7, 3}}},
		{"duplicate-tenant.hcl", "", []wantDiag{{"Duplicate tenant", "tenants/duplicate-tenant.hcl:1,1", "tenants/duplicate-tenant.hcl", 8, 1}}},
		{"module-and-image.hcl", "", []wantDiag{{"Conflicting artifact", "module is set already", "tenants/module-and-image.hcl", 5, 5}}},
		{"image-and-archive.hcl", "", []wantDiag{{"Conflicting artifact", "image is set already", "tenants/image-and-archive.hcl", 5, 5}}},
		{"no-artifact.hcl", "", []wantDiag{{"Missing artifact", "one of module", "tenants/no-artifact.hcl", 2, 3}}},
		{"missing-archive.hcl", "", []wantDiag{{"Archive not found", "missing.tar", "tenants/missing-archive.hcl", 4, 15}}},
		{"archive-outside.hcl", "", []wantDiag{{"Archive outside the artifacts directory", "/etc/hostname is not inside", "tenants/archive-outside.hcl", 4, 15}}},
		{"missing-module.hcl", "", []wantDiag{{"Module not found", "missing.wasm", "tenants/missing-module.hcl", 4, 15}}},
		{"state-permission-without-state.hcl", "", []wantDiag{{"State permission without state", "add a state block", "tenants/state-permission-without-state.hcl", 5, 20}}},
		{"module-outside.hcl", "", []wantDiag{{"Module outside the artifacts directory", "/etc/hostname is not inside", "tenants/module-outside.hcl", 4, 15}}},
		{"module-directory.hcl", "", []wantDiag{{"Module is not a file", "not a regular file", "tenants/module-directory.hcl", 4, 15}}},
		{"bad-image.hcl", "", []wantDiag{{`Invalid value for "image"`, `"busy box" is not an image reference`, "tenants/bad-image.hcl", 4, 15}}},
		{"bad-digest.hcl", "", []wantDiag{{`Invalid value for "digest"`, `"sha256:abc" is not a digest`, "tenants/bad-digest.hcl", 5, 14}}},
		{"unknown-runtime.hcl", "", []wantDiag{{"Unknown runtime", `no runtime "containerd"; it declares "wasm", "native"`, "tenants/unknown-runtime.hcl", 3, 15}}},
		{"duplicate-permission.hcl", "", []wantDiag{{"Duplicate permission", `"clock" is already granted`, "tenants/duplicate-permission.hcl", 5, 29}}},
		{"duplicate-permission-block.hcl", "", []wantDiag{{"Duplicate permission", `"clock" is already granted at`, "tenants/duplicate-permission-block.hcl", 6, 5}}},
		{"duplicate-settings.hcl", "", []wantDiag{{"Duplicate settings block", "Only one settings block", "tenants/duplicate-settings.hcl", 6, 5}}},
		{"bad-env.hcl", "", []wantDiag{{"Invalid environment variable name", `"1BAD"`, "tenants/bad-env.hcl", 5, 25}}},
		{"duplicate-env.hcl", "", []wantDiag{{"Duplicate environment variable", "tenants/duplicate-env.hcl:5,13", "tenants/duplicate-env.hcl", 5, 22}}},
		{"env-not-map.hcl", "", []wantDiag{{`Invalid value for "env"`, "A map such as", "tenants/env-not-map.hcl", 5, 11}}},
		{"args-not-list.hcl", "", []wantDiag{{`Invalid value for "args"`, "A list such as", "tenants/args-not-list.hcl", 5, 12}}},
		{"args-type.hcl", "", []wantDiag{{"Incorrect attribute value type", "string required", "tenants/args-type.hcl", 5, 18}}},
		{"over-capacity.hcl", "", []wantDiag{
			{"Exceeds host capacity", "memory of 8.0 GiB exceeds the host capacity of 2.0 GiB", "tenants/over-capacity.hcl", 6, 16},
			{"Exceeds host capacity", "CPU of 3 cores exceeds the host capacity of 2.5 cores", "tenants/over-capacity.hcl", 7, 16},
		}},
		{"state-over-capacity.hcl", "", []wantDiag{{"Exceeds host capacity", "state size of 11 GiB exceeds the host capacity of 10 GiB", "tenants/state-over-capacity.hcl", 6, 14}}},
		{"default-disk.hcl", "minimal/host.hcl", []wantDiag{{"Exceeds host capacity", "disk of 64 MiB exceeds the host capacity of 32 MiB", "tenants/default-disk.hcl", 2, 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			p := NewParser()
			host := tt.host
			if host == "" {
				host = "good/host.hcl"
			}
			h := loadHost(t, p, host)
			file := testdata(t, "tenants/"+tt.file)
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			tenants, diags := parseTenant(p, file, src, h)
			if tenants != nil {
				t.Errorf("ParseTenant returned tenants despite errors")
			}
			checkDiags(t, diags, tt.want...)
		})
	}
}

func TestLoadTenantsErrors(t *testing.T) {
	tests := []struct {
		host string
		want []wantDiag
	}{
		{"duplicate/host.hcl", []wantDiag{{"Duplicate tenant", testdata(t, "duplicate/tenants/a.hcl") + ":1,1", "duplicate/tenants/b.hcl", 3, 1}}},
		{"malformed/host.hcl", []wantDiag{{"Unclosed configuration block", "no closing brace", "malformed/tenants/a.hcl", 2, 18}}},
		{"crowded/host.hcl", []wantDiag{{"Too many instances", "allows 2 instances in all; this is instance number 3", "crowded/tenants/b.hcl", 2, 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			p := NewParser()
			tenants, diags := p.LoadTenants(loadHost(t, p, tt.host))
			if tenants != nil {
				t.Errorf("LoadTenants returned tenants despite errors")
			}
			checkDiags(t, diags, tt.want...)
		})
	}
}

// pluginBlock returns the runtime block name of the plugin test host.
func pluginBlock(t *testing.T, name string) PluginBlock {
	t.Helper()
	h := loadHost(t, NewParser(), "hosts/plugin-config.hcl")
	for _, b := range h.Plugins {
		if b.Name == name {
			return b
		}
	}
	t.Fatalf("no runtime %q", name)
	return PluginBlock{}
}

func TestDecodePluginConfig(t *testing.T) {
	schema := sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "max_memory", Type: sdk.TypeString, Required: true, Description: "the largest linear memory"},
		{Name: "workers", Type: sdk.TypeNumber},
		{Name: "cache", Type: sdk.TypeBool},
		{Name: "dirs", Type: sdk.TypeStringList},
		{Name: "labels", Type: sdk.TypeStringMap},
	}}
	const file = "hosts/plugin-config.hcl"
	tests := []struct {
		block  string
		schema sdk.Schema
		want   sdk.Config
		diags  []wantDiag
	}{
		{block: "full", schema: schema, want: sdk.Config{
			"max_memory": "1GiB",
			"workers":    4.0,
			"cache":      true,
			"dirs":       []string{"a", "b"},
			"labels":     map[string]string{"zone": "eu"},
		}},
		{block: "wrong-type", schema: sdk.Schema{}, diags: []wantDiag{
			{"Unsupported argument", `"max_memory" is not expected`, file, 26, 3},
			{"Unsupported argument", `"workers" is not expected`, file, 27, 3},
		}},
		{block: "unknown", schema: schema, diags: []wantDiag{{"Unsupported argument", `"colour" is not expected`, file, 22, 3}}},
		{block: "wrong-type", schema: schema, diags: []wantDiag{{"Incorrect attribute value type", "a number is required", file, 27, 16}}},
		{block: "missing", schema: schema, diags: []wantDiag{{"Missing required argument", `needs the argument "max_memory". max_memory: the largest linear memory`, file, 30, 1}}},
		{block: "wasm", schema: schema, diags: []wantDiag{{"Missing required argument", `runtime "wasm" block needs the argument "max_memory"`, file, 10, 1}}},
		{block: "null-element", schema: schema, diags: []wantDiag{{`Invalid value for "dirs"`, "element 1 is null", file, 36, 16}}},
		{
			block:  "full",
			schema: sdk.Schema{Attributes: []sdk.Attribute{{Name: "dirs", Type: "set(string)"}}},
			diags:  []wantDiag{{"Invalid plugin schema", `setting "dirs" with the unknown type "set(string)"`, file, 12, 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.block, func(t *testing.T) {
			cfg, diags := DecodePluginConfig(pluginBlock(t, tt.block), tt.schema)
			checkDiags(t, diags, tt.diags...)
			if !reflect.DeepEqual(cfg, tt.want) {
				t.Errorf("config = %#v, want %#v", cfg, tt.want)
			}
		})
	}
}

func TestPluginConfigDiagnostic(t *testing.T) {
	const file = "hosts/plugin-config.hcl"
	tests := []struct {
		name string
		err  error
		want wantDiag
	}{
		{"attribute", sdk.InvalidAttribute("max_memory", "exceeds the host's memory"),
			wantDiag{`Invalid runtime "full" setting "max_memory"`, "exceeds the host's memory", file, 13, 16}},
		{"wrapped attribute", fmt.Errorf("configure: %w", sdk.InvalidAttribute("labels", "unknown zone")),
			wantDiag{`Invalid runtime "full" setting "labels"`, "unknown zone", file, 17, 16}},
		{"absent attribute", sdk.InvalidAttribute("threads", "must be set on this host"),
			wantDiag{`Invalid runtime "full" setting "threads"`, "must be set on this host", file, 12, 1}},
		{"typed error", sdk.Errorf(sdk.CodeUnavailable, "cache directory missing"),
			wantDiag{`Failed to configure runtime "full"`, "cache directory missing", file, 12, 1}},
		{"plain error", errors.New("connection refused"),
			wantDiag{`Failed to configure runtime "full"`, "connection refused", file, 12, 1}},
	}
	b := pluginBlock(t, "full")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDiags(t, hcl.Diagnostics{PluginConfigDiagnostic(b, tt.err)}, tt.want)
		})
	}
}

func TestWriteDiagnostics(t *testing.T) {
	tests := []struct {
		color bool
		want  []string
	}{
		{false, []string{
			testdata(t, "hosts/negative-memory.hcl") + `:4,17: Error: Invalid value for "memory"`,
			`   4:     memory    = "-1GiB"`,
			"The size must be greater than zero.",
		}},
		{true, []string{
			testdata(t, "hosts/negative-memory.hcl") + ":4,17: \x1b[31mError\x1b[0m: Invalid value for \"memory\"",
			"   4:     memory    = \x1b[1;4m\"-1GiB\"\x1b[0m",
		}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint("color=", tt.color), func(t *testing.T) {
			p := NewParser()
			_, diags := p.LoadHost("testdata/hosts/negative-memory.hcl")
			var out bytes.Buffer
			if err := WriteDiagnostics(&out, p.Files(), diags, tt.color); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  string
	}{
		{in: "64MiB", want: 64 << 20},
		{in: "1.5GiB", want: 3 << 29},
		{in: "2GB", want: 2e9},
		{in: " 1 KiB ", want: 1024},
		{in: "42", want: 42},
		{in: "0", want: 0},
		{in: "-1KiB", want: -1024},
		{in: "7EiB", want: 7 << 60},
		{in: "", err: "write a number and a unit"},
		{in: "-", err: "write a number and a unit"},
		{in: "GiB", err: "write a number and a unit"},
		{in: "2 gigs", err: "unhandled size name: gigs"},
		{in: "8EiB", err: "out of range"},
		{in: "20000000000000000000000", err: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseSize(%q) = %d, %v; want error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestCheckLoopback(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:9464", true},
		{"127.1.2.3:1", true},
		{"[::1]:9464", true},
		{"localhost:9464", true},
		{"0.0.0.0:9464", false},
		{"[::]:9464", false},
		{"10.0.0.1:9464", false},
		{":9464", false},
		{"127.0.0.1:0", false},
		{"127.0.0.1:http", false},
		{"127.0.0.1", false},
	}
	for _, tt := range tests {
		if err := checkLoopback(tt.addr); (err == nil) != tt.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok %v", tt.addr, err, tt.ok)
		}
	}
}

package spec

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"testing"

	"github.com/hashicorp/hcl/v2"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// nestedSchema is a schema with single, list and map blocks.
var nestedSchema = sdk.Schema{
	Attributes: []sdk.Attribute{{Name: "url", Type: sdk.TypeString, Required: true}},
	Blocks: []sdk.Block{
		{Name: "registry", Nesting: sdk.NestingSingle, Required: true, Description: "where images come from", Schema: sdk.Schema{
			Attributes: []sdk.Attribute{{Name: "url", Type: sdk.TypeString}},
			Blocks: []sdk.Block{{Name: "mirror", Nesting: sdk.NestingList, Schema: sdk.Schema{
				Attributes: []sdk.Attribute{{Name: "url", Type: sdk.TypeString}},
			}}},
		}},
		{Name: "pool", Nesting: sdk.NestingMap, Schema: sdk.Schema{
			Attributes: []sdk.Attribute{{Name: "first", Type: sdk.TypeNumber, Required: true}},
		}},
	},
}

func TestDecodeNestedPluginConfig(t *testing.T) {
	const file = "hosts/plugin-config.hcl"
	tests := []struct {
		block  string
		schema sdk.Schema
		want   sdk.Config
		diags  []wantDiag
	}{
		{block: "nested", schema: nestedSchema, want: sdk.Config{
			"url": "https://r.example",
			"registry": sdk.Config{
				"url":    "https://r",
				"mirror": []sdk.Config{{"url": "m1"}, {}},
			},
			"pool": map[string]sdk.Config{"web": {"first": 8000.0}, "db": {"first": 9000.0}},
		}},
		{block: "nested-bad", schema: nestedSchema, diags: []wantDiag{
			{"Missing required argument", `needs the argument "url"`, file, 50, 1},
			{"Incorrect attribute value type", "string required", file, 52, 20},
			{"Duplicate registry block", "Only one registry block", file, 54, 3},
			{"Duplicate pool block", `A pool block "web" is already defined at`, file, 56, 3},
			{"Missing key for pool", "must have 1 labels (key)", file, 57, 8},
		}},
		{block: "nested-missing", schema: nestedSchema, diags: []wantDiag{
			{"Missing required block", "needs a registry block. registry: where images come from", file, 60, 1},
		}},
		{block: "nested", schema: sdk.Schema{Attributes: nestedSchema.Attributes}, diags: []wantDiag{
			{"Unsupported block type", `Blocks of type "registry" are not expected`, file, 41, 3},
			{"Unsupported block type", `Blocks of type "pool" are not expected`, file, 46, 3},
			{"Unsupported block type", `Blocks of type "pool" are not expected`, file, 47, 3},
		}},
		{
			block:  "nested",
			schema: sdk.Schema{Blocks: []sdk.Block{{Name: "pool", Nesting: "set"}, {Name: "pool", Nesting: sdk.NestingList}}},
			diags: []wantDiag{
				{"Invalid plugin schema", `block "pool" with the unknown nesting "set"`, file, 39, 1},
				{"Invalid plugin schema", `setting "pool" twice`, file, 39, 1},
			},
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

func TestNestedPluginConfigDiagnostic(t *testing.T) {
	const file = "hosts/plugin-config.hcl"
	tests := []struct {
		attr      string
		line, col int
	}{
		{"url", 40, 9},
		{"registry.url", 42, 11},
		{"registry.mirror[0].url", 43, 20},
		{"registry.mirror[1].url", 44, 5},
		{"registry.mirror[7].url", 41, 3},
		{`pool["db"].first`, 47, 23},
		{`pool["web"]`, 46, 3},
		{`pool["none"].first`, 39, 1},
		{"registry..url", 39, 1},
		{`pool["unclosed`, 39, 1},
		{"registry.mirror[-1]", 39, 1},
	}
	b := pluginBlock(t, "nested")
	for _, tt := range tests {
		t.Run(tt.attr, func(t *testing.T) {
			d := PluginConfigDiagnostic(b, fmt.Errorf("configure: %w", sdk.InvalidAttribute(tt.attr, "refused")))
			checkDiags(t, hcl.Diagnostics{d}, wantDiag{fmt.Sprintf(`Invalid runtime "nested" setting %q`, tt.attr), "refused", file, tt.line, tt.col})
		})
	}
}

// permissionInstance returns the instance of tenants/permission-blocks.hcl.
func permissionInstance(t *testing.T) *Instance {
	t.Helper()
	p := NewParser()
	h := loadHost(t, p, "good/host.hcl")
	file := testdata(t, "tenants/permission-blocks.hcl")
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	tenants, diags := parseTenant(p, file, src, h)
	if diags.HasErrors() {
		t.Fatalf("unexpected errors:\n%s", dump(diags))
	}
	return &tenants[0].Instances[0]
}

func TestPermissionBlocks(t *testing.T) {
	in := permissionInstance(t)
	want := sdk.Permissions{
		{Name: "clock"},
		{Name: "net.connect", Params: map[string]string{"host": "db.internal", "port": "5432"}},
		{Name: "random"},
	}
	if !reflect.DeepEqual(in.Permissions, want) {
		t.Errorf("permissions = %#v, want %#v", in.Permissions, want)
	}
}

func TestCheckPermissions(t *testing.T) {
	const file = "tenants/permission-blocks.hcl"
	all := []sdk.PermissionSpec{
		{Name: "clock"}, {Name: "random"},
		{Name: "net.connect", Params: []sdk.PermissionParam{{Name: "host", Required: true}, {Name: "port"}}},
	}
	tests := []struct {
		name  string
		caps  sdk.Capabilities
		diags []wantDiag
	}{
		{"all-declared", sdk.Capabilities{Permissions: all}, nil},
		{"none-declared", sdk.Capabilities{}, []wantDiag{
			{"Unknown permission", `offers no permission "clock"; it offers none`, file, 5, 20},
			{"Unknown permission", `no permission "net.connect"`, file, 6, 5},
			{"Unknown permission", `no permission "random"`, file, 10, 5},
		}},
		{"params-differ", sdk.Capabilities{Permissions: []sdk.PermissionSpec{
			{Name: "clock"}, {Name: "random"},
			{Name: "net.connect", Params: []sdk.PermissionParam{{Name: "host"}, {Name: "proto", Required: true, Description: "tcp or udp"}}},
		}}, []wantDiag{
			{"Missing permission parameter", `needs the parameter "proto"`, file, 6, 5},
			{"Unknown permission parameter", `takes no parameter "port"`, file, 8, 14},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDiags(t, CheckPermissions(permissionInstance(t), tt.caps), tt.diags...)
		})
	}
}

// settingsSchema is a runtime's instance schema for the settings tests.
var settingsSchema = sdk.Schema{
	Attributes: []sdk.Attribute{{Name: "entrypoint", Type: sdk.TypeStringList}, {Name: "uid", Type: sdk.TypeNumber}},
	Blocks: []sdk.Block{{Name: "port", Nesting: sdk.NestingMap, Schema: sdk.Schema{
		Attributes: []sdk.Attribute{{Name: "container", Type: sdk.TypeNumber, Required: true}},
	}}},
}

func TestDecodeInstanceSettings(t *testing.T) {
	const file = "tenants/permission-blocks.hcl"
	tests := []struct {
		name   string
		schema sdk.Schema
		want   sdk.Config
		diags  []wantDiag
	}{
		{"decoded", settingsSchema, sdk.Config{
			"entrypoint": []string{"/bin/app"},
			"port":       map[string]sdk.Config{"http": {"container": 8080.0}},
		}, nil},
		{"runtime-without-settings", sdk.Schema{}, nil, []wantDiag{
			{"Unsupported argument", `"entrypoint" is not expected`, file, 12, 7},
			{"Unsupported block type", `"port" are not expected`, file, 13, 7},
		}},
		{"required", sdk.Schema{Attributes: []sdk.Attribute{{Name: "uid", Type: sdk.TypeNumber, Required: true}}, Blocks: settingsSchema.Blocks}, nil, []wantDiag{
			{"Missing required argument", `settings block of instance "hello" (runtime "wasm") needs the argument "uid"`, file, 11, 5},
			{"Unsupported argument", `"entrypoint" is not expected`, file, 12, 7},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := permissionInstance(t)
			checkDiags(t, DecodeInstanceSettings(in, tt.schema), tt.diags...)
			if !reflect.DeepEqual(in.Settings, tt.want) {
				t.Errorf("settings = %#v, want %#v", in.Settings, tt.want)
			}
		})
	}
}

func TestInstanceDiagnostic(t *testing.T) {
	const file = "tenants/permission-blocks.hcl"
	tests := []struct {
		name      string
		err       error
		summary   string
		line, col int
	}{
		{"setting", sdk.InvalidAttribute(`settings.port["http"].container`, "port taken"), `Invalid setting "port[\"http\"].container" of instance "hello"`, 14, 21},
		{"settings-block", sdk.InvalidAttribute("settings.uid", "needed here"), `Invalid setting "uid" of instance "hello"`, 11, 5},
		{"module", fmt.Errorf("validate: %w", sdk.InvalidAttribute("module", "not wasm")), `Invalid "module" of instance "hello"`, 4, 19},
		{"permission", sdk.InvalidAttribute("permission.net.connect.host", "unresolvable"), `Invalid "permission.net.connect.host" of instance "hello"`, 7, 14},
		{"unknown-attribute", sdk.InvalidAttribute("gpu", "none here"), `Invalid "gpu" of instance "hello"`, 2, 3},
		{"no-attribute", errors.New("runtime down"), `Runtime "wasm" refuses instance "hello"`, 2, 3},
	}
	in := permissionInstance(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkDiags(t, hcl.Diagnostics{InstanceDiagnostic(in, tt.err)}, wantDiag{tt.summary, "", file, tt.line, tt.col})
		})
	}
}

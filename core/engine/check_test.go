package engine

import (
	"context"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/kigumi/kigumi/core/engine/enginetest"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
)

func TestCheckTenants(t *testing.T) {
	settings, diags := hclsyntax.ParseConfig([]byte("port = 80\n"), "alice.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	r := hcl.Range{Filename: "alice.hcl", Start: hcl.Pos{Line: 9, Column: 9}}
	tests := []struct {
		name     string
		instance spec.Instance
		want     string // summary of the one diagnostic, "" for none
	}{
		{"valid", spec.Instance{Permissions: sdk.Permissions{{Name: sdk.PermStateWrite}}}, ""},
		{"undeclared-permission", spec.Instance{
			Permissions: sdk.Permissions{{Name: sdk.PermClock}},
			Ranges:      map[string]hcl.Range{"permission.clock": r},
		}, "Unknown permission"},
		{"refused-by-validate", spec.Instance{Module: "/refused.wasm", Ranges: map[string]hcl.Range{"module": r}}, `Invalid "module" of instance "web"`},
		{"settings-without-schema", spec.Instance{SettingsBody: settings.Body}, "Unsupported argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := enginetest.NewWorld()
			e := newEngine(t, testHost(t), w)
			in := tt.instance
			in.Name, in.Runtime = "web", "wasm"
			if in.Module == "" {
				in.Module = "/m.wasm"
			}
			diags, err := e.CheckTenants(context.Background(), []*spec.Tenant{{Name: "alice", Instances: []spec.Instance{in}}})
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tt.want == "" && diags.HasErrors():
				t.Errorf("diagnostics: %v", diags)
			case tt.want != "" && (len(diags) != 1 || !strings.HasPrefix(diags[0].Summary, tt.want) || diags[0].Subject == nil):
				t.Errorf("diagnostics %v, want one %q with a subject", diags, tt.want)
			}
		})
	}
}

func TestStateMountWritable(t *testing.T) {
	w := enginetest.NewWorld()
	e := newEngine(t, testHost(t), w)
	want := desired("alice")
	want[0].Instances[0].Spec.Permissions = sdk.Permissions{{Name: sdk.PermStateWrite}}
	if _, err, _ := apply(t, e, want); err != nil {
		t.Fatal(err)
	}
	if m := w.LastStart.Mounts; len(m) != 1 || m[0].ReadOnly || m[0].Target != sdk.StateTarget {
		t.Errorf("mounts = %+v, want /state read-write", m)
	}
}

package wasmruntime

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/sdktest"
)

func TestTenantLifecycle(t *testing.T) {
	r := newRuntime(t, nil)
	rt := sdktest.Runtime(t, r)
	ctx := context.Background()
	runDir := filepath.Join(t.TempDir(), "tenants", "alice")
	req := &sdk.TenantRequest{Tenant: "alice", User: sdk.User{UID: nobody, GID: nobody}, RunDir: runDir}
	h, err := rt.PrepareTenant(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := rt.PrepareTenant(ctx, req)
	if err != nil || string(again.Data) != string(h.Data) || again.Version != h.Version {
		t.Errorf("second PrepareTenant = %+v, %v; want the same handle", again, err)
	}
	if _, err := os.Stat(filepath.Join(runDir, tenantFile)); err != nil {
		t.Errorf("tenant not recorded: %v", err)
	}

	// An instance of the tenant starts with the handle; one of another
	// tenant may not use it.
	sreq := request(t, "tiny")
	sreq.Tenant = h
	st, _ := run(t, r, sreq)
	if st.State != sdk.StateExited || st.Cause != sdk.CauseExit || st.ExitCode != 0 {
		t.Errorf("status = %+v, want a clean exit", st)
	}
	other := request(t, "tiny")
	other.Instance.Tenant, other.Tenant = "bob", h
	if _, err := r.Start(ctx, other); !errors.Is(err, sdk.ErrInvalid) || !strings.Contains(err.Error(), "handle of tenant alice") {
		t.Errorf("Start of bob with alice's handle = %v, want invalid", err)
	}

	for range 2 {
		if err := rt.ReleaseTenant(ctx, h); err != nil {
			t.Errorf("ReleaseTenant: %v", err)
		}
	}
	if _, err := os.Stat(runDir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("tenant run dir after release: %v, want it gone", err)
	}
	released := request(t, "tiny")
	released.Tenant = h
	if _, err := r.Start(ctx, released); !errors.Is(err, sdk.ErrNotFound) {
		t.Errorf("Start with a released tenant's handle = %v, want not found", err)
	}

	// A tampered handle cannot make the runtime remove another directory.
	victim := t.TempDir()
	tampered := sdk.Handle{Version: 1, Data: []byte(`{"tenant":"alice","uid":65534,"run_dir":"` + victim + `"}`)}
	if err := os.WriteFile(filepath.Join(victim, tenantFile), []byte(`{"tenant":"mallory"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := rt.ReleaseTenant(ctx, tampered); !errors.Is(err, sdk.ErrInvalid) {
		t.Errorf("ReleaseTenant of a tampered handle = %v, want invalid", err)
	}
	if _, err := os.Stat(victim); err != nil {
		t.Errorf("tampered release removed %s: %v", victim, err)
	}
	for _, bad := range []*sdk.TenantRequest{
		{Tenant: "", RunDir: runDir},
		{Tenant: "alice", RunDir: "relative"},
		{Tenant: "alice", RunDir: "/"},
		{Tenant: "alice", RunDir: runDir + "/../x"},
	} {
		if _, err := rt.PrepareTenant(ctx, bad); !errors.Is(err, sdk.ErrInvalid) {
			t.Errorf("PrepareTenant(%+v) = %v, want invalid", bad, err)
		}
	}
}

func TestValidate(t *testing.T) {
	r := newRuntime(t, nil)
	rt := sdktest.Runtime(t, r)
	tests := []struct {
		name string
		edit func(*sdk.StartRequest)
		attr string // "" for valid
	}{
		{"valid", func(*sdk.StartRequest) {}, ""},
		{"valid-permissions", func(r *sdk.StartRequest) {
			r.Permissions = sdk.Permissions{{Name: sdk.PermClock}, {Name: sdk.PermRandom}, {Name: sdk.PermStateWrite}}
		}, ""},
		{"unknown-permission", func(r *sdk.StartRequest) { r.Permissions = sdk.Permissions{{Name: "net.connect"}} }, "permission.net.connect"},
		{"permission-parameter", func(r *sdk.StartRequest) {
			r.Permissions = sdk.Permissions{{Name: sdk.PermRandom, Params: map[string]string{"seed": "1"}}}
		}, "permission.random.seed"},
		{"settings", func(r *sdk.StartRequest) { r.Settings = sdk.Config{"port": 80.0} }, "settings.port"},
		{"random-seed", func(r *sdk.StartRequest) { r.Settings = sdk.Config{"random_seed": "s"} }, ""},
		{"random-seed-with-random", func(r *sdk.StartRequest) {
			r.Settings, r.Permissions = sdk.Config{"random_seed": "s"}, sdk.Permissions{{Name: sdk.PermRandom}}
		}, "settings.random_seed"},
		{"writable-mount", func(r *sdk.StartRequest) { r.Mounts = []sdk.Mount{{Source: "/tmp", Target: "/data"}} }, "mount./data"},
		{"unclean-guest", func(r *sdk.StartRequest) {
			r.Mounts = []sdk.Mount{{Source: "/tmp", Target: "/data/../x", ReadOnly: true}}
		}, "mount./data/../x"},
		{"two-mounts-at-one-path", func(r *sdk.StartRequest) {
			r.Mounts = []sdk.Mount{{Target: "/", State: true}, {Source: "/tmp", Target: "/", ReadOnly: true}}
		}, "mount./"},
		{"mounts", func(r *sdk.StartRequest) {
			r.Mounts = []sdk.Mount{{Target: "/", State: true}, {Source: "/tmp", Target: "/data", ReadOnly: true}}
		}, ""},
		{"missing-module", func(r *sdk.StartRequest) { r.Artifact.Module = "/nonexistent.wasm" }, "module"},
		{"digest", func(r *sdk.StartRequest) { r.Artifact.Digest = "sha256:" + strings.Repeat("0", 64) }, "digest"},
		{"memory", func(r *sdk.StartRequest) { r.Resources.MemoryBytes = 100 }, "resources.memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(t, "tiny")
			req.RunDir, req.Cgroup = "", sdk.Cgroup{}
			tt.edit(req)
			err := rt.Validate(context.Background(), req)
			var e *sdk.Error
			switch {
			case tt.attr == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tt.attr != "" && (!errors.As(err, &e) || e.Code != sdk.CodeInvalid || e.Attribute != tt.attr):
				t.Errorf("Validate = %v, want invalid %q", err, tt.attr)
			}
		})
	}
}

func TestInfoCapabilities(t *testing.T) {
	info, err := New().Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c := info.Capabilities
	for _, want := range []string{sdk.PermStateRead, sdk.PermStateWrite, sdk.PermClock, sdk.PermRandom} {
		if _, ok := c.Permission(want); !ok {
			t.Errorf("permission %q not declared", want)
		}
	}
	if !slices.Contains(c.Isolation, sdk.IsolationSeccomp) || len(c.Permissions) != 4 || !c.Has(sdk.FeatureTenantLifecycle) || !c.Has(sdk.FeatureValidate) || c.Artifacts[0] != sdk.ArtifactWasm {
		t.Errorf("capabilities = %+v", c)
	}
}

func TestTrapCause(t *testing.T) {
	r := newRuntime(t, nil)
	st, _ := run(t, r, request(t, "trap"))
	if st.State != sdk.StateExited || st.Cause != sdk.CauseTrap || !strings.Contains(st.Message, "unreachable") {
		t.Errorf("status = %+v, want a trap", st)
	}
}

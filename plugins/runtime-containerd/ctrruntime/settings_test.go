package ctrruntime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// TestValidate checks that Validate refuses bad instances with the
// attribute at fault, without containerd.
func TestValidate(t *testing.T) {
	r := New()
	ok := func() *sdk.StartRequest {
		return &sdk.StartRequest{Instance: sdk.Instance{Tenant: "ctr-v", Name: "web"}, Artifact: sdk.Artifact{Image: "127.0.0.1:5000/app:1"}}
	}
	for _, tc := range []struct {
		name string
		edit func(*sdk.StartRequest)
		attr string
	}{
		{"ok", func(*sdk.StartRequest) {}, ""},
		{"settings", func(q *sdk.StartRequest) {
			q.Settings = sdk.Config{"entrypoint": []string{"/bin/app"}, "workload_uid": float64(1000)}
		}, ""},
		{"state", func(q *sdk.StartRequest) { q.Mounts = []sdk.Mount{{Target: "/", State: true}} }, ""},
		{"state-guest", func(q *sdk.StartRequest) { q.Mounts = []sdk.Mount{{Target: "/data", State: true}} }, ""},
		{"module", func(q *sdk.StartRequest) { q.Artifact = sdk.Artifact{Module: "/a.wasm"} }, "module"},
		{"no-image", func(q *sdk.StartRequest) { q.Artifact = sdk.Artifact{} }, "image"},
		{"bad-image", func(q *sdk.StartRequest) { q.Artifact.Image = "registry.example//app:1" }, "image"},
		{"bad-digest", func(q *sdk.StartRequest) { q.Artifact.Digest = "md5:abc" }, "digest"},
		{"root", func(q *sdk.StartRequest) { q.Settings = sdk.Config{"workload_uid": float64(0)} }, "settings.workload_uid"},
		{"fraction", func(q *sdk.StartRequest) { q.Settings = sdk.Config{"workload_uid": 1.5} }, "settings.workload_uid"},
		{"big-uid", func(q *sdk.StartRequest) { q.Settings = sdk.Config{"workload_uid": float64(70000)} }, "settings.workload_uid"},
		{"empty-entrypoint", func(q *sdk.StartRequest) { q.Settings = sdk.Config{"entrypoint": []string{}} }, "settings.entrypoint"},
		{"state-in-proc", func(q *sdk.StartRequest) { q.Mounts = []sdk.Mount{{Target: "/proc", State: true}} }, "state.guest"},
		{"state-below-dev", func(q *sdk.StartRequest) { q.Mounts = []sdk.Mount{{Target: "/dev/shm", State: true}} }, "state.guest"},
		{"state-on-tmp", func(q *sdk.StartRequest) { q.Mounts = []sdk.Mount{{Target: "/tmp", State: true}} }, "state.guest"},
		{"two-states", func(q *sdk.StartRequest) {
			q.Mounts = []sdk.Mount{{Target: "/a", State: true}, {Target: "/b", State: true}}
		}, "mounts"},
		{"unknown-setting", func(q *sdk.StartRequest) { q.Settings = sdk.Config{"privileged": true} }, "settings.privileged"},
		{"permission", func(q *sdk.StartRequest) { q.Permissions = sdk.Permissions{{Name: "net"}} }, "permission.net"},
		{"tiny-memory", func(q *sdk.StartRequest) { q.Resources.MemoryBytes = 1 << 20 }, "resources.memory"},
		{"network", func(q *sdk.StartRequest) {
			q.Settings = sdk.Config{"network": sdk.Config{"outbound": "internet", "port": map[string]sdk.Config{"http": {"container": float64(8080), "protocol": "udp"}}}}
		}, ""},
		{"net-outbound", func(q *sdk.StartRequest) { q.Settings = sdk.Config{"network": sdk.Config{"outbound": "all"}} }, "settings.network.outbound"},
		{"net-unknown", func(q *sdk.StartRequest) { q.Settings = sdk.Config{"network": sdk.Config{"host": true}} }, "settings.network.host"},
		{"port-big", func(q *sdk.StartRequest) {
			q.Settings = sdk.Config{"network": sdk.Config{"port": map[string]sdk.Config{"http": {"container": float64(70000)}}}}
		}, `settings.network.port["http"].container`},
		{"port-none", func(q *sdk.StartRequest) {
			q.Settings = sdk.Config{"network": sdk.Config{"port": map[string]sdk.Config{"http": {}}}}
		}, `settings.network.port["http"].container`},
		{"port-protocol", func(q *sdk.StartRequest) {
			q.Settings = sdk.Config{"network": sdk.Config{"port": map[string]sdk.Config{"http": {"container": float64(80), "protocol": "sctp"}}}}
		}, `settings.network.port["http"].protocol`},
		{"port-many", func(q *sdk.StartRequest) {
			pm := map[string]sdk.Config{}
			for i := 0; i <= maxPorts; i++ {
				pm[fmt.Sprint(i)] = sdk.Config{"container": float64(80)}
			}
			q.Settings = sdk.Config{"network": sdk.Config{"port": pm}}
		}, "settings.network.port"},
		{"host-mount", func(q *sdk.StartRequest) { q.Mounts = []sdk.Mount{{Source: "/etc", Target: "/etc"}} }, "mounts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := ok()
			tc.edit(req)
			err := r.Validate(context.Background(), req)
			var se *sdk.Error
			switch {
			case tc.attr == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.attr != "" && (!errors.As(err, &se) || se.Code != sdk.CodeInvalid || se.Attribute != tc.attr):
				t.Errorf("error %v, want invalid %s", err, tc.attr)
			}
		})
	}
}

// TestRefusesPrivilegeAndHostPaths checks the runtime's own refusal of
// privileged mode and host paths, behind the policies of
// policies/containers.hcl, whatever a settings value says.
func TestRefusesPrivilegeAndHostPaths(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*sdk.StartRequest)
		attr string
		msg  string
	}{
		{"privileged", func(q *sdk.StartRequest) { q.Settings = sdk.Config{"privileged": true} }, "settings.privileged", "never runs a container privileged"},
		{"privileged-false", func(q *sdk.StartRequest) { q.Settings = sdk.Config{"privileged": false} }, "settings.privileged", "never runs a container privileged"},
		{"host-paths", func(q *sdk.StartRequest) { q.Settings = sdk.Config{"host_paths": []string{"/"}} }, "settings.host_paths", "no host path"},
		{"host-mount", func(q *sdk.StartRequest) { q.Mounts = []sdk.Mount{{Source: "/", Target: "/host", Type: sdk.MountBind}} }, "mounts", "no host path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := &sdk.StartRequest{Instance: sdk.Instance{Tenant: "ctr-v", Name: "web"}, Artifact: sdk.Artifact{Image: "127.0.0.1:5000/app:1"}}
			tc.edit(req)
			err := New().Validate(context.Background(), req)
			var se *sdk.Error
			if !errors.As(err, &se) || se.Code != sdk.CodeInvalid || se.Attribute != tc.attr || !strings.Contains(se.Error(), tc.msg) {
				t.Errorf("error %v, want invalid %s with %q", err, tc.attr, tc.msg)
			}
		})
	}
}

// TestConfigure checks the host settings' refusals.
func TestConfigure(t *testing.T) {
	for _, tc := range []struct {
		settings sdk.Config
		attr     string
	}{
		{sdk.Config{"address": "relative.sock"}, "address"},
		{sdk.Config{"namespace": "Bad Name"}, "namespace"},
		{sdk.Config{"tmp_size": "1KiB"}, "tmp_size"},
		{sdk.Config{"registry": map[string]sdk.Config{"r:5000": {"plain_http": "yes"}}}, `registry["r:5000"].plain_http`},
		{sdk.Config{"network": sdk.Config{"bridge": "a-bridge-name-too-long"}}, "network.bridge"},
		{sdk.Config{"network": sdk.Config{"subnet": "10.88.0.1/16"}}, "network.subnet"},
		{sdk.Config{"network": sdk.Config{"subnet": "fd00::/64"}}, "network.subnet"},
		{sdk.Config{"network": sdk.Config{"subnet": "10.0.0.0/30"}}, "network.subnet"},
		{sdk.Config{"network": sdk.Config{"cni_path": "lib/cni"}}, "network.cni_path"},
		{sdk.Config{"network": sdk.Config{"slirp4netns": "slirp4netns"}}, "network.slirp4netns"},
		{sdk.Config{"ports": sdk.Config{"from": float64(0)}}, "ports.from"},
		{sdk.Config{"ports": sdk.Config{"from": float64(30000), "to": float64(29999)}}, "ports.to"},
		{sdk.Config{"ports": sdk.Config{"size": float64(3)}}, "ports.size"},
		{sdk.Config{"daemon": "rootless"}, "daemon"},
		{sdk.Config{"daemon": true}, "daemon"},
		{sdk.Config{"daemons": map[string]string{"alice": "own"}}, "daemons.alice"},
		{sdk.Config{"daemons": "alice"}, "daemons"},
	} {
		err := New().Configure(context.Background(), sdk.ConfigureRequest{Settings: tc.settings, DataDir: t.TempDir()})
		var se *sdk.Error
		if !errors.As(err, &se) || se.Attribute != tc.attr {
			t.Errorf("%v: error %v, want one on %s", tc.settings, err, tc.attr)
		}
	}
	r := New()
	err := r.Configure(context.Background(), sdk.ConfigureRequest{DataDir: t.TempDir(), Settings: sdk.Config{
		"registry": map[string]sdk.Config{"r:5000": {"plain_http": true}}}})
	if err != nil || !r.registry.Host("r:5000").PlainHTTP {
		t.Errorf("registry settings: %v, %+v", err, r.registry)
	}
	r = New()
	err = r.Configure(context.Background(), sdk.ConfigureRequest{DataDir: t.TempDir(), Settings: sdk.Config{
		"daemon": ModePerTenant, "daemons": map[string]string{"bob": ModeShared}}})
	if err != nil || r.modeOf("alice") != ModePerTenant || r.modeOf("bob") != ModeShared {
		t.Errorf("daemon modes: %v, alice %s, bob %s", err, r.modeOf("alice"), r.modeOf("bob"))
	}
}

package ctrruntime

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/internal/registrytest"
	"github.com/kigumi/kigumi/plugins/runtime-containerd/internal/ctrtest"
)

// TestStartErrors checks that a Start that cannot pull, or cannot reach
// containerd, fails with a clear, typed error naming the attribute, and
// leaves nothing behind.
func TestStartErrors(t *testing.T) {
	tn := newTenant(t)
	free, err := registrytest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	wrong := "sha256:" + strings.Repeat("0", 64)
	for _, tc := range []struct {
		name     string
		settings sdk.Config
		artifact sdk.Artifact
		code     sdk.Code
		attr     string
		msg      string
	}{
		{"no-such-image", nil, sdk.Artifact{Image: env.Registry + "/kigumi/nothing:1"}, sdk.CodeInvalid, "image", "has no image"},
		{"no-such-tag", nil, sdk.Artifact{Image: env.Registry + "/" + ctrtest.ImageName + ":nope"}, sdk.CodeInvalid, "image", "has no image"},
		{"unreachable-registry", nil, sdk.Artifact{Image: free + "/kigumi/busybox:1"}, sdk.CodeUnavailable, "image", "is unreachable"},
		{"wrong-digest", nil, sdk.Artifact{Image: env.Image, Digest: wrong}, sdk.CodeInvalid, "digest", "with digest " + wrong},
		{"pinned-elsewhere", nil, sdk.Artifact{Image: env.Registry + "/" + ctrtest.ImageName + "@" + env.Digest, Digest: wrong}, sdk.CodeInvalid, "digest", "is pinned to"},
		{"containerd-down", sdk.Config{"address": filepath.Join(t.TempDir(), "none.sock")}, sdk.Artifact{Image: env.Image}, sdk.CodeUnavailable, "", "is not reachable"},
		{"root-workload", nil, sdk.Artifact{Image: env.Image}, sdk.CodeInvalid, "settings.workload_uid", "never runs as root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRuntime(t, tc.settings)
			in := instance{name: "bad-" + tc.name, args: []string{"true"}, image: tc.artifact.Image}
			if tc.name == "root-workload" {
				in.settings = sdk.Config{"workload_uid": float64(0)}
			}
			req := request(t, tn, in)
			req.Artifact = tc.artifact
			_, err := r.Start(context.Background(), req)
			var se *sdk.Error
			if err == nil {
				t.Fatal("Start succeeded")
			}
			if code := sdk.CodeOf(err); code != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q (%s), want %s with %q", err, code, tc.code, tc.msg)
			}
			if tc.attr != "" && (!asError(err, &se) || se.Attribute != tc.attr) {
				t.Errorf("error %q names attribute %q, want %q", err, attrOf(se), tc.attr)
			}
			checkNothingLeft(t, idOf(req.Instance))
		})
	}
	// Pinned to the right digest, the image runs.
	r := newRuntime(t, nil)
	h, _ := start(t, r, tn, instance{name: "pinned", args: []string{"echo", "pinned"}})
	_ = h
	req := request(t, tn, instance{name: "pinned2", args: []string{"echo", "pinned"}})
	req.Artifact.Digest = env.Digest
	h2, err := r.Start(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Destroy(context.Background(), h2)
	waitLog(t, r, h2, "pinned\n", 30*time.Second)
}

func asError(err error, se **sdk.Error) bool { return errors.As(err, se) }

func attrOf(se *sdk.Error) string {
	if se == nil {
		return ""
	}
	return se.Attribute
}

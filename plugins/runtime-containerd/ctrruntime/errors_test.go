package ctrruntime

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/content"

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
	// The digest of a blob the registry has that is no manifest.
	raw, err := exec.Command("skopeo", "inspect", "--tls-verify=false", "--raw", "docker://"+env.Image).Output()
	if err != nil {
		t.Fatal(err)
	}
	var manifest struct {
		Config struct{ Digest string }
	}
	if err := json.Unmarshal(raw, &manifest); err != nil || manifest.Config.Digest == "" {
		t.Fatalf("manifest of %s: %v: %s", env.Image, err, raw)
	}
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
		{"pinned-reference-wrong", nil, sdk.Artifact{Image: env.Registry + "/" + ctrtest.ImageName + "@" + wrong}, sdk.CodeInvalid, "image", "has no image"},
		{"config-blob-digest", nil, sdk.Artifact{Image: env.Image, Digest: manifest.Config.Digest}, sdk.CodeInvalid, "digest", manifest.Config.Digest},
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
			images, blobs := storeListing(t)
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
			// A failed pull leaves no image and no content.
			if i, b := storeListing(t); !slices.Equal(i, images) || !slices.Equal(b, blobs) {
				t.Errorf("images %q and content %q left, had %q and %q", i, b, images, blobs)
			}
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

// storeListing returns the names of containerd's images and the digests
// of its content, sorted.
func storeListing(t *testing.T) (images, blobs []string) {
	t.Helper()
	ctx, c := client(t)
	imgs, err := c.ImageService().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range imgs {
		images = append(images, i.Name)
	}
	if err := c.ContentStore().Walk(ctx, func(info content.Info) error {
		blobs = append(blobs, info.Digest.String())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.Sort(images)
	slices.Sort(blobs)
	return images, blobs
}

func asError(err error, se **sdk.Error) bool { return errors.As(err, se) }

func attrOf(se *sdk.Error) string {
	if se == nil {
		return ""
	}
	return se.Attribute
}

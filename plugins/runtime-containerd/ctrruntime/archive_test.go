package ctrruntime

import (
	"archive/tar"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// TestArchive runs containers from an OCI archive (skopeo's
// oci-archive): two instances of one archive share its image, which is
// imported again without harm; a digest pins it; a wrong digest, a corrupt
// file and a tar that is no image layout are refused, naming the
// attribute at fault and leaving no image or content behind.
func TestArchive(t *testing.T) {
	dir := t.TempDir()
	archive := filepath.Join(dir, "busybox.tar")
	if out, err := exec.Command("skopeo", "copy", "--src-tls-verify=false", "docker://"+env.Image, "oci-archive:"+archive).CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v: %s", err, out)
	}
	out, err := exec.Command("skopeo", "inspect", "--format", "{{.Digest}}", "oci-archive:"+archive).Output()
	if err != nil {
		t.Fatal(err)
	}
	pinned := strings.TrimSpace(string(out))
	corrupt := filepath.Join(dir, "corrupt.tar")
	if err := os.WriteFile(corrupt, []byte(strings.Repeat("not a tar\n", 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain.tar")
	writeTar(t, plain, "hello.txt", "hello\n")

	r := newRuntime(t, nil)
	tn := newTenant(t)
	for _, tc := range []struct {
		name     string
		artifact sdk.Artifact
		attr     string
		want     string
	}{
		{"wrong-digest", sdk.Artifact{Archive: archive, Digest: "sha256:" + strings.Repeat("0", 64)}, "digest", "holds image " + pinned},
		{"corrupt", sdk.Artifact{Archive: corrupt}, "archive", "is not an OCI image archive"},
		{"no-image-layout", sdk.Artifact{Archive: plain}, "archive", "is not an OCI image archive"},
		{"missing", sdk.Artifact{Archive: filepath.Join(dir, "none.tar")}, "archive", "cannot open"},
		{"relative", sdk.Artifact{Archive: "busybox.tar"}, "archive", "not an absolute path"},
		{"and-image", sdk.Artifact{Archive: archive, Image: env.Image}, "archive", "not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := request(t, tn, instance{name: "bad-" + tc.name, args: []string{"true"}, artifact: tc.artifact})
			images, blobs := storeListing(t)
			_, err := r.Start(context.Background(), req)
			var se *sdk.Error
			if !asError(err, &se) || se.Code != sdk.CodeInvalid || attrOf(se) != tc.attr || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v; want an invalid %s saying %q", err, tc.attr, tc.want)
			}
			checkNothingLeft(t, idOf(req.Instance))
			if i, b := storeListing(t); !slices.Equal(i, images) || !slices.Equal(b, blobs) {
				t.Errorf("images %q and content %q left, had %q and %q", i, b, images, blobs)
			}
		})
	}

	h1, req1 := start(t, r, tn, instance{name: "archive", args: []string{"sh", "-c", "echo from-archive; exec sleep 1000"}, artifact: sdk.Artifact{Archive: archive}})
	waitLog(t, r, h1, "from-archive\n", 30*time.Second)
	h2, _ := start(t, r, tn, instance{name: "pinned", args: []string{"sh", "-c", "echo pinned; exec sleep 1000"}, artifact: sdk.Artifact{Archive: archive, Digest: pinned}})
	waitLog(t, r, h2, "pinned\n", 30*time.Second)
	// The archive was imported once, under its digest.
	images, _ := storeListing(t)
	if ref := archiveRef(digest.Digest(pinned)); !slices.Contains(images, ref) {
		t.Errorf("images %q hold no %s", images, ref)
	}
	// A wrong digest of the same archive leaves the image the running
	// instances share.
	bad := request(t, tn, instance{name: "bad-again", args: []string{"true"}, artifact: sdk.Artifact{Archive: archive, Digest: "sha256:" + strings.Repeat("1", 64)}})
	if _, err := r.Start(context.Background(), bad); err == nil {
		t.Fatal("a wrong digest started")
	}
	if after, _ := storeListing(t); !slices.Equal(after, images) {
		t.Errorf("images %q after a refused import, had %q", after, images)
	}
	if st, err := r.Inspect(context.Background(), h1); err != nil || st.State != sdk.StateRunning {
		t.Errorf("%s: %+v, %v", req1.Instance, st, err)
	}
}

// writeTar writes a tar file at path holding one file.
func writeTar(t *testing.T, path, name, content string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

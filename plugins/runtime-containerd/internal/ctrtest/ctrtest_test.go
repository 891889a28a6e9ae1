package ctrtest

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestStart brings up containerd and the registry, and checks that the
// pushed image is in the registry under its digest.
func TestStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if !strings.HasPrefix(e.Digest, "sha256:") {
		t.Fatalf("digest %q", e.Digest)
	}
	out, err := exec.CommandContext(ctx, "skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+e.Registry+"/"+ImageName+"@"+e.Digest).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != e.Digest {
		t.Fatalf("image by digest: %v: %s", err, out)
	}
}

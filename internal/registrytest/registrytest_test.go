package registrytest

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestPush pushes an artifact with custom media types and checks, with
// skopeo, that the registry serves it under the returned digest.
func TestPush(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cfg := Blob{MediaType: "application/vnd.wasm.config.v0+json", Data: []byte("{}")}
	layer := Blob{MediaType: "application/wasm", Data: []byte("\x00asm\x01\x00\x00\x00")}
	d, err := Push(ctx, r.Addr+"/t/m:1", Manifest(cfg, layer), cfg, layer)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+r.Addr+"/t/m@"+d.String()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"mediaType":"application/wasm"`) || !strings.Contains(string(out), layer.Descriptor().Digest.String()) {
		t.Fatalf("skopeo inspect: %v: %s", err, out)
	}
}

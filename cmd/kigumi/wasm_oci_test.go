package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kigumi/kigumi/internal/registrytest"
)

// TestWasmModuleFromRegistry runs a tenant whose module is an image in a
// registry (the quickstart app pushed as a runwasi wasm artifact) through
// validate, plan and apply, and checks that a spec whose image is wrong
// stops at validate with a diagnostic on the attribute at fault.
func TestWasmModuleFromRegistry(t *testing.T) {
	ctx := context.Background()
	reg, err := registrytest.Start(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	bin, err := os.ReadFile(appWasm)
	if err != nil {
		t.Fatal(err)
	}
	cfg := registrytest.Blob{MediaType: "application/vnd.oci.image.config.v1+json", Data: []byte(`{"architecture":"wasm","os":"wasip1"}`)}
	layer := registrytest.Blob{MediaType: "application/vnd.w3c.wasm.module.v1+wasm", Data: bin}
	image := reg.Addr + "/e2e/app:v1"
	dg, err := registrytest.Push(ctx, image, registrytest.Manifest(cfg, layer), cfg, layer)
	if err != nil {
		t.Fatal(err)
	}
	wrong := "sha256:" + strings.Repeat("0", 64)

	for _, tc := range []struct {
		name, image, digest string
		// want matches the validate output of a spec that is refused.
		want string
	}{
		{"wrong digest", image, wrong, `\.hcl:5,19: Error: Invalid "digest" of instance "app".*\n(.*\n)*.*has no image \S*/e2e/app:v1 with digest`},
		{"missing image", reg.Addr + "/e2e/none:v1", "", `\.hcl:4,19: Error: Invalid "image" of instance "app".*\n(.*\n)*.*has no image`},
		{"pinned", image, dg.String(), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorkspace(t, 1)
			// The loopback registry needs no block; one is set to show
			// the runtime takes the containerd runtime's settings.
			replaceIn(t, w.host, `runtime "wasm" {}`, fmt.Sprintf("runtime \"wasm\" {\n  registry %q {\n    plain_http = true\n  }\n}", reg.Addr))
			pin := ""
			if tc.digest != "" {
				pin = fmt.Sprintf("\n    digest      = %q", tc.digest)
			}
			spec := filepath.Join(w.tenants, w.names[0]+".hcl")
			replaceIn(t, spec, fmt.Sprintf("module      = %q", appWasm), fmt.Sprintf("image       = %q%s", tc.image, pin))
			if tc.want != "" {
				code, out, errOut := kigumi(t, "validate", "-c", w.host)
				if code != exitInvalid || !regexp.MustCompile(tc.want).MatchString(out+errOut) {
					t.Fatalf("validate: exit %d, want %d and %q:\n%s%s", code, exitInvalid, tc.want, out, errOut)
				}
				return
			}
			mustKigumi(t, "validate", "-c", w.host)
			if out := mustKigumi(t, "plan", "-c", w.host); !strings.Contains(out, "instances: 1 to create") {
				t.Fatalf("plan:\n%s", out)
			}
			mustKigumi(t, "apply", "-c", w.host, "--auto-approve")
			st := status(t, w.host)
			if len(st.Tenants) != 1 || st.Tenants[0].Instances[0].State != "running" {
				t.Fatalf("status %+v", st)
			}
			target := w.names[0] + "/app"
			eventually(t, "the app's greeting in its logs", func() bool {
				_, out, _ := kigumi(t, "logs", "-c", w.host, target)
				return strings.Contains(out, "Hello from "+w.names[0]+"!")
			})
			// Planned again, the pulled module changes nothing.
			if out := mustKigumi(t, "plan", "-c", w.host); !strings.Contains(out, "No changes") {
				t.Errorf("plan after apply:\n%s", out)
			}
		})
	}
}

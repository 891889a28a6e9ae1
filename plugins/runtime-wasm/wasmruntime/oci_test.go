package wasmruntime

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/internal/registrytest"
)

// Media types of the artifacts the tests push.
const (
	runwasiLayer  = "application/vnd.w3c.wasm.module.v1+wasm"
	cncfLayer     = "application/wasm"
	cncfConfig    = "application/vnd.wasm.config.v0+json"
	imageConfig   = "application/vnd.oci.image.config.v1+json"
	tarLayer      = "application/vnd.oci.image.layer.v1.tar"
	componentType = "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"
)

// startRegistry starts a registry for one test.
func startRegistry(t *testing.T) *registrytest.Registry {
	t.Helper()
	reg, err := registrytest.Start(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	return reg
}

// pushModule pushes the module file as the one layer of an artifact with
// the given media types, and returns the manifest's digest.
func pushModule(t *testing.T, ref, configType, layerType string, module []byte, extra ...registrytest.Blob) digest.Digest {
	t.Helper()
	cfg := registrytest.Blob{MediaType: configType, Data: []byte(`{"architecture":"wasm","os":"wasip1"}`)}
	layers := append([]registrytest.Blob{{MediaType: layerType, Data: module}}, extra...)
	d, err := registrytest.Push(context.Background(), ref, registrytest.Manifest(cfg, layers...), append(layers, cfg)...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ociRuntime returns a Runtime configured with its own data dir, so that
// its module store holds only what the test pulls.
func ociRuntime(t *testing.T, settings sdk.Config) (*Runtime, string) {
	t.Helper()
	dir := t.TempDir()
	r := New()
	if err := r.Configure(context.Background(), sdk.ConfigureRequest{Host: "test", Settings: settings, DataDir: dir}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return r, dir
}

// imageRequest is request for an image artifact instead of a module.
func imageRequest(t *testing.T, image, dg string) *sdk.StartRequest {
	req := request(t, "echo")
	req.Artifact = sdk.Artifact{Image: image, Digest: dg}
	return req
}

// TestOCIModule pulls modules pushed in both artifact formats, pinned or
// by tag, runs them, and checks the store: root-only, keyed by digest,
// and a tag resolved once.
func TestOCIModule(t *testing.T) {
	reg := startRegistry(t)
	echo, ticker := readFile(t, modules["echo"]), readFile(t, modules["ticker"])
	runwasi := pushModule(t, reg.Addr+"/apps/echo:v1", imageConfig, runwasiLayer, echo)
	cncf := pushModule(t, reg.Addr+"/apps/echo-cncf:v1", cncfConfig, cncfLayer, echo)

	r, dir := ociRuntime(t, nil)
	for _, tc := range []struct {
		name, image, digest, argv0 string
	}{
		{"runwasi by tag", reg.Addr + "/apps/echo:v1", "", "echo"},
		{"runwasi pinned", reg.Addr + "/apps/echo:v1", runwasi.String(), "echo"},
		{"runwasi by digest", reg.Addr + "/apps/echo@" + runwasi.String(), "", "echo"},
		{"cncf pinned", reg.Addr + "/apps/echo-cncf:v1", cncf.String(), "echo-cncf"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := imageRequest(t, tc.image, tc.digest)
			req.Args = []string{"hello"}
			if err := r.Validate(context.Background(), req); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			st, out := run(t, r, req)
			if st.State != sdk.StateExited || st.ExitCode != 0 {
				t.Fatalf("status %+v, output:\n%s", st, out)
			}
			if !strings.Contains(out, "arg: "+tc.argv0+"\narg: hello\n") {
				t.Errorf("output %q, want argv %s hello", out, tc.argv0)
			}
		})
	}

	// One blob for the module both images carry, root-only, by digest.
	blob := filepath.Join(dir, "oci", "blobs", "sha256", digest.FromBytes(echo).Encoded())
	fi, err := os.Stat(blob)
	if err != nil || fi.Mode().Perm() != 0o400 {
		t.Fatalf("blob %s: %v %v", blob, fi, err)
	}
	blobs, _ := os.ReadDir(filepath.Dir(blob))
	if len(blobs) != 1 {
		t.Errorf("store holds %d blobs, want 1", len(blobs))
	}
	if fi, err := os.Stat(filepath.Join(dir, "oci")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("store dir: %v %v", fi, err)
	}

	// The tag moves to another module: the reference keeps running what
	// it was first resolved to; the new digest, pinned, runs the new one.
	moved := pushModule(t, reg.Addr+"/apps/echo:v1", imageConfig, runwasiLayer, ticker)
	req := imageRequest(t, reg.Addr+"/apps/echo:v1", "")
	if st, out := run(t, r, req); st.ExitCode != 0 || !strings.Contains(out, "arg: echo\n") {
		t.Fatalf("moved tag ran %+v:\n%s", st, out)
	}
	req = imageRequest(t, reg.Addr+"/apps/echo:v1", moved.String())
	if err := r.Validate(context.Background(), req); err != nil {
		t.Fatalf("Validate the new digest: %v", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(blob), digest.FromBytes(ticker).Encoded())); err != nil {
		t.Errorf("the new module is not in the store: %v", err)
	}
	// The old pin still names what it named.
	req = imageRequest(t, reg.Addr+"/apps/echo:v1", runwasi.String())
	if err := r.Validate(context.Background(), req); err != nil {
		t.Errorf("Validate the old digest: %v", err)
	}

	// A record is what the tag was resolved to.
	recs, _ := os.ReadDir(filepath.Join(dir, "oci", "refs"))
	found := false
	for _, e := range recs {
		var rec ociRecord
		if json.Unmarshal(readFile(t, filepath.Join(dir, "oci", "refs", e.Name())), &rec) == nil && rec.Reference == reg.Addr+"/apps/echo:v1" {
			found = rec.Manifest == runwasi && rec.Module == digest.FromBytes(echo)
		}
	}
	if !found {
		t.Errorf("no record of the tag's first resolution among %d", len(recs))
	}

	// Without the registry, what was pulled still runs.
	reg.Close()
	req = imageRequest(t, reg.Addr+"/apps/echo-cncf:v1", cncf.String())
	if st, out := run(t, r, req); st.ExitCode != 0 || !strings.Contains(out, "arg: echo-cncf\n") {
		t.Fatalf("offline run %+v:\n%s", st, out)
	}
}

// TestOCIErrors: each bad image fails Validate and Start with a typed
// error on the spec attribute at fault, names the image rather than the
// store's files, and leaves no module in the store.
func TestOCIErrors(t *testing.T) {
	reg := startRegistry(t)
	free, err := registrytest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	echo := readFile(t, modules["echo"])
	at := func(name string) string { return reg.Addr + "/bad/" + name + ":v1" }
	good := pushModule(t, at("good"), imageConfig, runwasiLayer, echo)
	pushModule(t, at("garbage"), imageConfig, runwasiLayer, []byte("not wasm at all"))
	pushModule(t, at("tar"), imageConfig, tarLayer, []byte("a tar layer, not wasm"))
	pushModule(t, at("two"), imageConfig, runwasiLayer, tinyModule, registrytest.Blob{MediaType: cncfLayer, Data: trapModule})
	pushModule(t, at("import"), imageConfig, runwasiLayer, missingImportModule)
	pushModule(t, at("component"), imageConfig, componentType, []byte{0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00})
	pushModule(t, at("big"), imageConfig, runwasiLayer, echo)
	wrong := "sha256:" + strings.Repeat("0", 64)

	for _, tc := range []struct {
		name     string
		settings sdk.Config
		image    string
		digest   string
		code     sdk.Code
		attr     string
		msg      string
	}{
		{"wrong digest", nil, at("good"), wrong, sdk.CodeInvalid, "digest", "with digest " + wrong},
		{"pinned elsewhere", nil, reg.Addr + "/bad/good@" + good.String(), wrong, sdk.CodeInvalid, "digest", "is pinned to"},
		{"not sha256", nil, at("good"), "md5:00", sdk.CodeInvalid, "digest", "not a sha256 digest"},
		{"missing image", nil, reg.Addr + "/bad/nothing:v1", "", sdk.CodeInvalid, "image", "has no image"},
		{"missing tag", nil, reg.Addr + "/bad/good:v2", "", sdk.CodeInvalid, "image", "has no image"},
		{"unreachable registry", nil, free + "/bad/good:v1", "", sdk.CodeUnavailable, "image", "is unreachable"},
		{"layer not wasm", nil, at("garbage"), "", sdk.CodeInvalid, "image", "not a WebAssembly module"},
		{"no wasm layer", nil, at("tar"), "", sdk.CodeInvalid, "image", "has no wasm layer"},
		{"two wasm layers", nil, at("two"), "", sdk.CodeInvalid, "image", "has 2 wasm layers"},
		{"unknown import", nil, at("import"), "", sdk.CodeInvalid, "image", `"env"."foo"`},
		{"component", nil, at("component"), "", sdk.CodeInvalid, "image", "of image " + at("component")},
		{"oversized layer", sdk.Config{"max_module_size": "1MiB"}, at("big"), "", sdk.CodeInvalid, "image", "larger than 1.0 MiB (max_module_size)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, dir := ociRuntime(t, tc.settings)
			for _, call := range []string{"Validate", "Start"} {
				req := imageRequest(t, tc.image, tc.digest)
				if call == "Validate" {
					err = r.Validate(context.Background(), req)
				} else {
					var h sdk.Handle
					if h, err = r.Start(context.Background(), req); err == nil {
						r.Destroy(context.Background(), h)
					}
				}
				var se *sdk.Error
				switch {
				case err == nil:
					t.Fatalf("%s succeeded", call)
				case sdk.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.msg):
					t.Errorf("%s: %q (%s), want %s with %q", call, err, sdk.CodeOf(err), tc.code, tc.msg)
				case !errors.As(err, &se) || se.Attribute != tc.attr:
					t.Errorf("%s: %q is not on attribute %q", call, err, tc.attr)
				case strings.Contains(err.Error(), dir):
					t.Errorf("%s: %q names the store's files", call, err)
				}
				t.Log(call, err)
			}
			// Only modules that are wasm layers land in the store: the
			// oversized one is never fetched.
			blobs, _ := os.ReadDir(filepath.Join(dir, "oci", "blobs", "sha256"))
			tmp, _ := os.ReadDir(filepath.Join(dir, "oci", "tmp"))
			if tc.name == "oversized layer" && len(blobs) != 0 || len(tmp) != 0 {
				t.Errorf("store holds %v and %v", blobs, tmp)
			}
		})
	}
}

package wasmruntime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	refdocker "github.com/containerd/containerd/reference/docker"
	"github.com/containerd/containerd/remotes"
	"github.com/dustin/go-humanize"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/internal/registry"
)

// The media types of a layer that is a wasm module, as the OCI artifact
// formats of wasm define them: the CNCF TAG Runtime's wasm OCI artifact
// (application/wasm), and the layers containerd's runwasi shims run.
var wasmLayerTypes = map[string]bool{
	"application/wasm":                                              true,
	"application/vnd.w3c.wasm.module.v1+wasm":                       true,
	"application/vnd.bytecodealliance.wasm.component.layer.v0+wasm": true,
}

// The manifest media types a module's image may have.
var manifestTypes = map[string]bool{
	ocispec.MediaTypeImageManifest:                         true,
	"application/vnd.docker.distribution.manifest.v2+json": true,
}

const (
	// maxManifestSize caps the manifest read from a registry.
	maxManifestSize = 1 << 20
	// ociPullTimeout bounds one pull of a module.
	ociPullTimeout = 5 * time.Minute
)

// ociStore pulls modules that are OCI artifacts into a root-only content
// store: blobs/sha256/<hex> holds each module by its content digest, and
// refs/<hex of the reference's sha256> records what a reference was
// resolved to when it was first pulled. A tag is resolved once: later
// uses of the same reference run the module recorded, whatever the tag
// names in the registry since (as the containerd runtime runs the image
// it pulled first); a new version needs a new tag or a pinned digest.
// Once no live instance runs it and its grace has passed, prune removes
// an image's record and blob: its next use pulls it, and resolves its
// tag, again.
type ociStore struct {
	dir      string
	settings registry.Settings
	// maxSize caps a module layer, as max_module_size caps a module file.
	maxSize int64
}

// ociRecord is what a reference was resolved to.
type ociRecord struct {
	Reference string `json:"reference"`
	// Manifest is the digest of the image manifest pulled.
	Manifest digest.Digest `json:"manifest"`
	// Module is the digest of its wasm layer, the module's content.
	Module digest.Digest `json:"module"`
}

// newOCIStore creates the store's directories in dir, readable by root
// only.
func newOCIStore(dir string, settings registry.Settings, maxSize int64) (*ociStore, error) {
	for _, d := range []string{dir, filepath.Join(dir, "blobs", "sha256"), filepath.Join(dir, "refs"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("create module store: %w", err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create module store: %w", err)
	}
	return &ociStore{dir: dir, settings: settings, maxSize: maxSize}, nil
}

// blobPath is where the store keeps the blob of digest d.
func (s *ociStore) blobPath(d digest.Digest) string {
	return filepath.Join(s.dir, "blobs", "sha256", d.Encoded())
}

// recordPath is where the store records what ref was resolved to.
func (s *ociStore) recordPath(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return filepath.Join(s.dir, "refs", hex.EncodeToString(sum[:]))
}

// module returns the artifact's module as a file artifact: the store's
// blob of the image's wasm layer, with the layer's digest to verify it
// by. It pulls the image the first time its reference is used.
func (s *ociStore) module(ctx context.Context, a sdk.Artifact) (sdk.Artifact, error) {
	ref, err := registry.Reference(a)
	if err != nil {
		return sdk.Artifact{}, err
	}
	// The record's time is the image's last use, from which prune counts
	// its grace: a Validate keeps it for the Start that follows.
	if err := touch(s.recordPath(ref)); err != nil {
		return sdk.Artifact{}, fmt.Errorf("write module store: %w", err)
	}
	rec, err := s.record(ref)
	if err != nil {
		return sdk.Artifact{}, err
	}
	if rec == nil {
		if rec, err = s.pull(ctx, a, ref); err != nil {
			return sdk.Artifact{}, err
		}
	}
	if a.Digest != "" && rec.Manifest.String() != a.Digest {
		return sdk.Artifact{}, sdk.InvalidAttribute("digest", "image %s has digest %s, want %s", a.Image, rec.Manifest, a.Digest)
	}
	return sdk.Artifact{Module: s.blobPath(rec.Module), Digest: rec.Module.String()}, nil
}

// prune removes the records of images whose module no live instance
// runs and that were last used before old, then the blobs that no live
// instance runs, no record kept names and that were fetched before old
// (a pull writes its blob before its record), and the temporary files
// written more than ociPullTimeout ago, which no pull still writes. live
// holds the hex sha256 of the modules live instances run, which is their
// layer's digest. A pruned image is pulled again at its next use, its
// tag resolved again.
func (s *ociStore) prune(live map[string]bool, old time.Time) error {
	refs := filepath.Join(s.dir, "refs")
	entries, err := os.ReadDir(refs)
	if err != nil {
		return err
	}
	named := map[string]bool{}
	for _, e := range entries {
		p := filepath.Join(refs, e.Name())
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		var rec ociRecord
		b, err := os.ReadFile(p)
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		// A torn or foreign record goes, as record ignores it.
		valid := err == nil && s.recordPath(rec.Reference) == p && rec.Module.Validate() == nil
		if valid && (live[rec.Module.Encoded()] || fi.ModTime().After(old)) {
			named[rec.Module.Encoded()] = true
			continue
		}
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	blobs := filepath.Join(s.dir, "blobs", "sha256")
	if entries, err = os.ReadDir(blobs); err != nil {
		return err
	}
	for _, e := range entries {
		if live[e.Name()] || named[e.Name()] {
			continue
		}
		if err := removeBefore(filepath.Join(blobs, e.Name()), old); err != nil {
			return err
		}
	}
	tmp := filepath.Join(s.dir, "tmp")
	if entries, err = os.ReadDir(tmp); err != nil {
		return err
	}
	for _, e := range entries {
		if err := removeBefore(filepath.Join(tmp, e.Name()), time.Now().Add(-ociPullTimeout)); err != nil {
			return err
		}
	}
	return nil
}

// touch sets the times of p, if it exists, to now.
func touch(p string) error {
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// removeBefore removes the file p if it last changed before old.
func removeBefore(p string, old time.Time) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) || err == nil && fi.ModTime().After(old) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// record returns what ref was resolved to, or nil if it never was or its
// blob is gone.
func (s *ociStore) record(ref string) (*ociRecord, error) {
	b, err := os.ReadFile(s.recordPath(ref))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read module store: %w", err)
	}
	var rec ociRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.Reference != ref || rec.Module.Validate() != nil || rec.Manifest.Validate() != nil {
		return nil, nil // torn or foreign: pulled again
	}
	if _, err := os.Stat(s.blobPath(rec.Module)); err != nil {
		return nil, nil
	}
	return &rec, nil
}

// pull resolves ref, fetches its manifest and wasm layer into the store
// and records them.
func (s *ociStore) pull(ctx context.Context, a sdk.Artifact, ref string) (*ociRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, ociPullTimeout)
	defer cancel()
	resolver := s.settings.Resolver()
	name, desc, err := resolver.Resolve(ctx, ref)
	if err != nil {
		return nil, registry.PullError(a, ref, err)
	}
	if a.Digest != "" && desc.Digest.String() != a.Digest {
		return nil, sdk.InvalidAttribute("digest", "image %s has digest %s, want %s", a.Image, desc.Digest, a.Digest)
	}
	fetcher, err := resolver.Fetcher(ctx, name)
	if err != nil {
		return nil, registry.PullError(a, ref, err)
	}
	layer, err := s.wasmLayer(ctx, a, ref, fetcher, desc)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(s.blobPath(layer.Digest)); err != nil {
		if err := s.fetchBlob(ctx, a, ref, fetcher, layer); err != nil {
			return nil, err
		}
	}
	rec := &ociRecord{Reference: ref, Manifest: desc.Digest, Module: layer.Digest}
	if err := s.writeRecord(rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// wasmLayer fetches and verifies the manifest desc names, and returns the
// descriptor of its one wasm layer.
func (s *ociStore) wasmLayer(ctx context.Context, a sdk.Artifact, ref string, fetcher remotes.Fetcher, desc ocispec.Descriptor) (ocispec.Descriptor, error) {
	var none ocispec.Descriptor
	if !manifestTypes[desc.MediaType] {
		return none, sdk.InvalidAttribute("image", "image %s is a %s, not an image manifest with a wasm layer", a.Image, desc.MediaType)
	}
	if desc.Size > maxManifestSize {
		return none, sdk.InvalidAttribute("image", "image %s has a manifest of %s, more than %s", a.Image, humanize.IBytes(uint64(desc.Size)), humanize.IBytes(maxManifestSize))
	}
	rc, err := fetcher.Fetch(ctx, desc)
	if err != nil {
		return none, registry.PullError(a, ref, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, desc.Size+1))
	if err != nil {
		return none, registry.PullError(a, ref, err)
	}
	if int64(len(b)) != desc.Size || digest.FromBytes(b) != desc.Digest {
		return none, sdk.InvalidAttribute("image", "registry sent a manifest for image %s that is not %s", a.Image, desc.Digest)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return none, sdk.InvalidAttribute("image", "image %s has a malformed manifest: %v", a.Image, err)
	}
	var found []ocispec.Descriptor
	var types []string
	for _, l := range m.Layers {
		types = append(types, l.MediaType)
		if wasmLayerTypes[l.MediaType] {
			found = append(found, l)
		}
	}
	switch {
	case len(found) == 0:
		return none, sdk.InvalidAttribute("image", "image %s has no wasm layer (its layers are [%s]); a module's layer has media type application/wasm, application/vnd.w3c.wasm.module.v1+wasm or application/vnd.bytecodealliance.wasm.component.layer.v0+wasm", a.Image, strings.Join(types, ", "))
	case len(found) > 1:
		return none, sdk.InvalidAttribute("image", "image %s has %d wasm layers; it must have one", a.Image, len(found))
	}
	l := found[0]
	switch {
	case l.Digest.Algorithm() != digest.SHA256 || l.Digest.Validate() != nil:
		return none, sdk.InvalidAttribute("image", "image %s: its wasm layer's digest %q is not sha256", a.Image, l.Digest)
	case l.Size > s.maxSize:
		return none, sdk.InvalidAttribute("image", "image %s has a wasm layer of %s, larger than %s (max_module_size)", a.Image, humanize.IBytes(uint64(l.Size)), humanize.IBytes(uint64(s.maxSize)))
	case l.Size < 0:
		return none, sdk.InvalidAttribute("image", "image %s: its wasm layer has a negative size", a.Image)
	}
	return l, nil
}

// fetchBlob fetches the layer into the store: through the size cap, into
// a temporary file, then verified against the layer's digest and size and
// renamed into place.
func (s *ociStore) fetchBlob(ctx context.Context, a sdk.Artifact, ref string, fetcher remotes.Fetcher, layer ocispec.Descriptor) error {
	rc, err := fetcher.Fetch(ctx, layer)
	if err != nil {
		return registry.PullError(a, ref, err)
	}
	defer rc.Close()
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "blob-")
	if err != nil {
		return fmt.Errorf("write module store: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	dg := digest.SHA256.Digester()
	n, err := io.Copy(io.MultiWriter(tmp, dg.Hash()), io.LimitReader(rc, layer.Size+1))
	if err != nil {
		return registry.PullError(a, ref, err)
	}
	if n != layer.Size || dg.Digest() != layer.Digest {
		return sdk.InvalidAttribute("image", "registry sent a wasm layer for image %s that is not %s of %d bytes", a.Image, layer.Digest, layer.Size)
	}
	if err := tmp.Chmod(0o400); err != nil {
		return fmt.Errorf("write module store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write module store: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.blobPath(layer.Digest)); err != nil {
		return fmt.Errorf("write module store: %w", err)
	}
	return nil
}

// writeRecord records rec, atomically.
func (s *ociStore) writeRecord(rec *ociRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("write module store: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "ref-")
	if err != nil {
		return fmt.Errorf("write module store: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := tmp.Write(b); err != nil {
		return fmt.Errorf("write module store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write module store: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.recordPath(rec.Reference)); err != nil {
		return fmt.Errorf("write module store: %w", err)
	}
	return nil
}

// imageName is the last element of an image's repository, a module's
// argv[0]: "hello" for "registry.example/apps/hello:v1".
func imageName(image string) string {
	named, err := refdocker.ParseDockerRef(image)
	if err != nil {
		return image
	}
	return path.Base(refdocker.Path(named))
}

// localModule returns a as an artifact of a module file: a itself for a
// module, the pulled blob for an image.
func (r *Runtime) localModule(ctx context.Context, a sdk.Artifact) (sdk.Artifact, error) {
	if a.Image == "" {
		return a, nil
	}
	if r.oci == nil {
		return a, sdk.Errorf(sdk.CodeUnavailable, "the runtime is not configured")
	}
	// A prune may come between the store's answer and the read of its
	// blob: the blob is touched under the prune lock, which keeps it for
	// the grace period, or found gone, and the image pulled again.
	for try := 0; ; try++ {
		local, err := r.oci.module(ctx, a)
		if err != nil {
			return local, err
		}
		unlock, err := r.lockPrune(unix.LOCK_SH)
		if err != nil {
			return local, err
		}
		now := time.Now()
		err = os.Chtimes(local.Module, now, now)
		unlock()
		switch {
		case err == nil:
			return local, nil
		case !errors.Is(err, os.ErrNotExist) || try == 2:
			return local, fmt.Errorf("read module store: %w", err)
		}
	}
}

// imageError makes err, about the module file local that image artifact a
// was pulled into, an error about a: on its image attribute, naming the
// image rather than the store's file.
func imageError(a, local sdk.Artifact, err error) error {
	var se *sdk.Error
	if a.Image == "" || !errors.As(err, &se) || (se.Attribute != "module" && se.Attribute != "digest") {
		return err
	}
	out := *se
	out.Attribute = "image"
	out.Message = strings.ReplaceAll(se.Message, local.Module, fmt.Sprintf("of image %s (layer %s)", a.Image, local.Digest))
	return &out
}

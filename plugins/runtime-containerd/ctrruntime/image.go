package ctrruntime

import (
	"context"
	"errors"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/internal/registry"
)

// pullTimeout bounds one image pull.
const pullTimeout = 5 * time.Minute

// pull pulls and unpacks the artifact's image, or finds it pulled
// already, and checks its digest. A pull that fails leaves no image
// behind, and so no content once containerd collects it.
func (r *Runtime) pull(ctx context.Context, c *containerd.Client, a sdk.Artifact) (containerd.Image, error) {
	ref, err := registry.Reference(a)
	if err != nil {
		return nil, err
	}
	img, gerr := c.GetImage(ctx, ref)
	known := gerr == nil
	if known {
		if ok, err := img.IsUnpacked(ctx, containerd.DefaultSnapshotter); err == nil && ok {
			return img, checkImageDigest(a, img)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	img, err = c.Pull(pctx, ref, containerd.WithPullUnpack, containerd.WithResolver(r.registry.Resolver()))
	if err == nil {
		err = checkImageDigest(a, img)
	} else {
		err = registry.PullError(a, ref, err)
	}
	if err != nil {
		if known {
			return nil, err
		}
		if derr := c.ImageService().Delete(ctx, ref, images.SynchronousDelete()); derr != nil && !errdefs.IsNotFound(derr) {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	return img, err
}

// checkImageDigest checks that a pulled image is the one its digest pins,
// and that its target is an image manifest or index at all.
func checkImageDigest(a sdk.Artifact, img containerd.Image) error {
	switch t := img.Target(); {
	case !images.IsManifestType(t.MediaType) && !images.IsIndexType(t.MediaType):
		return sdk.InvalidAttribute(attrOfDigest(a), "%s is a %s blob, not an image manifest", img.Name(), t.MediaType)
	case a.Digest != "" && t.Digest.String() != a.Digest:
		return sdk.InvalidAttribute("digest", "image %s has digest %s, want %s", a.Image, t.Digest, a.Digest)
	}
	return nil
}

// attrOfDigest is the attribute that pins an artifact's image: digest
// when it is set, the image reference otherwise.
func attrOfDigest(a sdk.Artifact) string {
	if a.Digest != "" {
		return "digest"
	}
	return "image"
}

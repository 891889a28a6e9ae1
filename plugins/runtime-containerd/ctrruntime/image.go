package ctrruntime

import (
	"context"
	"time"

	"github.com/containerd/containerd"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/internal/registry"
)

// pullTimeout bounds one image pull.
const pullTimeout = 5 * time.Minute

// pull pulls and unpacks the artifact's image, or finds it pulled
// already, and checks its digest.
func (r *Runtime) pull(ctx context.Context, c *containerd.Client, a sdk.Artifact) (containerd.Image, error) {
	ref, err := registry.Reference(a)
	if err != nil {
		return nil, err
	}
	if img, err := c.GetImage(ctx, ref); err == nil {
		if ok, err := img.IsUnpacked(ctx, containerd.DefaultSnapshotter); err == nil && ok {
			return img, checkImageDigest(a, img)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, pullTimeout)
	defer cancel()
	img, err := c.Pull(pctx, ref, containerd.WithPullUnpack, containerd.WithResolver(r.registry.Resolver()))
	if err != nil {
		return nil, registry.PullError(a, ref, err)
	}
	return img, checkImageDigest(a, img)
}

// checkImageDigest checks that a pulled image is the one its digest pins.
func checkImageDigest(a sdk.Artifact, img containerd.Image) error {
	if a.Digest == "" {
		return nil
	}
	if got := img.Target().Digest.String(); got != a.Digest {
		return sdk.InvalidAttribute("digest", "image %s has digest %s, want %s", a.Image, got, a.Digest)
	}
	return nil
}

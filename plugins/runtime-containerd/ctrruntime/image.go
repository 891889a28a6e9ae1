package ctrruntime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/leases"
	"github.com/opencontainers/go-digest"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/internal/registry"
)

// pullTimeout bounds one image pull.
const pullTimeout = 5 * time.Minute

// image returns the artifact's image, unpacked: imported from its archive
// or pulled from its registry.
func (r *Runtime) image(ctx context.Context, c *containerd.Client, a sdk.Artifact) (containerd.Image, error) {
	if a.Archive != "" {
		return importArchive(ctx, c, a)
	}
	return r.pull(ctx, c, a)
}

// archiveRef is the name of the image an archive imports, by its
// manifest digest: the same archive imports to the same image, and
// instances of it share it.
func archiveRef(d digest.Digest) string { return "kigumi.archive/image@" + d.String() }

// importArchive imports the artifact's OCI image-layout tar, or finds it
// imported already when its digest pins it, and unpacks it. The archive
// must hold exactly one image; a failed import leaves no image behind.
func importArchive(ctx context.Context, c *containerd.Client, a sdk.Artifact) (containerd.Image, error) {
	if a.Digest != "" {
		if img, err := c.GetImage(ctx, archiveRef(digest.Digest(a.Digest))); err == nil {
			if ok, err := img.IsUnpacked(ctx, containerd.DefaultSnapshotter); err == nil && ok {
				return img, nil
			}
		}
	}
	f, err := os.OpenFile(a.Archive, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, sdk.InvalidAttribute("archive", "cannot open %s: %v", a.Archive, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, sdk.InvalidAttribute("archive", "%s is not a regular file", a.Archive)
	}
	// The import's content is held by a lease of its own, removed with a
	// collection at the end: content of a failed import does not stay.
	l, err := c.LeasesService().Create(ctx, leases.WithRandomID(), leases.WithExpiration(pullTimeout))
	if err != nil {
		return nil, fmt.Errorf("containerd at %s: lease: %w", c.Conn().Target(), err)
	}
	defer c.LeasesService().Delete(context.WithoutCancel(ctx), l, leases.SynchronousDelete) //nolint:errcheck // expires anyway
	ctx = leases.WithLease(ctx, l.ID)
	// Names from the archive's annotations are not kept: the image is
	// known by its digest alone.
	t0 := time.Now()
	imgs, err := c.Import(ctx, f, containerd.WithImageRefTranslator(func(string) string { return "" }),
		containerd.WithDigestRef(archiveRef), containerd.WithSkipMissing())
	if err != nil {
		return nil, sdk.InvalidAttribute("archive", "%s is not an OCI image archive: %v", a.Archive, err)
	}
	var ours []images.Image
	for _, i := range imgs {
		if i.Name == archiveRef(i.Target.Digest) {
			ours = append(ours, i)
		}
	}
	switch {
	case len(ours) != 1:
		err = sdk.InvalidAttribute("archive", "%s holds %d images for this platform; an archive must hold one", a.Archive, len(ours))
	case a.Digest != "" && ours[0].Target.Digest.String() != a.Digest:
		err = sdk.InvalidAttribute("digest", "archive %s holds image %s, not %s", a.Archive, ours[0].Target.Digest, a.Digest)
	}
	if err == nil {
		img := containerd.NewImage(c, ours[0])
		if err = checkImageDigest(a, img); err == nil {
			if err = img.Unpack(ctx, containerd.DefaultSnapshotter); err == nil {
				return img, nil
			}
			err = sdk.InvalidAttribute("archive", "unpack the image of %s: %v", a.Archive, err)
		}
	}
	// Only what this import created goes: an image of the same archive
	// that an instance runs already stays.
	for _, i := range imgs {
		if i.CreatedAt.Before(t0) {
			continue
		}
		if derr := c.ImageService().Delete(ctx, i.Name, images.SynchronousDelete()); derr != nil && !errdefs.IsNotFound(derr) {
			err = errors.Join(err, derr)
		}
	}
	return nil, err
}

// pull pulls and unpacks the artifact's image, or finds it pulled
// already, and checks its digest. It reports its progress over the
// image's layers (sdk.ReportProgress). A pull that fails leaves no image
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
	// The pull's progress is reported until it ends, and never after.
	prog, stop := newPullProgress(ref, c.ContentStore()), make(chan struct{})
	var reporting sync.WaitGroup
	reporting.Add(1)
	go func() {
		defer reporting.Done()
		prog.run(pctx, stop)
	}()
	img, err = c.Pull(pctx, ref, containerd.WithPullUnpack, containerd.WithResolver(r.registry.Resolver()),
		containerd.WithImageHandler(prog.handler()))
	close(stop)
	reporting.Wait()
	if err == nil {
		prog.report(pctx, true)
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
		return sdk.InvalidAttribute("digest", "image %s has digest %s, want %s", a.Image+a.Archive, t.Digest, a.Digest)
	}
	return nil
}

// attrOfDigest is the attribute that pins an artifact's image: digest
// when it is set, the image reference otherwise.
func attrOfDigest(a sdk.Artifact) string {
	switch {
	case a.Digest != "":
		return "digest"
	case a.Archive != "":
		return "archive"
	}
	return "image"
}

package ctrruntime

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	refdocker "github.com/containerd/containerd/reference/docker"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/opencontainers/go-digest"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// pullTimeout bounds one image pull.
const pullTimeout = 5 * time.Minute

// imageRef returns the full reference to pull an artifact by: the image
// normalized (docker.io/library/... for short names), pinned by digest
// when the artifact has one.
func imageRef(a sdk.Artifact) (string, error) {
	named, err := refdocker.ParseDockerRef(a.Image)
	if err != nil {
		return "", sdk.InvalidAttribute("image", "%q is not an image reference: %v", a.Image, err)
	}
	if a.Digest == "" {
		return named.String(), nil
	}
	dg, err := digest.Parse(a.Digest)
	if err != nil || dg.Algorithm() != digest.SHA256 {
		return "", sdk.InvalidAttribute("digest", "%q is not a sha256 digest", a.Digest)
	}
	if c, ok := named.(refdocker.Canonical); ok {
		if c.Digest() != dg {
			return "", sdk.InvalidAttribute("digest", "image %s is pinned to %s, not %s", a.Image, c.Digest(), dg)
		}
		return c.String(), nil
	}
	pinned, err := refdocker.WithDigest(refdocker.TrimNamed(named), dg)
	if err != nil {
		return "", sdk.InvalidAttribute("digest", "%v", err)
	}
	return pinned.String(), nil
}

// resolver resolves references with the registry host settings: plain
// HTTP for loopback hosts and those that ask for it.
func (r *Runtime) resolver() docker.RegistryHosts {
	return func(host string) ([]docker.RegistryHost, error) {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
		tr.ResponseHeaderTimeout = 30 * time.Second
		if r.registry.skipVerify[host] {
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for by the host spec
		}
		opts := []docker.RegistryOpt{docker.WithClient(&http.Client{Transport: tr})}
		if r.registry.plainHTTP[host] {
			opts = append(opts, docker.WithPlainHTTP(docker.MatchAllHosts))
		} else {
			opts = append(opts, docker.WithPlainHTTP(docker.MatchLocalhost))
		}
		return docker.ConfigureDefaultRegistries(opts...)(host)
	}
}

// pull pulls and unpacks the artifact's image, or finds it pulled
// already, and checks its digest.
func (r *Runtime) pull(ctx context.Context, c *containerd.Client, a sdk.Artifact) (containerd.Image, error) {
	ref, err := imageRef(a)
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
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: r.resolver()})
	img, err := c.Pull(pctx, ref, containerd.WithPullUnpack, containerd.WithResolver(resolver))
	if err != nil {
		return nil, pullError(a, ref, err)
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

// pullError types a failed pull: an image or digest the registry does
// not have is the spec's fault, an unreachable registry is not.
func pullError(a sdk.Artifact, ref string, err error) error {
	host := strings.SplitN(ref, "/", 2)[0]
	var netErr net.Error
	var opErr *net.OpError
	switch {
	case errdefs.IsNotFound(err) && a.Digest != "":
		return &sdk.Error{Code: sdk.CodeInvalid, Attribute: "digest", Message: fmt.Sprintf("registry %s has no image %s with digest %s", host, a.Image, a.Digest), Err: err}
	case errdefs.IsNotFound(err):
		return &sdk.Error{Code: sdk.CodeInvalid, Attribute: "image", Message: fmt.Sprintf("registry %s has no image %s", host, a.Image), Err: err}
	case errors.As(err, &opErr), errors.As(err, &netErr):
		return &sdk.Error{Code: sdk.CodeUnavailable, Attribute: "image", Message: fmt.Sprintf("registry %s is unreachable: %v", host, err), Err: err}
	case errdefs.IsFailedPrecondition(err) || strings.Contains(err.Error(), "digest"):
		return &sdk.Error{Code: sdk.CodeInvalid, Attribute: "digest", Message: fmt.Sprintf("image %s: %v", ref, err), Err: err}
	}
	return &sdk.Error{Code: sdk.CodeUnavailable, Attribute: "image", Message: fmt.Sprintf("pull %s: %v", ref, err), Err: err}
}

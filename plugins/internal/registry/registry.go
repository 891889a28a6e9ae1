// Package registry holds what every runtime that pulls from OCI registries
// shares: the host's `registry "HOST" { ... }` settings blocks, the
// resolver built from them on containerd's remotes/docker, the reference
// an artifact is pulled by, and the typed errors of a failed pull.
package registry

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/containerd/containerd/errdefs"
	refdocker "github.com/containerd/containerd/reference/docker"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/opencontainers/go-digest"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// Timeouts of one connection to a registry.
const (
	dialTimeout   = 10 * time.Second
	headerTimeout = 30 * time.Second
)

// Block is the schema of the registry blocks in a runtime's host settings.
var Block = sdk.Block{
	Name: "registry", Nesting: sdk.NestingMap,
	Description: `settings of one registry host, such as registry "127.0.0.1:5000" { plain_http = true }`,
	Schema: sdk.Schema{Attributes: []sdk.Attribute{
		{Name: "plain_http", Type: sdk.TypeBool, Description: "talk plain HTTP to it (loopback hosts always may)"},
		{Name: "skip_verify", Type: sdk.TypeBool, Description: "accept its TLS certificate unverified"},
	}},
}

// Host is the settings of one registry host.
type Host struct {
	// PlainHTTP lets the host be reached over plain HTTP.
	PlainHTTP bool
	// SkipVerify accepts the host's TLS certificate unverified.
	SkipVerify bool
}

// Settings are the registry settings of a host, by registry host
// ("host:port"). The zero value has none: TLS everywhere but on loopback.
type Settings struct {
	hosts map[string]Host
}

// Parse decodes the value of the registry blocks (nil when there are none).
// Refusals name the attribute, such as registry["r:5000"].plain_http.
func Parse(v any) (Settings, error) {
	s := Settings{hosts: map[string]Host{}}
	if v == nil {
		return s, nil
	}
	blocks, ok := v.(map[string]sdk.Config)
	if !ok {
		return s, sdk.InvalidAttribute("registry", "must be labeled blocks")
	}
	for host, c := range blocks {
		if host == "" {
			return s, sdk.InvalidAttribute("registry", "a registry block needs a host label")
		}
		var h Host
		for k, v := range c {
			attr := fmt.Sprintf("registry[%q].%s", host, k)
			b, ok := v.(bool)
			if !ok {
				return s, sdk.InvalidAttribute(attr, "must be a bool")
			}
			switch k {
			case "plain_http":
				h.PlainHTTP = b
			case "skip_verify":
				h.SkipVerify = b
			default:
				return s, sdk.InvalidAttribute(attr, "a registry block has no setting %q", k)
			}
		}
		s.hosts[host] = h
	}
	return s, nil
}

// Host returns the settings of host, the zero Host without a block.
func (s Settings) Host(host string) Host { return s.hosts[host] }

// Hosts returns the registry hosts to resolve references with: plain HTTP
// for loopback hosts and those that ask for it, bounded dial and header
// timeouts, and unverified TLS only where a block asks for it.
func (s Settings) Hosts() docker.RegistryHosts {
	return func(host string) ([]docker.RegistryHost, error) {
		h := s.hosts[host]
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DialContext = (&net.Dialer{Timeout: dialTimeout}).DialContext
		tr.ResponseHeaderTimeout = headerTimeout
		if h.SkipVerify {
			tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for by the host spec
		}
		opts := []docker.RegistryOpt{docker.WithClient(&http.Client{Transport: tr})}
		if h.PlainHTTP {
			opts = append(opts, docker.WithPlainHTTP(docker.MatchAllHosts))
		} else {
			opts = append(opts, docker.WithPlainHTTP(docker.MatchLocalhost))
		}
		return docker.ConfigureDefaultRegistries(opts...)(host)
	}
}

// Resolver returns a resolver of references with these settings.
func (s Settings) Resolver() remotes.Resolver {
	return docker.NewResolver(docker.ResolverOptions{Hosts: s.Hosts()})
}

// Reference returns the full reference to pull an artifact's image by:
// normalized (docker.io/library/... for short names), and pinned by
// digest when the artifact has one.
func Reference(a sdk.Artifact) (string, error) {
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

// PullError types a failed pull of ref, the reference of artifact a: an
// image or digest the registry does not have is the spec's fault
// (CodeInvalid), an unreachable registry is not (CodeUnavailable).
func PullError(a sdk.Artifact, ref string, err error) error {
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

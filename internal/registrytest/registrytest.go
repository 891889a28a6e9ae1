// Package registrytest runs what tests of registry pulls run against: a
// private OCI registry (Debian's docker-registry on a free loopback port),
// and pushes artifacts to it with containerd's remotes pusher, so that a
// test can build manifests with any media types.
package registrytest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Registry is a running docker-registry.
type Registry struct {
	// Addr is its host:port on 127.0.0.1.
	Addr string
	dir  string
	cmd  *exec.Cmd
}

const config = `version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
http:
  addr: %s
`

// Start starts a registry storing in dir, and waits until it answers.
func Start(ctx context.Context, dir string) (*Registry, error) {
	addr, err := FreePort()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "registry.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(config, filepath.Join(dir, "registry"), addr)), 0o600); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command("docker-registry", "serve", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, so that a signal to the test's group does not
	// end it before Close cleans up. No Pdeathsig: it fires when the OS
	// thread that started the registry exits, which Go may do at any time
	// (a goroutine ending locked to its thread), mid-test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start docker-registry: %w", err)
	}
	r := &Registry{Addr: addr, dir: dir, cmd: cmd}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			return r, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.Close()
			b, _ := os.ReadFile(log.Name())
			return nil, fmt.Errorf("docker-registry did not start: %w: %s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Close stops the registry; its storage stays in the directory.
func (r *Registry) Close() {
	if r.cmd != nil {
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// FreePort returns a loopback address with a port nothing listens on.
func FreePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Blob is content to push, with its media type.
type Blob struct {
	MediaType string
	Data      []byte
}

// Descriptor returns b's descriptor.
func (b Blob) Descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: b.MediaType, Digest: digest.FromBytes(b.Data), Size: int64(len(b.Data))}
}

// Manifest returns an OCI image manifest of config and layers, and its
// blob.
func Manifest(config Blob, layers ...Blob) Blob {
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config.Descriptor(),
		Layers:    []ocispec.Descriptor{},
	}
	for _, l := range layers {
		m.Layers = append(m.Layers, l.Descriptor())
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // a manifest always marshals
	}
	return Blob{MediaType: ocispec.MediaTypeImageManifest, Data: b}
}

// Push pushes blobs, then manifest (whose blobs they are) as ref
// ("host:port/name:tag") over plain HTTP, and returns the manifest's
// digest. A manifest may name blobs that are not pushed, to make one the
// registry lacks.
func Push(ctx context.Context, ref string, manifest Blob, blobs ...Blob) (digest.Digest, error) {
	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts))})
	pusher, err := resolver.Pusher(ctx, ref)
	if err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	for _, b := range append(blobs, manifest) {
		desc := b.Descriptor()
		w, err := pusher.Push(ctx, desc)
		if errdefs.IsAlreadyExists(err) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("push %s blob %s: %w", ref, desc.Digest, err)
		}
		if _, err := w.Write(b.Data); err != nil {
			w.Close()
			return "", fmt.Errorf("push %s blob %s: %w", ref, desc.Digest, err)
		}
		if err := w.Commit(ctx, desc.Size, desc.Digest); err != nil && !errdefs.IsAlreadyExists(err) {
			w.Close()
			return "", fmt.Errorf("push %s blob %s: %w", ref, desc.Digest, err)
		}
		w.Close()
	}
	return manifest.Descriptor().Digest, nil
}

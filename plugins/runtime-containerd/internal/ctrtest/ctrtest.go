// Package ctrtest starts what the containerd runtime's tests run against:
// a private containerd (its own root, state dir, socket and config) and a
// private OCI registry (Debian's docker-registry on a free loopback port),
// and pushes the test image, built from Debian packages by image/build.sh.
package ctrtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/internal/registrytest"
)

// ImageName is the repository the test image is pushed to.
const ImageName = "kigumi/busybox"

// Env is a running containerd and registry with the test image pushed.
type Env struct {
	// Dir holds everything of the environment; Close removes it.
	Dir string
	// Address is containerd's socket.
	Address string
	// Registry is the registry's host:port on 127.0.0.1.
	Registry string
	// Image is the test image's reference, and Digest its manifest's.
	Image  string
	Digest string

	containerd *exec.Cmd
	registry   *registrytest.Registry
}

// Start starts containerd and the registry in a new directory below
// parent, builds the test image and pushes it. On error it stops what it
// started.
func Start(ctx context.Context, parent string) (_ *Env, err error) {
	dir, err := os.MkdirTemp(parent, "ctrtest-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	e := &Env{Dir: dir, Address: filepath.Join(dir, "ctd.sock")}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if err := e.startContainerd(ctx); err != nil {
		return nil, err
	}
	if e.registry, err = registrytest.Start(ctx, dir); err != nil {
		return nil, err
	}
	e.Registry = e.registry.Addr
	e.Image = e.Registry + "/" + ImageName + ":1"
	if err := BuildImage(ctx, filepath.Join(dir, "layout"), "1", e.Image); err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, "skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+e.Image).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("skopeo inspect %s: %w: %s", e.Image, err, out)
	}
	e.Digest = strings.TrimSpace(string(out))
	return e, nil
}

// BuildImage runs image/build.sh: it builds the test image into the OCI
// layout dir under tag and, with ref, pushes it there.
func BuildImage(ctx context.Context, layout, tag, ref string) error {
	args := []string{ScriptPath(), layout, tag}
	if ref != "" {
		args = append(args, ref)
	}
	out, err := exec.CommandContext(ctx, "bash", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("build image: %w: %s", err, out)
	}
	return nil
}

// ScriptPath is the absolute path of image/build.sh.
func ScriptPath() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "image", "build.sh")
}

const containerdConfig = `version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %[3]q

[ttrpc]
  address = "%[3]s.ttrpc"

[debug]
  address = ""
  level = "warn"

[metrics]
  address = ""
`

func (e *Env) startContainerd(ctx context.Context) error {
	cfg := filepath.Join(e.Dir, "containerd.toml")
	body := fmt.Sprintf(containerdConfig, filepath.Join(e.Dir, "root"), filepath.Join(e.Dir, "state"), e.Address)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		return err
	}
	log, err := os.Create(filepath.Join(e.Dir, "containerd.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command("containerd", "--config", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, so that a signal to the test's group does not
	// end it before Close cleans up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	e.containerd = cmd
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := containerd.New(e.Address, containerd.WithTimeout(time.Second))
		if err == nil {
			_, err = c.Version(ctx)
			c.Close()
			if err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			return fmt.Errorf("containerd did not start: %w: %s", err, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StopContainerd stops containerd; the containers' shims go on.
func (e *Env) StopContainerd() error {
	if e.containerd == nil {
		return nil
	}
	_ = e.containerd.Process.Signal(syscall.SIGTERM)
	_ = e.containerd.Wait()
	e.containerd = nil
	return nil
}

// StartContainerd starts containerd again after StopContainerd, on the
// same root, state dir and socket.
func (e *Env) StartContainerd(ctx context.Context) error {
	return e.startContainerd(ctx)
}

// Close deletes every container and task left in containerd, stops
// containerd and the registry, unmounts what is left below Dir and removes
// Dir.
func (e *Env) Close() {
	if e.containerd != nil {
		e.cleanContainerd()
	}
	_ = e.StopContainerd()
	if e.registry != nil {
		e.registry.Close()
	}
	unmountBelow(e.Dir)
	_ = os.RemoveAll(e.Dir)
}

func (e *Env) cleanContainerd() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := containerd.New(e.Address)
	if err != nil {
		return
	}
	defer c.Close()
	nss, _ := c.NamespaceService().List(ctx)
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		cs, _ := c.Containers(nctx)
		for _, ctr := range cs {
			if t, err := ctr.Task(nctx, nil); err == nil {
				_, _ = t.Delete(nctx, containerd.WithProcessKill)
			}
			_ = ctr.Delete(nctx, containerd.WithSnapshotCleanup)
		}
	}
}

// unmountBelow lazily unmounts every mount below dir, deepest first.
func unmountBelow(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range bytes.Split(b, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = unix.Unmount(points[i], unix.MNT_DETACH)
	}
}

package tenant

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// envHelper makes the test binary a tenant's process that builds a tree on
// fd 3 (see TestMain).
const envHelper = "KIGUMI_TENANT_TEST_DEEP"

func TestMain(m *testing.M) {
	if v := os.Getenv(envFlood); v != "" {
		os.Exit(flood(v))
	}
	if v := os.Getenv(envHelper); v != "" {
		depth, _ := strconv.Atoi(v)
		if err := deepTree(3, depth, os.Getenv("KIGUMI_TENANT_TEST_OUTSIDE")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// buildAsUser runs the test binary as uid (a tenant's process: no
// supplementary groups) to build a deep tree in dir.
func buildAsUser(t *testing.T, uid uint32, dir string, depth int, outside string) {
	t.Helper()
	// The tenant could not reach dir by its path: it gets an fd.
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = []string{envHelper + "=" + strconv.Itoa(depth), "KIGUMI_TENANT_TEST_OUTSIDE=" + outside}
	cmd.Dir = "/"
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the tenant builds its tree: %v\n%s", err, out)
	}
}

// deepTree builds a chain of depth directories named "d" below the
// directory fd, relative to fds (the path grows past PATH_MAX), each level
// mode 000 once its child exists, with a symlink to outside every 1,000
// levels. It closes fd.
func deepTree(fd, depth int, outside string) error {
	for i := range depth {
		if i%1000 == 0 {
			if err := unix.Symlinkat(outside, fd, "out"); err != nil {
				return fmt.Errorf("level %d: %w", i, err)
			}
		}
		if err := unix.Mkdirat(fd, "d", 0o700); err != nil {
			return fmt.Errorf("level %d: %w", i, err)
		}
		next, err := unix.Openat(fd, "d", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("level %d: %w", i, err)
		}
		if i > 0 {
			if err := unix.Fchmod(fd, 0); err != nil {
				return fmt.Errorf("level %d: %w", i, err)
			}
		}
		unix.Close(fd)
		fd = next
	}
	return unix.Close(fd)
}

// TestRemoveDeepHome removes a tenant whose user filled its home with a
// 100,000-level tree (one fd per level would exceed any fd limit).
func TestRemoveDeepHome(t *testing.T) {
	const depth = 100_000
	m := newManager(t)
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	uid, err := FreeUID(300000+randInt(t, 1e9), nil)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := FreeSubIDs(2e9+randInt(t, 30000)*65536, 65536, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := Spec{Tenant: "td" + hex.EncodeToString(b), UID: uid, SubIDStart: sub, SubIDCount: 65536, Home: filepath.Join(dir, "home")}
	outside := filepath.Join(dir, "outside")
	if err := os.WriteFile(outside, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := m.Remove(context.Background(), s.Tenant, s.Home); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if _, err := m.Ensure(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	buildAsUser(t, s.UID, s.Home, depth, outside)
	t.Logf("the tenant built %d levels in %v", depth, time.Since(start))

	start = time.Now()
	if err := m.Remove(context.Background(), s.Tenant, s.Home); err != nil {
		t.Fatal(err)
	}
	t.Logf("removed in %v", time.Since(start))
	assertGone(t, m, s)
	if data, err := os.ReadFile(outside); err != nil || string(data) != "keep me" {
		t.Errorf("outside the home: %q, %v; want it intact", data, err)
	}
}

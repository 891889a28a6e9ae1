package statefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// writeTree writes files (path to content; "->target" makes a symlink, a
// trailing "/" a directory) below dir, owned by nobody.
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasSuffix(p, "/"):
			err = os.MkdirAll(full, 0o750)
		case strings.HasPrefix(content, "->"):
			err = os.Symlink(strings.TrimPrefix(content, "->"), full)
		default:
			err = os.WriteFile(full, []byte(content), 0o640)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(full, int(nobody.UID), int(nobody.GID)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestUsage(t *testing.T) {
	impls(t, func(t *testing.T, s sdk.StateFS) {
		ctx := context.Background()
		dir := filepath.Join(t.TempDir(), "state")
		h := provision(t, s, dir)
		u, err := s.Usage(ctx, h)
		if want := (sdk.Usage{BytesLimit: 1 << 20, InodesLimit: 256}); err != nil || u != want {
			t.Fatalf("empty Usage = %+v, %v; want %+v", u, err, want)
		}
		writeTree(t, dir, map[string]string{"a": "12345", "d/b": "678", "d/e/": "", "l": "->a"})
		u, err = s.Usage(ctx, h)
		// Files and the symlink by their size, the two directories a
		// block each.
		if want := (sdk.Usage{Bytes: 5 + 3 + 1 + 2*4096, Inodes: 5, BytesLimit: 1 << 20, InodesLimit: 256}); err != nil || u != want {
			t.Errorf("Usage = %+v, %v; want %+v", u, err, want)
		}
		req := provisionReq(filepath.Join(filepath.Dir(dir), "other"))
		req.InodeLimit = 10
		h2, err := s.Provision(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if u, err := s.Usage(ctx, h2); err != nil || u.InodesLimit != 10 {
			t.Errorf("Usage with an inode limit = %+v, %v; want limit 10", u, err)
		}
		req.InodeLimit = -1
		var e *sdk.Error
		if _, err := s.Provision(ctx, req); !errors.As(err, &e) || e.Code != sdk.CodeInvalid || e.Attribute != "inode_limit" {
			t.Errorf("Provision with a negative inode limit = %v, want invalid inode_limit", err)
		}
	})
}

func TestCheckpointRollback(t *testing.T) {
	impls(t, func(t *testing.T, s sdk.StateFS) {
		ctx := context.Background()
		dir := filepath.Join(t.TempDir(), "state")
		h := provision(t, s, dir)
		writeTree(t, dir, map[string]string{"counter": "1", "d/deep/file": "x", "empty/": "", "escape": "->/etc/passwd"})
		if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(filepath.Join(dir, "pipe"), int(nobody.UID), int(nobody.GID)); err != nil {
			t.Fatal(err)
		}
		before := hashOf(t, s, h)
		one, err := s.Checkpoint(ctx, h, "one")
		if err != nil {
			t.Fatal(err)
		}
		if one.Name != "one" || !bytes.Equal(one.Root, before) || one.CreatedAt.IsZero() {
			t.Errorf("Checkpoint = %+v, want name one and root %x", one, before)
		}
		// The tenant changes its state, then a second checkpoint.
		writeTree(t, dir, map[string]string{"counter2": "2", "d/deep/new": "y"})
		if err := os.Remove(filepath.Join(dir, "empty")); err != nil {
			t.Fatal(err)
		}
		after := hashOf(t, s, h)
		two, err := s.Checkpoint(ctx, h, "two.b_c-d")
		if err != nil || !bytes.Equal(two.Root, after) {
			t.Fatalf("second Checkpoint = %+v, %v", two, err)
		}
		list, err := s.Checkpoints(ctx, h)
		if err != nil || len(list) != 2 || list[0].Name != "one" || list[1].Name != "two.b_c-d" || !bytes.Equal(list[0].Root, before) {
			t.Errorf("Checkpoints = %+v, %v; want one then two", list, err)
		}

		if err := s.Rollback(ctx, h, "one"); err != nil {
			t.Fatal(err)
		}
		if got := hashOf(t, s, h); !bytes.Equal(got, before) {
			t.Errorf("hash after rollback %x, want %x", got, before)
		}
		for _, p := range []string{".", "counter", "d/deep/file", "escape", "pipe"} {
			fi, err := os.Lstat(filepath.Join(dir, p))
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != nobody.UID {
				t.Errorf("%s is owned by %d after rollback, want %d", p, st.Uid, nobody.UID)
			}
		}
		if fi, _ := os.Stat(filepath.Join(dir, "counter")); fi.Mode().Perm() != 0o640 {
			t.Errorf("counter has mode %v after rollback, want 0640", fi.Mode())
		}
		if target, err := os.Readlink(filepath.Join(dir, "escape")); err != nil || target != "/etc/passwd" {
			t.Errorf("escape is %q, %v after rollback; want the symlink kept as a symlink", target, err)
		}
		// Rolling forward works too, and the checkpoints are kept.
		if err := s.Rollback(ctx, h, "two.b_c-d"); err != nil {
			t.Fatal(err)
		}
		if got := hashOf(t, s, h); !bytes.Equal(got, after) {
			t.Errorf("hash after rollback to two %x, want %x", got, after)
		}
		if list, _ := s.Checkpoints(ctx, h); len(list) != 2 {
			t.Errorf("checkpoints after rollbacks: %+v", list)
		}

		if err := s.Deprovision(ctx, h); err != nil {
			t.Fatal(err)
		}
		cps := filepath.Join(filepath.Dir(dir), ".checkpoints", "state")
		if _, err := os.Lstat(cps); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("checkpoints after Deprovision: %v, want them gone", err)
		}
	})
}

func TestCheckpointErrors(t *testing.T) {
	impls(t, func(t *testing.T, s sdk.StateFS) {
		ctx := context.Background()
		dir := filepath.Join(t.TempDir(), "state")
		h := provision(t, s, dir)
		if _, err := s.Checkpoint(ctx, h, "taken"); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			op   func() error
			code sdk.Code
			attr string
		}{
			{"taken", func() error { _, err := s.Checkpoint(ctx, h, "taken"); return err }, sdk.CodeInvalid, "name"},
			{"empty", func() error { _, err := s.Checkpoint(ctx, h, ""); return err }, sdk.CodeInvalid, "name"},
			{"hidden", func() error { _, err := s.Checkpoint(ctx, h, ".new-x"); return err }, sdk.CodeInvalid, "name"},
			{"dotdot", func() error { _, err := s.Checkpoint(ctx, h, ".."); return err }, sdk.CodeInvalid, "name"},
			{"slash", func() error { _, err := s.Checkpoint(ctx, h, "a/b"); return err }, sdk.CodeInvalid, "name"},
			{"too-long", func() error { _, err := s.Checkpoint(ctx, h, strings.Repeat("a", 65)); return err }, sdk.CodeInvalid, "name"},
			{"rollback-unknown", func() error { return s.Rollback(ctx, h, "never") }, sdk.CodeNotFound, ""},
			{"rollback-escape", func() error { return s.Rollback(ctx, h, "../state") }, sdk.CodeInvalid, "name"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				var e *sdk.Error
				if err := tt.op(); !errors.As(err, &e) || e.Code != tt.code || e.Attribute != tt.attr {
					t.Errorf("got %v, want code %s on %q", err, tt.code, tt.attr)
				}
			})
		}
		if list, err := s.Checkpoints(ctx, h); err != nil || len(list) != 1 {
			t.Errorf("Checkpoints = %+v, %v; want only the first", list, err)
		}
	})
}

// mountsOf counts the mounts at path in /proc/self/mountinfo.
func mountsOf(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == path {
			n++
		}
	}
	return n
}

// checkMountCheckpoint checks checkpoint mounts on the state h whose files
// the tenant sees at dir.
func checkMountCheckpoint(t *testing.T, s sdk.StateFS, h sdk.Handle, dir string) {
	ctx := context.Background()
	cm := s.(sdk.CheckpointMounter)
	writeTree(t, dir, map[string]string{"a": "hello", "d/b": "x", "l": "->a"})
	cp, err := s.Checkpoint(ctx, h, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if cp.Bytes != 5+1+1+4096 || cp.Inodes != 4 || cp.Mount != "" {
		t.Errorf("Checkpoint = %+v, want 4103 bytes (the directory a block), 4 inodes, not mounted", cp)
	}
	want := filepath.Join(filepath.Dir(dir), ".mounts", filepath.Base(dir), "c1")
	m, err := cm.MountCheckpoint(ctx, h, "c1")
	if err != nil || m.Source != want || !m.ReadOnly || m.Type != sdk.MountBind {
		t.Fatalf("MountCheckpoint = %+v, %v; want a read-only bind mount at %s", m, err, want)
	}
	if b, err := os.ReadFile(filepath.Join(want, "a")); err != nil || string(b) != "hello" {
		t.Errorf("a in the mount = %q, %v", b, err)
	}
	if target, err := os.Readlink(filepath.Join(want, "l")); err != nil || target != "a" {
		t.Errorf("l in the mount = %q, %v", target, err)
	}
	// Nobody writes it, root included.
	p := func(name string) string { return filepath.Join(want, name) }
	writes := map[string]func() error{
		"create":   func() error { return os.WriteFile(p("new"), nil, 0o644) },
		"truncate": func() error { return os.Truncate(p("a"), 0) },
		"open-rw":  func() error { f, err := os.OpenFile(p("a"), os.O_RDWR, 0); f.Close(); return err },
		"mkdir":    func() error { return os.Mkdir(p("e"), 0o755) },
		"remove":   func() error { return os.Remove(p("d/b")) },
		"rename":   func() error { return os.Rename(p("a"), p("z")) },
		"chmod":    func() error { return os.Chmod(p("a"), 0o777) },
		"chown":    func() error { return os.Lchown(p("a"), 0, 0) },
		"symlink":  func() error { return os.Symlink("a", p("m")) },
		"utimes":   func() error { return os.Chtimes(p("a"), time.Now(), time.Now()) },
	}
	for name, w := range writes {
		if err := w(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s in the mounted checkpoint as root: %v, want EROFS", name, err)
		}
	}
	// The live state goes on; the checkpoint does not change with it.
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("changed"), 0o640); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p("a")); err != nil || string(b) != "hello" {
		t.Errorf("a in the mount after a live write = %q, %v; want hello", b, err)
	}
	if again, err := cm.MountCheckpoint(ctx, h, "c1"); err != nil || again.Source != want || mountsOf(t, want) != 1 {
		t.Errorf("MountCheckpoint again = %+v, %v with %d mounts; want the same, once", again, err, mountsOf(t, want))
	}
	if list, err := s.Checkpoints(ctx, h); err != nil || len(list) != 1 || list[0].Mount != want || list[0].Bytes != 5+1+1+4096 {
		t.Errorf("Checkpoints = %+v, %v; want c1 mounted at %s", list, err, want)
	}
	for _, tt := range []struct {
		name string
		code sdk.Code
	}{{"never", sdk.CodeNotFound}, {"../state", sdk.CodeInvalid}, {".mounts", sdk.CodeInvalid}, {"", sdk.CodeInvalid}} {
		if _, err := cm.MountCheckpoint(ctx, h, tt.name); sdk.CodeOf(err) != tt.code {
			t.Errorf("MountCheckpoint(%q) = %v, want %s", tt.name, err, tt.code)
		}
		if err := cm.UnmountCheckpoint(ctx, h, tt.name); sdk.CodeOf(err) != tt.code {
			t.Errorf("UnmountCheckpoint(%q) = %v, want %s", tt.name, err, tt.code)
		}
	}

	if err := cm.UnmountCheckpoint(ctx, h, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(want); !errors.Is(err, fs.ErrNotExist) || mountsOf(t, want) != 0 {
		t.Errorf("after UnmountCheckpoint: %v, %d mounts; want no mount point", err, mountsOf(t, want))
	}
	if err := cm.UnmountCheckpoint(ctx, h, "c1"); err != nil {
		t.Errorf("UnmountCheckpoint of an unmounted checkpoint: %v", err)
	}
	if list, err := s.Checkpoints(ctx, h); err != nil || len(list) != 1 || list[0].Mount != "" {
		t.Errorf("Checkpoints after unmount = %+v, %v", list, err)
	}
	// Deprovision unmounts what is mounted.
	if _, err := cm.MountCheckpoint(ctx, h, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Deprovision(ctx, h); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Dir(want)); !errors.Is(err, fs.ErrNotExist) || mountsOf(t, want) != 0 {
		t.Errorf("after Deprovision: %v, %d mounts; want the mounts gone", err, mountsOf(t, want))
	}
}

func TestMountCheckpoint(t *testing.T) {
	impls(t, func(t *testing.T, s sdk.StateFS) {
		dir := filepath.Join(t.TempDir(), "state")
		checkMountCheckpoint(t, s, provision(t, s, dir), dir)
	})
	t.Run("fuse", func(t *testing.T) {
		h, d := provisionFUSE(t, newFUSE(), "mnt")
		checkMountCheckpoint(t, newFUSE(), h, d.Dir)
	})
}

// BenchmarkCheckpoint measures the checkpoint of a 10,000-file state (100
// directories of 100 files of 1 KiB) in directory mode, against the
// baseline of copying the same tree with cp -a, in the same run.
func BenchmarkCheckpoint(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "state")
	s := newDir()
	h, err := s.Provision(context.Background(), provisionReq(dir))
	if err != nil {
		b.Fatal(err)
	}
	block := bytes.Repeat([]byte("k"), 1024)
	for i := range 100 {
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i))
		if err := os.Mkdir(sub, 0o755); err != nil {
			b.Fatal(err)
		}
		for j := range 100 {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%02d", j)), block, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("files=10000", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			if _, err := s.Checkpoint(context.Background(), h, fmt.Sprintf("c%d", i)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/checkpoint")
	})
	b.Run("baseline=cp-a", func(b *testing.B) {
		base := b.TempDir()
		for i := 0; b.Loop(); i++ {
			if out, err := exec.Command("cp", "-a", dir, filepath.Join(base, fmt.Sprint(i))).CombinedOutput(); err != nil {
				b.Fatalf("cp -a: %v: %s", err, out)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/copy")
	})
}

// TestDeepState checks a state deeper than any path within PATH_MAX: its
// use is counted (directory mode counts by walking), and a checkpoint of
// it is refused with why, before anything is copied.
func TestDeepState(t *testing.T) {
	const depth = maxCopyDepth + 100
	impls(t, func(t *testing.T, s sdk.StateFS) {
		ctx := context.Background()
		dir := filepath.Join(t.TempDir(), "state")
		h := provision(t, s, dir)
		fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		for range depth {
			if err := syscall.Mkdirat(fd, "d", 0o755); err != nil {
				t.Fatal(err)
			}
			sub, err := syscall.Openat(fd, "d", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
			syscall.Close(fd)
			if err != nil {
				t.Fatal(err)
			}
			fd = sub
		}
		syscall.Close(fd)
		u, err := s.Usage(ctx, h)
		if want := (sdk.Usage{Bytes: depth * 4096, Inodes: depth, BytesLimit: 1 << 20, InodesLimit: 256}); err != nil || u.Bytes != want.Bytes || u.Inodes != want.Inodes {
			t.Errorf("Usage = %+v, %v; want %d bytes, %d inodes", u, err, want.Bytes, want.Inodes)
		}
		_, err = s.Checkpoint(ctx, h, "deep")
		var e *sdk.Error
		if !errors.As(err, &e) || e.Code != sdk.CodeInvalid || !strings.Contains(err.Error(), fmt.Sprintf("%d directories deep", depth)) {
			t.Fatalf("Checkpoint = %v, want invalid: %d directories deep", err, depth)
		}
		if list, err := s.Checkpoints(ctx, h); err != nil || len(list) != 0 {
			t.Errorf("Checkpoints = %+v, %v; want none", list, err)
		}
		if left, err := os.ReadDir(filepath.Join(filepath.Dir(dir), ".checkpoints", "state")); err == nil && len(left) != 0 {
			t.Errorf("the checkpoint directory holds %d entries after the refusal", len(left))
		}
	})
}

// TestCheckpointHardLinks checks that a file of many names is copied once,
// its other names linked: a checkpoint takes its bytes once on the host's
// disk (a tenant's file of 100,000 names would else be copied 100,000
// times), counts them once as the quota does, and hashes as the live state.
func TestCheckpointHardLinks(t *testing.T) {
	impls(t, func(t *testing.T, s sdk.StateFS) {
		ctx := context.Background()
		dir := filepath.Join(t.TempDir(), "state")
		h := provision(t, s, dir)
		writeTree(t, dir, map[string]string{"f": strings.Repeat("x", 10000)})
		for i := range 50 {
			if err := os.Link(filepath.Join(dir, "f"), filepath.Join(dir, fmt.Sprintf("l%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		cp, err := s.Checkpoint(ctx, h, "links")
		if err != nil {
			t.Fatal(err)
		}
		if cp.Bytes != 10000 || cp.Inodes != 51 {
			t.Errorf("checkpoint of %d bytes, %d inodes; want 10000, 51", cp.Bytes, cp.Inodes)
		}
		if live := hashOf(t, s, h); !bytes.Equal(cp.Root, live) {
			t.Errorf("checkpoint root %x, live %x", cp.Root, live)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(filepath.Dir(dir), ".checkpoints", "state", "links", "tree", "l7"), &st); err != nil || st.Nlink != 51 {
			t.Errorf("the copy of l7 has %d names (%v), want 51", st.Nlink, err)
		}
	})
}

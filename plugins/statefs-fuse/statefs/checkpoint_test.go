package statefs

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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
		if want := (sdk.Usage{Bytes: 5 + 3 + 1, Inodes: 5, BytesLimit: 1 << 20, InodesLimit: 256}); err != nil || u != want {
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

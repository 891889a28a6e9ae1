package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestModuleDigest changes a module in each way it can change under the
// engine and checks that the digest follows the content: a digest kept in
// the cache is never returned for another file or other content.
func TestModuleDigest(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.wasm")
	sum := func(b []byte) string {
		s := sha256.Sum256(b)
		return "sha256:" + hex.EncodeToString(s[:])
	}
	write := func(t *testing.T, p, content string) {
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(t, path, "module-1")
	// A file just written is hashed, but its digest is not kept: it could
	// change again within the same tick of the file clock.
	if got, err := moduleDigest(path); err != nil || got != sum([]byte("module-1")) {
		t.Fatalf("digest = %s, %v", got, err)
	}
	if _, kept := digestCache.byPath[path]; kept {
		t.Fatal("the digest of a file changed just now is kept")
	}
	old := settleTime
	settleTime = 0 // keep every digest from here on
	t.Cleanup(func() { settleTime = old })
	for _, tt := range []struct {
		name    string
		change  func(t *testing.T)
		content string
	}{
		{"first look", func(*testing.T) {}, "module-1"},
		{"again", func(*testing.T) {}, "module-1"},
		{"replaced by rename, same size", func(t *testing.T) {
			write(t, path+".new", "module-2")
			if err := os.Rename(path+".new", path); err != nil {
				t.Fatal(err)
			}
		}, "module-2"},
		{"rewritten in place, new size", func(t *testing.T) { write(t, path, "module-three") }, "module-three"},
		{"swapped for a symlink to another file", func(t *testing.T) {
			other := filepath.Join(dir, "other.wasm")
			write(t, other, "other-module")
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(other, path); err != nil {
				t.Fatal(err)
			}
		}, "other-module"},
	} {
		tt.change(t)
		got, err := moduleDigest(path)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if want := sum([]byte(tt.content)); got != want {
			t.Errorf("%s: digest %s, want %s", tt.name, got, want)
		}
	}
	// A FIFO swapped in is refused without blocking.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := moduleDigest(path); err == nil {
		t.Error("a FIFO as the module hashed without error")
	}
}

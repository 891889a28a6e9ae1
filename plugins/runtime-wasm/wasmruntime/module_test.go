package wasmruntime

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestIdentify: a module file's identity changes with every way of changing
// its content, and a file changed within the ctime's granularity is never
// trusted to keep its identity.
func TestIdentify(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.wasm")
	if err := os.WriteFile(path, []byte("module one"), 0o644); err != nil {
		t.Fatal(err)
	}
	stat := func() os.FileInfo {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	later := time.Now().Add(time.Minute)
	if _, ok := identify(stat(), time.Now()); ok {
		t.Fatal("a file written just now is trusted")
	}
	first, ok := identify(stat(), later)
	if !ok {
		t.Fatal("an old enough file is not trusted")
	}
	if again, _ := identify(stat(), later); again != first {
		t.Fatal("an unchanged file changed its identity")
	}
	changes := []struct {
		name string
		do   func() error
	}{
		{"rewritten in place, same size", func() error { return os.WriteFile(path, []byte("module two"), 0o644) }},
		{"renamed over", func() error {
			tmp := filepath.Join(dir, "tmp")
			if err := os.WriteFile(tmp, []byte("module one"), 0o644); err != nil {
				return err
			}
			return os.Rename(tmp, path)
		}},
		{"mode changed", func() error { return os.Chmod(path, 0o600) }},
	}
	prev := first
	for _, c := range changes {
		time.Sleep(10 * time.Millisecond) // past the filesystem's timestamp granularity
		if err := c.do(); err != nil {
			t.Fatal(err)
		}
		id, _ := identify(stat(), later)
		if id == prev {
			t.Errorf("%s: identity unchanged", c.name)
		}
		prev = id
	}
}

package statefs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/sdktest"
)

// nobody owns the state in these tests.
var nobody = sdk.User{Name: "nobody", UID: 65534, GID: 65534}

func provisionReq(dir string) *sdk.ProvisionRequest {
	return &sdk.ProvisionRequest{
		Instance:  sdk.Instance{Tenant: "alice", Name: "web"},
		User:      nobody,
		SizeBytes: 1 << 20,
		Dir:       dir,
	}
}

func provision(t *testing.T, s sdk.StateFS, dir string) sdk.Handle {
	t.Helper()
	h, err := s.Provision(context.Background(), provisionReq(dir))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func hashOf(t *testing.T, s sdk.StateFS, h sdk.Handle) []byte {
	t.Helper()
	sum, err := s.Hash(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum) != 32 {
		t.Fatalf("hash has %d bytes, want 32", len(sum))
	}
	return sum
}

// newDir returns the StateFS in directory mode.
func newDir() *FS {
	f := New()
	f.mode = modeDirectory
	return f
}

// impls runs a test against the implementation directly and over gRPC.
func impls(t *testing.T, test func(t *testing.T, s sdk.StateFS)) {
	t.Run("direct", func(t *testing.T) { test(t, newDir()) })
	t.Run("grpc", func(t *testing.T) { test(t, sdktest.StateFS(t, newDir())) })
}

func TestLifecycle(t *testing.T) {
	impls(t, func(t *testing.T, s sdk.StateFS) {
		ctx := context.Background()
		dir := filepath.Join(t.TempDir(), "state")
		h := provision(t, s, dir)

		fi, err := os.Lstat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || fi.Mode().Perm() != 0o700 || st.Uid != nobody.UID || st.Gid != nobody.GID {
			t.Errorf("state dir is %v owned by %d:%d, want a 0700 directory owned by 65534:65534", fi.Mode(), st.Uid, st.Gid)
		}
		var d handleData
		if err := json.Unmarshal(h.Data, &d); err != nil || h.Version != 1 {
			t.Fatalf("handle %d %s: %v", h.Version, h.Data, err)
		}
		if want := (handleData{Dir: dir, Instance: "alice/web", Size: 1 << 20, Inodes: 256, UID: 65534, GID: 65534}); d != want {
			t.Errorf("handle %+v, want %+v", d, want)
		}

		for range 2 {
			m, err := s.Mount(ctx, h)
			if err != nil || m.Source != dir || m.Type != sdk.MountDir {
				t.Errorf("Mount = %+v, %v; want source %s", m, err, dir)
			}
		}
		for range 2 {
			if err := s.Unmount(ctx, h); err != nil {
				t.Errorf("Unmount: %v", err)
			}
		}
		for range 2 {
			got, err := s.Recover(ctx, h)
			if err != nil || got.Version != h.Version || !bytes.Equal(got.Data, h.Data) {
				t.Errorf("Recover = %+v, %v; want the handle back", got, err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o600); err != nil {
			t.Fatal(err)
		}
		again := provision(t, s, dir) // a retried Provision adopts the directory
		if !bytes.Equal(again.Data, h.Data) {
			t.Errorf("second Provision handle %s, want %s", again.Data, h.Data)
		}
		if _, err := os.Stat(filepath.Join(dir, "f")); err != nil {
			t.Errorf("second Provision lost the state: %v", err)
		}

		for range 2 {
			if err := s.Deprovision(ctx, h); err != nil {
				t.Errorf("Deprovision: %v", err)
			}
		}
		if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("state dir after Deprovision: %v, want it gone", err)
		}
		if _, err := s.Recover(ctx, h); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("Recover after Deprovision: %v, want not found", err)
		}
		if _, err := s.Mount(ctx, h); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("Mount after Deprovision: %v, want not found", err)
		}
	})
}

func TestProvisionErrors(t *testing.T) {
	tests := []struct {
		name string
		// req returns the request and a path that must be left as it was.
		req      func(t *testing.T) (*sdk.ProvisionRequest, string)
		wantCode sdk.Code
	}{
		{"parent missing", func(t *testing.T) (*sdk.ProvisionRequest, string) {
			dir := filepath.Join(t.TempDir(), "missing", "state")
			return provisionReq(dir), filepath.Dir(dir)
		}, sdk.CodeInvalid},
		{"relative dir", func(t *testing.T) (*sdk.ProvisionRequest, string) {
			return provisionReq("state"), "state"
		}, sdk.CodeInvalid},
		{"unclean dir", func(t *testing.T) (*sdk.ProvisionRequest, string) {
			dir := t.TempDir() + "/x/../state"
			return provisionReq(dir), filepath.Clean(dir)
		}, sdk.CodeInvalid},
		{"root user", func(t *testing.T) (*sdk.ProvisionRequest, string) {
			req := provisionReq(filepath.Join(t.TempDir(), "state"))
			req.User = sdk.User{Name: "root"}
			return req, req.Dir
		}, sdk.CodeInvalid},
		{"negative size", func(t *testing.T) (*sdk.ProvisionRequest, string) {
			req := provisionReq(filepath.Join(t.TempDir(), "state"))
			req.SizeBytes = -1
			return req, req.Dir
		}, sdk.CodeInvalid},
		{"existing dir of another owner", func(t *testing.T) (*sdk.ProvisionRequest, string) {
			dir := t.TempDir()
			return provisionReq(dir), dir
		}, sdk.CodeInvalid},
		{"existing file", func(t *testing.T) (*sdk.ProvisionRequest, string) {
			file := filepath.Join(t.TempDir(), "state")
			if err := os.WriteFile(file, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return provisionReq(file), file
		}, sdk.CodeInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, keep := tt.req(t)
			before := describe(keep)
			if _, err := newDir().Provision(context.Background(), req); sdk.CodeOf(err) != tt.wantCode {
				t.Fatalf("Provision: %v, want code %s", err, tt.wantCode)
			}
			if after := describe(keep); after != before {
				t.Errorf("%s changed from %s to %s", keep, before, after)
			}
		})
	}
}

// describe returns the type, mode and owner of path, or "absent".
func describe(path string) string {
	fi, err := os.Lstat(path)
	if err != nil {
		return "absent"
	}
	st := fi.Sys().(*syscall.Stat_t)
	return fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
}

func TestHash(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	// fill makes the base tree.
	fill := func(t *testing.T, dir string) {
		t.Helper()
		for _, p := range []string{"a", "a/b"} {
			if err := os.Mkdir(filepath.Join(dir, p), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for p, content := range map[string]string{"x": "hello", "a/y": "world", "a/b/z": ""} {
			if err := os.WriteFile(filepath.Join(dir, p), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/", filepath.Join(dir, "a", "rootlink")); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name     string
		change   func(dir string) error
		wantSame bool
	}{
		{"no change", func(string) error { return nil }, true},
		{"read", func(dir string) error { _, err := os.ReadFile(filepath.Join(dir, "x")); return err }, true},
		{"mtime", func(dir string) error {
			fi, err := os.Stat(filepath.Join(dir, "x"))
			if err != nil {
				return err
			}
			return os.Chtimes(filepath.Join(dir, "x"), fi.ModTime(), fi.ModTime().Add(3600e9))
		}, true},
		{"outside target changed", func(string) error { return os.WriteFile(outside, []byte("other"), 0o600) }, true},
		{"content same size", func(dir string) error { return os.WriteFile(filepath.Join(dir, "x"), []byte("jello"), 0o644) }, false},
		{"content appended", func(dir string) error { return os.WriteFile(filepath.Join(dir, "x"), []byte("hello!"), 0o644) }, false},
		{"rename", func(dir string) error { return os.Rename(filepath.Join(dir, "x"), filepath.Join(dir, "w")) }, false},
		{"move into dir", func(dir string) error { return os.Rename(filepath.Join(dir, "x"), filepath.Join(dir, "a", "x")) }, false},
		{"new empty file", func(dir string) error { return os.WriteFile(filepath.Join(dir, "a", "b", "new"), nil, 0o644) }, false},
		{"new empty dir", func(dir string) error { return os.Mkdir(filepath.Join(dir, "c"), 0o755) }, false},
		{"empty file becomes dir", func(dir string) error {
			if err := os.Remove(filepath.Join(dir, "a", "b", "z")); err != nil {
				return err
			}
			return os.Mkdir(filepath.Join(dir, "a", "b", "z"), 0o755)
		}, false},
		{"symlink target", func(dir string) error {
			if err := os.Remove(filepath.Join(dir, "link")); err != nil {
				return err
			}
			return os.Symlink(outside+"2", filepath.Join(dir, "link"))
		}, false},
		{"file removed", func(dir string) error { return os.Remove(filepath.Join(dir, "a", "y")) }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(outside, []byte("secret"), 0o600); err != nil {
				t.Fatal(err)
			}
			s := newDir()
			base := t.TempDir()
			h := provision(t, s, filepath.Join(base, "one"))
			twin := provision(t, s, filepath.Join(base, "two"))
			fill(t, filepath.Join(base, "one"))
			fill(t, filepath.Join(base, "two"))
			before := hashOf(t, s, h)
			if got := hashOf(t, s, twin); !bytes.Equal(got, before) {
				t.Errorf("equal trees hash to %x and %x", before, got)
			}
			if err := tt.change(filepath.Join(base, "one")); err != nil {
				t.Fatal(err)
			}
			after := hashOf(t, s, h)
			if same := bytes.Equal(after, before); same != tt.wantSame {
				t.Errorf("hash before %x, after %x; want same = %v", before, after, tt.wantSame)
			}
		})
	}
}

func TestHashEmptyTree(t *testing.T) {
	s := newDir()
	h := provision(t, s, filepath.Join(t.TempDir(), "state"))
	// SHA-256("dir\x00" ‖ perm 0700), per package merkle's canonical form.
	if got, want := hashOf(t, s, h), sha256.Sum256([]byte("dir\x00\x00\x00\x01\xc0")); !bytes.Equal(got, want[:]) {
		t.Errorf("empty tree hash %x, want %x", got, want)
	}
}

// TestStateGivenToSubordinate checks which owners of a state's root are
// its tenant's: its own ids and its subordinate ones (a runtime may give
// the root to its workload's id), and no other.
func TestStateGivenToSubordinate(t *testing.T) {
	u := sdk.User{Name: "kg-sub", UID: 61600, GID: 61601, SubUID: 1_400_000_000, SubGID: 1_500_000_000, Count: 65536}
	tests := []struct {
		name     string
		uid, gid uint32
		ok       bool
	}{
		{"tenant's", u.UID, u.GID, true},
		{"workload's subordinate ids", u.SubUID + 9999, u.SubGID + 9999, true},
		{"first subordinate ids", u.SubUID, u.SubGID, true},
		{"last subordinate ids", u.SubUID + u.Count - 1, u.SubGID + u.Count - 1, true},
		{"uid past the range", u.SubUID + u.Count, u.SubGID, false},
		{"gid past the range", u.SubUID, u.SubGID + u.Count, false},
		{"a subordinate uid as gid", u.SubUID, u.SubUID, false},
		{"another user's", 65534, 65534, false},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newDir()
			req := provisionReq(filepath.Join(t.TempDir(), "state"))
			req.User = u
			h, err := s.Provision(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(req.Dir, int(tt.uid), int(tt.gid)); err != nil {
				t.Fatal(err)
			}
			_, err = s.Mount(ctx, h)
			if tt.ok && err != nil || !tt.ok && !errors.Is(err, sdk.ErrInvalid) {
				t.Errorf("Mount of a state owned by %d:%d: %v, want ok %v", tt.uid, tt.gid, err, tt.ok)
			}
		})
	}
}

func TestTamperedHandle(t *testing.T) {
	base := t.TempDir()
	state := filepath.Join(base, "state")
	h := provision(t, newDir(), state)
	symlink := filepath.Join(base, "symlink")
	if err := os.Symlink(state, symlink); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(base, "other") // a directory owned by root
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	withData := func(d handleData) sdk.Handle {
		data, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		return sdk.Handle{Version: 1, Data: data}
	}
	good := handleData{Dir: state, Instance: "alice/web", UID: 65534, GID: 65534}
	tamper := func(f func(d *handleData)) sdk.Handle {
		d := good
		f(&d)
		return withData(d)
	}
	tests := []struct {
		name string
		h    sdk.Handle
	}{
		{"version 2", sdk.Handle{Version: 2, Data: h.Data}},
		{"not JSON", sdk.Handle{Version: 1, Data: []byte("{")}},
		{"relative dir", tamper(func(d *handleData) { d.Dir = "state" })},
		{"unclean dir", tamper(func(d *handleData) { d.Dir = other + "/../other" })},
		{"root dir", tamper(func(d *handleData) { d.Dir = "/" })},
		{"root owner", tamper(func(d *handleData) { d.Dir, d.UID, d.GID = other, 0, 0 })},
		{"another owner's dir", tamper(func(d *handleData) { d.Dir = other })},
		{"symlink to the state", tamper(func(d *handleData) { d.Dir = symlink })},
		{"other uid", tamper(func(d *handleData) { d.UID = 65533 })},
		{"subordinate uids from root", tamper(func(d *handleData) { d.SubUID, d.SubCount = 0, 65536 })},
		{"subordinate uids wrapping", tamper(func(d *handleData) { d.SubUID, d.SubCount = 1<<32-10, 65536 })},
		{"subordinate gids wrapping", tamper(func(d *handleData) { d.SubUID, d.SubGID, d.SubCount = 100000, 1<<32-10, 65536 })},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newDir()
			if err := s.Deprovision(ctx, tt.h); !errors.Is(err, sdk.ErrInvalid) {
				t.Errorf("Deprovision: %v, want invalid", err)
			}
			if _, err := s.Hash(ctx, tt.h); !errors.Is(err, sdk.ErrInvalid) {
				t.Errorf("Hash: %v, want invalid", err)
			}
			if _, err := s.Mount(ctx, tt.h); !errors.Is(err, sdk.ErrInvalid) {
				t.Errorf("Mount: %v, want invalid", err)
			}
			for _, p := range []string{state, symlink, other} {
				if _, err := os.Lstat(p); err != nil {
					t.Errorf("%s: %v, want it kept", p, err)
				}
			}
		})
	}
}

func TestConfigure(t *testing.T) {
	tests := []struct {
		name     string
		settings sdk.Config
		wantErr  bool
	}{
		{"default", sdk.Config{}, false},
		{"directory", sdk.Config{"mode": "directory"}, false},
		{"fuse", sdk.Config{"mode": "fuse"}, false},
		{"other", sdk.Config{"mode": "zfs"}, true},
		{"not a string", sdk.Config{"mode": 1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := newDir().Configure(context.Background(), sdk.ConfigureRequest{Settings: tt.settings})
			var e *sdk.Error
			if tt.wantErr && (!errors.As(err, &e) || e.Code != sdk.CodeInvalid || e.Attribute != "mode") || !tt.wantErr && err != nil {
				t.Errorf("Configure = %v, want error %v", err, tt.wantErr)
			}
		})
	}
	info, err := newDir().Info(context.Background())
	if err != nil || info.Name != "fuse" || info.Kind != sdk.KindStateFS || len(info.Schema.Attributes) != 1 || info.Schema.Attributes[0].Name != "mode" {
		t.Errorf("Info = %+v, %v", info, err)
	}
}

// TestConfigureMode: fuse is the default wherever the FUSE device opens;
// where it does not, the plugin falls back to plain directories and warns
// that quota enforcement is weaker; mode = "directory" needs no device.
func TestConfigureMode(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-fuse")
	tests := []struct {
		name     string
		device   string
		settings sdk.Config
		want     string
		warns    bool
	}{
		{"default with FUSE", "/dev/fuse", sdk.Config{}, modeFUSE, false},
		{"fuse with FUSE", "/dev/fuse", sdk.Config{"mode": "fuse"}, modeFUSE, false},
		{"default without FUSE", missing, sdk.Config{}, modeDirectory, true},
		{"fuse without FUSE", missing, sdk.Config{"mode": "fuse"}, modeDirectory, true},
		{"directory without FUSE", missing, sdk.Config{"mode": "directory"}, modeDirectory, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log bytes.Buffer
			f := New()
			f.device = tt.device
			f.log = hclog.New(&hclog.LoggerOptions{Output: &log, JSONFormat: true})
			if err := f.Configure(context.Background(), sdk.ConfigureRequest{Settings: tt.settings}); err != nil {
				t.Fatal(err)
			}
			if f.mode != tt.want {
				t.Errorf("mode %q, want %q", f.mode, tt.want)
			}
			warned := strings.Contains(log.String(), `"@level":"warn"`) && strings.Contains(log.String(), "quota enforcement is weaker")
			if warned != tt.warns {
				t.Errorf("warned %v, want %v: %s", warned, tt.warns, log.String())
			}
			// The fallback serves state as plain directories.
			h := provision(t, f, filepath.Join(t.TempDir(), "state"))
			m, err := f.Mount(context.Background(), h)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Deprovision(context.Background(), h); err != nil {
				t.Fatal(err)
			}
			if wantType := map[string]string{modeFUSE: sdk.MountFUSE, modeDirectory: sdk.MountDir}[tt.want]; m.Type != wantType {
				t.Errorf("mount type %q, want %q", m.Type, wantType)
			}
		})
	}
}

package stateseed

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// owner is who the tests' seeds are written for: nobody when root, so
// that ownership is checked for real.
func owner() (int, int) {
	if os.Getuid() == 0 {
		return 65534, 65534
	}
	return os.Getuid(), os.Getgid()
}

// listing describes dir's tree: path, mode, owner, and content or target.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		st := fi.Sys().(*syscall.Stat_t)
		desc := rel + " " + fi.Mode().String() + " " + strconv.Itoa(int(st.Uid))
		switch {
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			desc += " " + string(b)
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		out = append(out, desc)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// seedDir makes a directory seed: a.txt, sub/b.txt (setuid), and an
// internal symlink.
func seedDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "a.txt"), []byte("alpha"), 0o644))
	must(t, os.Mkdir(filepath.Join(dir, "sub"), 0o750))
	must(t, os.WriteFile(filepath.Join(dir, "sub", "b.txt"), []byte("beta"), 0o755))
	must(t, os.Chmod(filepath.Join(dir, "sub", "b.txt"), 0o755|fs.ModeSetuid))
	must(t, os.Symlink("../a.txt", filepath.Join(dir, "sub", "link")))
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// tarFile is a tar entry for seedTar.
type tarFile struct {
	name, body, link string
	typ              byte
	mode             int64
}

func seedTar(t *testing.T, files ...tarFile) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Typeflag: f.typ, Mode: f.mode, Size: int64(len(f.body)), Linkname: f.link}
		if f.typ == tar.TypeXGlobalHeader {
			h = &tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "x"}}
		}
		must(t, tw.WriteHeader(h))
		if f.typ == tar.TypeReg {
			_, err := tw.Write([]byte(f.body))
			must(t, err)
		}
	}
	must(t, tw.Close())
	p := filepath.Join(t.TempDir(), "seed.tar")
	must(t, os.WriteFile(p, buf.Bytes(), 0o644))
	return p
}

func TestFill(t *testing.T) {
	uid, gid := owner()
	u := strconv.Itoa(uid)
	want := []string{
		"a.txt -rw-r--r-- " + u + " alpha",
		"sub drwxr-x--- " + u,
		"sub/b.txt -rwxr-xr-x " + u + " beta", // setuid dropped
		"sub/link Lrwxrwxrwx " + u + " -> ../a.txt",
	}
	tarSeed := seedTar(t,
		tarFile{typ: tar.TypeXGlobalHeader},
		tarFile{name: "a.txt", body: "alpha", typ: tar.TypeReg, mode: 0o644},
		tarFile{name: "sub/b.txt", body: "beta", typ: tar.TypeReg, mode: 0o4755}, // before its directory
		tarFile{name: "./sub/", typ: tar.TypeDir, mode: 0o750},
		tarFile{name: "sub/link", link: "../a.txt", typ: tar.TypeSymlink, mode: 0o777},
	)
	for name, seed := range map[string]string{"directory": seedDir(t), "tar": tarSeed} {
		t.Run(name, func(t *testing.T) {
			dst := t.TempDir()
			// What a crash left of an earlier attempt goes.
			must(t, os.WriteFile(filepath.Join(dst, "partial"), []byte("x"), 0o644))
			if err := Fill(context.Background(), dst, seed, uid, gid, 1<<20); err != nil {
				t.Fatal(err)
			}
			if got := listing(t, dst); !slices.Equal(got, want) {
				t.Errorf("state:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func TestFillRefuses(t *testing.T) {
	uid, gid := owner()
	withFile := func(do func(dir string) error) string {
		dir := seedDir(t)
		must(t, do(dir))
		return dir
	}
	tests := []struct {
		name, seed, want string
		limit            int64
	}{
		{"absolute symlink", withFile(func(d string) error { return os.Symlink("/etc/passwd", filepath.Join(d, "pw")) }), `"pw" is a symlink to "/etc/passwd", outside the seed`, 0},
		{"symlink climbing out", withFile(func(d string) error { return os.Symlink("../../etc", filepath.Join(d, "sub", "up")) }), `"sub/up" is a symlink to "../../etc", outside the seed`, 0},
		{"hardlink", withFile(func(d string) error { return os.Link(filepath.Join(d, "a.txt"), filepath.Join(d, "hard")) }), "is a hardlink", 0},
		{"FIFO", withFile(func(d string) error { return syscall.Mkfifo(filepath.Join(d, "fifo"), 0o644) }), `"fifo" is a FIFO`, 0},
		{"too large", seedDir(t), "holds 9 B of files, more than the state's size of 8 B", 8},
		{"tar climbing out", seedTar(t, tarFile{name: "../../etc/cron.d/x", body: "x", typ: tar.TypeReg, mode: 0o644}), "is not a path inside the seed", 0},
		{"tar absolute name", seedTar(t, tarFile{name: "/etc/passwd", body: "x", typ: tar.TypeReg, mode: 0o644}), "is not a path inside the seed", 0},
		{"tar hardlink", seedTar(t, tarFile{name: "a", body: "x", typ: tar.TypeReg, mode: 0o644}, tarFile{name: "b", link: "/etc/shadow", typ: tar.TypeLink}), `"b" is a hardlink`, 0},
		{"tar device", seedTar(t, tarFile{name: "null", typ: tar.TypeChar, mode: 0o666}), `"null" is a character device`, 0},
		{"tar symlink out", seedTar(t, tarFile{name: "x/y", link: "../../..", typ: tar.TypeSymlink}), "outside the seed", 0},
		{"not a tar", func() string {
			p := filepath.Join(t.TempDir(), "seed.tar")
			must(t, os.WriteFile(p, bytes.Repeat([]byte("garbage!"), 100), 0o644))
			return p
		}(), "is not a tar archive", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := t.TempDir()
			must(t, os.WriteFile(filepath.Join(dst, "kept"), []byte("k"), 0o644))
			err := Fill(context.Background(), dst, tt.seed, uid, gid, tt.limit)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Fill = %v, want an error containing %q", err, tt.want)
			}
			// Refused before anything was touched.
			if entries, _ := os.ReadDir(dst); len(entries) != 1 || entries[0].Name() != "kept" {
				t.Errorf("the state was touched: %v", entries)
			}
			if _, err := os.Lstat("/etc/cron.d/x"); err == nil {
				t.Error("/etc/cron.d/x written")
			}
		})
	}
}

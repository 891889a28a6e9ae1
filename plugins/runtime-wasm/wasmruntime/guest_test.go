package wasmruntime

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// wazeroMount is a --mount of wazero run: dir at guest, read-only or not.
type wazeroMount struct {
	dir, guest string
	readOnly   bool
}

// wazeroRun runs module in process as `wazero run --mount=...` does, with
// args and the file stdin (or nothing), and returns its stdout and exit
// code: the baseline a Kigumi instance must behave like.
func wazeroRun(t *testing.T, module string, args []string, stdin string, mounts []wazeroMount) (string, int) {
	t.Helper()
	ctx := context.Background()
	bin, err := os.ReadFile(module)
	if err != nil {
		t.Fatal(err)
	}
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, rt)
	fc := wazero.NewFSConfig()
	for _, m := range mounts {
		root := sysfs.DirFS(m.dir)
		if m.readOnly {
			root = &sysfs.ReadFS{FS: root}
		}
		fc = fc.(sysfs.FSConfig).WithSysFSMount(root, m.guest)
	}
	var out bytes.Buffer
	mc := wazero.NewModuleConfig().WithStdout(&out).WithStderr(&out).
		WithRandSource(crand.Reader).WithFSConfig(fc).
		WithSysNanosleep().WithSysNanotime().WithSysWalltime().
		WithArgs(append([]string{filepath.Base(module)}, args...)...)
	if stdin != "" {
		f, err := os.Open(stdin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		mc = mc.WithStdin(f)
	}
	_, err = rt.InstantiateWithConfig(ctx, bin, mc)
	var exit *sys.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), int(exit.ExitCode())
	}
	t.Fatalf("wazero run: %v", err)
	return "", 0
}

// tree describes the files under dir, for comparing two state dirs.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		desc := rel + " " + info.Mode().String()
		switch {
		case info.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + string(b)
		case info.Mode()&fs.ModeSymlink != 0:
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

// artifactsDir returns a directory holding data/a.txt, data/sub/b.txt and
// input.txt, readable by all, as an operator's artifacts directory is.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"data/a.txt": "alpha\n", "data/sub/b.txt": "beta\n", "input.txt": "from stdin\n"} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestSideBySideWithWazero: a program run as an instance, with its state at
// / and a read-only directory at /data, prints the same, exits with the
// same code and leaves the same state as under `wazero run
// --mount=STATE:/ --mount=DATA:/data:ro`.
func TestSideBySideWithWazero(t *testing.T) {
	r := newRuntime(t, nil)
	art := artifactsDir(t)
	data := filepath.Join(art, "data")
	tests := []struct {
		name  string
		args  []string
		stdin bool
	}{
		{"relative and absolute paths", []string{
			"cwd", "argv0", "cat:seed", "cat:/seed", "cat:./seed", "write:out.txt=hello", "cat:/out.txt",
			"mkdir:sub", "write:/sub/x=1", "ls:/", "ls:.", "ls:sub", "mv:sub/x=sub/y", "rm:out.txt",
			"stat:/seed", "append:log=a", "append:/log=b", "cat:log", "stat:/", "rm:/sub",
		}, false},
		{"read-only mount", []string{
			"ls:/data", "ls:data/sub", "cat:/data/a.txt", "cat:data/sub/b.txt", "stat:/data/a.txt",
			"write:/data/new=x", "rm:/data/a.txt", "mkdir:/data/d", "cat:/data/../seed", "stdin",
		}, true},
		{"no stdin", []string{"stdin", "exit:7"}, false},
		{"paths that would escape", []string{
			"cat:../../etc/passwd", "cat:/etc/passwd", "ls:/..", "cat:/data/../../etc/hostname", "stat:/proc/self",
		}, false},
		{"symlinks", []string{
			"symlink:seed=link", "cat:link", "stat:link", "symlink:/seed=abs", "symlink:../../..=up", "ls:/",
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kstate, wstate := stateDir(t), stateDir(t)
			req := request(t, "guestfs", sdk.PermStateWrite)
			req.Args = tt.args
			req.Mounts = []sdk.Mount{
				{Source: kstate, Target: "/", Type: sdk.MountDir, State: true},
				{Source: data, Target: "/data", ReadOnly: true, Type: sdk.MountBind},
			}
			stdin := ""
			if tt.stdin {
				stdin = filepath.Join(art, "input.txt")
				req.Stdin = stdin
			}
			st, got := run(t, r, req)
			want, wantExit := wazeroRun(t, modules["guestfs"], tt.args, stdin, []wazeroMount{{wstate, "/", false}, {data, "/data", true}})
			if st.State != sdk.StateExited || st.ExitCode != wantExit {
				t.Errorf("status = %+v, want exit code %d as under wazero", st, wantExit)
			}
			if got != want {
				t.Errorf("stdout differs from wazero's:\nkigumi:\n%s\nwazero:\n%s", got, want)
			}
			if k, w := tree(t, kstate), tree(t, wstate); !slices.Equal(k, w) {
				t.Errorf("state differs from wazero's:\nkigumi: %q\nwazero: %q", k, w)
			}
			t.Logf("output:\n%s", got)
		})
	}
}

// catWAT is a C-like program: as wasi-libc does, it names its preopens (fd
// 3 and 4), then reads "seed" through fd 3 and "a.txt" through fd 4, and
// prints all of it; it exits with the errno of the last call that failed.
const catWAT = `(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name" (func $prestat_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
  (global $errno (mut i32) (i32.const 0))
  (data (i32.const 100) "seed")
  (data (i32.const 110) "a.txt")
  (data (i32.const 120) "\n")
  (func $check (param i32) (if (local.get 0) (then (global.set $errno (local.get 0)))))
  (func $print (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (call $check (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $name (param $fd i32)
    (call $check (call $prestat (local.get $fd) (i32.const 16)))
    (call $check (call $prestat_name (local.get $fd) (i32.const 200) (i32.load (i32.const 20))))
    (call $print (i32.const 200) (i32.load (i32.const 20)))
    (call $print (i32.const 120) (i32.const 1)))
  (func $cat (param $dir i32) (param $path i32) (param $len i32)
    (call $check (call $path_open (local.get $dir) (i32.const 0) (local.get $path) (local.get $len)
      (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 12)))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.const 256))
    (call $check (call $fd_read (i32.load (i32.const 12)) (i32.const 0) (i32.const 1) (i32.const 8)))
    (call $print (i32.const 1024) (i32.load (i32.const 8))))
  (func (export "_start")
    (call $name (i32.const 3))
    (call $name (i32.const 4))
    (call $cat (i32.const 3) (i32.const 100) (i32.const 4))
    (call $cat (i32.const 4) (i32.const 110) (i32.const 5))
    (call $proc_exit (global.get $errno))))`

// TestSideBySideWAT: a C-like program sees the same preopens, in the same
// order, and reads the same through them as under wazero run.
func TestSideBySideWAT(t *testing.T) {
	r := newRuntime(t, nil)
	art := artifactsDir(t)
	data := filepath.Join(art, "data")
	module := filepath.Join(art, "cat.wasm")
	if err := os.WriteFile(module, wat2wasm(t, catWAT), 0o644); err != nil {
		t.Fatal(err)
	}
	kstate, wstate := stateDir(t), stateDir(t)
	req := request(t, "tiny", sdk.PermStateRead)
	req.Artifact.Module = module
	req.Mounts = []sdk.Mount{
		{Source: kstate, Target: "/", Type: sdk.MountDir, State: true},
		{Source: data, Target: "/data", ReadOnly: true, Type: sdk.MountBind},
	}
	st, got := run(t, r, req)
	want, wantExit := wazeroRun(t, module, nil, "", []wazeroMount{{wstate, "/", false}, {data, "/data", true}})
	if st.State != sdk.StateExited || st.ExitCode != wantExit || got != want {
		t.Errorf("kigumi: %+v\n%s\nwazero: exit %d\n%s", st, got, wantExit, want)
	}
	if want != "/\n/data\nseed\nalpha\n" {
		t.Errorf("wazero printed %q", want)
	}
}

// TestEscapes: no path leads out of a preopen: not "..", not an absolute
// path, not a symlink the instance plants in its state (to /etc/passwd or
// to another tenant's state), not a symlink in a read-only mount, and no
// host path reaches another tenant's state.
func TestEscapes(t *testing.T) {
	r := newRuntime(t, nil)
	art := artifactsDir(t)
	data := filepath.Join(art, "data")
	// An operator's mistake: symlinks in the artifacts pointing out.
	for name, target := range map[string]string{"passwd": "/etc/passwd", "up": "../../../../../../../../etc/passwd"} {
		if err := os.Symlink(target, filepath.Join(data, name)); err != nil {
			t.Fatal(err)
		}
	}
	other := stateDir(t) // another tenant's state, with its file "seed"
	if err := os.WriteFile(filepath.Join(other, "secret"), []byte("other tenant's secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel("/", other)
	if err != nil {
		t.Fatal(err)
	}
	probes := []string{
		"cat:../../../../etc/passwd",
		"cat:/etc/passwd",
		"cat:" + other + "/secret",
		"ls:" + other,
		"symlink:/etc/passwd=pw", "cat:pw",
		"symlink:" + other + "/secret=abs", "cat:abs",
		"symlink:../../../../../../../../" + rel + "/secret=rel", "cat:rel",
		"symlink:../../../../../../../..=root", "cat:root/etc/passwd", "ls:root" + other,
		"cat:/data/passwd", "cat:/data/up", "cat:/data/../../etc/passwd",
		"write:/data/../../tmp/escaped=x",
	}
	req := request(t, "guestfs", sdk.PermStateWrite)
	state := filepath.Dir(req.RunDir) + "/state"
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	req.Args = probes
	req.Mounts = []sdk.Mount{
		{Source: state, Target: "/", Type: sdk.MountDir, State: true},
		{Source: data, Target: "/data", ReadOnly: true, Type: sdk.MountBind},
	}
	st, out := run(t, r, req)
	t.Logf("output:\n%s", out)
	if strings.Contains(out, "root:x:") || strings.Contains(out, "tenant's secret") {
		t.Errorf("a host file leaked:\n%s", out)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		op, _, _ := strings.Cut(l, ":")
		if !strings.Contains(l, "error") && op != "symlink" {
			t.Errorf("probe succeeded: %s", l)
		}
	}
	if st.State != sdk.StateExited || st.ExitCode == 0 {
		t.Errorf("status = %+v", st)
	}
	if _, err := os.Lstat("/tmp/escaped"); err == nil {
		t.Error("/tmp/escaped was written")
	}
	if b, err := os.ReadFile(filepath.Join(other, "secret")); err != nil || string(b) != "other tenant's secret\n" {
		t.Errorf("the other tenant's state changed: %q, %v", b, err)
	}
}

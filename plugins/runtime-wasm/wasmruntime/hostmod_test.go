package wasmruntime

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/sys"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// wat2wasm assembles a WAT module with wabt's wat2wasm.
func wat2wasm(t *testing.T, wat string) []byte {
	t.Helper()
	dir := t.TempDir()
	src, out := filepath.Join(dir, "m.wat"), filepath.Join(dir, "m.wasm")
	if err := os.WriteFile(src, []byte(wat), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("wat2wasm", src, "-o", out).CombinedOutput(); err != nil {
		t.Fatalf("wat2wasm: %v\n%s", err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// callsModule is a WAT module whose _start makes calls, each an expression
// of type i32 (an errno, or a value), and writes their results to stdout as
// little-endian u32s. Memory from 1024 on is scratch space for the calls;
// 512 holds "/" and 520 "/nope".
func callsModule(calls ...string) string {
	var body strings.Builder
	for i, c := range calls {
		fmt.Fprintf(&body, "    (i32.store (i32.const %d) %s)\n", 4096+4*i, c)
	}
	return fmt.Sprintf(`(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $environ_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $environ_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open" (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_readdir" (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func $sock_accept (param i32 i32 i32) (result i32)))
  (import "kigumi" "drop_mount" (func $drop_mount (param i32 i32) (result i32)))
  (import "kigumi" "drop_fs" (func $drop_fs (result i32)))
  (import "kigumi" "drop_env" (func $drop_env (result i32)))
  (import "kigumi" "drop_clock" (func $drop_clock (result i32)))
  (import "kigumi" "drop_random" (func $drop_random (result i32)))
  (import "kigumi" "drop_all" (func $drop_all (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "/")
  (data (i32.const 520) "/nope")
  (data (i32.const 528) "config.txt")
  (func (export "_start")
%s
    (i32.store (i32.const 0) (i32.const 4096))
    (i32.store (i32.const 4) (i32.const %d))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
`, body.String(), 4*len(calls))
}

// Calls for callsModule.
const (
	envCount   = `(block (result i32) (drop (call $environ_sizes_get (i32.const 1024) (i32.const 1028))) (i32.load (i32.const 1024)))`
	envSize    = `(block (result i32) (drop (call $environ_sizes_get (i32.const 1024) (i32.const 1028))) (i32.load (i32.const 1028)))`
	wallSecond = `(block (result i32) (drop (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 1024))) (i32.wrap_i64 (i64.div_u (i64.load (i32.const 1024)) (i64.const 1000000000))))`
	monoMillis = `(block (result i32) (drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 1024))) (i32.wrap_i64 (i64.div_u (i64.load (i32.const 1024)) (i64.const 1000000))))`
	randomGet  = `(call $random_get (i32.const 1024) (i32.const 16))`
	// openConfig opens config.txt in the preopen fd 3; its fd is at 1040.
	openConfig = `(call $path_open (i32.const 3) (i32.const 0) (i32.const 528) (i32.const 10) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 1040))`
	readConfig = `(block (result i32) (i32.store (i32.const 1048) (i32.const 2048)) (i32.store (i32.const 1052) (i32.const 64)) (call $fd_read (i32.load (i32.const 1040)) (i32.const 1048) (i32.const 1) (i32.const 1056)))`
	readdirTop = `(call $fd_readdir (i32.const 3) (i32.const 2048) (i32.const 256) (i64.const 0) (i32.const 1056))`
)

// runGuest runs bin in process with the grants of cfg and the preopens
// fsys, as the sandbox links it, and returns the u32s it writes.
func runGuest(t *testing.T, bin []byte, cfg guestConfig, fsys []experimentalsys.FS) []uint32 {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	if err := instantiateHost(ctx, rt); err != nil {
		t.Fatal(err)
	}
	g := newGuest(cfg, fsys)
	var out bytes.Buffer
	_, err := rt.InstantiateWithConfig(withGuest(ctx, g), bin, g.moduleConfig(nil, &out, io.Discard))
	var exit *sys.ExitError
	if err != nil && (!errors.As(err, &exit) || exit.ExitCode() != 0) {
		t.Fatalf("run: %v", err)
	}
	vals := make([]uint32, out.Len()/4)
	if err := binary.Read(&out, binary.LittleEndian, vals); err != nil {
		t.Fatal(err)
	}
	return vals
}

// The WASI errnos the drops make calls return.
const (
	errnoBadf = 8
	errnoIO   = 29
	errnoPerm = 63
)

func TestDrops(t *testing.T) {
	state := t.TempDir()
	if err := os.WriteFile(filepath.Join(state, "config.txt"), []byte("mode=demo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	year2023 := uint32(time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC).Unix())
	tests := []struct {
		name  string
		cfg   guestConfig
		calls []string
		check func(t *testing.T, v []uint32)
	}{
		{"env", guestConfig{Env: map[string]string{"A": "1", "BB": "22"}}, []string{envCount, envSize, `(call $drop_env)`, envCount, envSize},
			func(t *testing.T, v []uint32) {
				if !slices.Equal(v, []uint32{2, 4 + 6, 0, 0, 0}) {
					t.Errorf("env count, size, drop, count, size = %v; want 2 10 0 0 0", v)
				}
			}},
		{"real clock", guestConfig{Clock: true}, []string{wallSecond, monoMillis, `(call $drop_clock)`, wallSecond, monoMillis, monoMillis},
			func(t *testing.T, v []uint32) {
				if v[0] < year2023 || v[2] != 0 || v[3] >= year2023 || v[4] < v[1] || v[5] <= v[4]-1 {
					t.Errorf("wall, mono, drop, wall, mono, mono = %v: want a real wall clock, then a fake one, and a monotonic clock that goes on", v)
				}
			}},
		{"fake clock without the grant", guestConfig{}, []string{wallSecond, `(call $drop_clock)`, wallSecond},
			func(t *testing.T, v []uint32) {
				if v[0] != uint32(fakeWallEpoch/1e9) || v[2] != uint32(fakeWallEpoch/1e9) {
					t.Errorf("wall = %v, want the fake clock's %d", v, fakeWallEpoch/1e9)
				}
			}},
		{"random", guestConfig{Random: true}, []string{randomGet, `(call $drop_random)`, randomGet},
			func(t *testing.T, v []uint32) {
				if !slices.Equal(v, []uint32{0, 0, errnoIO}) {
					t.Errorf("random_get, drop, random_get = %v, want 0 0 %d (EIO)", v, errnoIO)
				}
			}},
		{"mount", guestConfig{Mounts: []guestMount{{Guest: "/", State: true}}}, []string{
			openConfig, readConfig, `(call $drop_mount (i32.const 520) (i32.const 5))`,
			`(call $drop_mount (i32.const 513) (i32.const 0))`, `(call $drop_mount (i32.const 70000) (i32.const 4))`,
			`(call $drop_mount (i32.const 512) (i32.const 1))`, `(call $drop_mount (i32.const 512) (i32.const 1))`,
			readConfig, openConfig, readdirTop,
		}, func(t *testing.T, v []uint32) {
			want := []uint32{0, 0, errnoNoent, errnoInval, errnoFault, 0, 0, errnoBadf, errnoPerm, errnoBadf}
			if !slices.Equal(v, want) {
				t.Errorf("open, read, drop /nope, drop \"\", drop out of memory, drop /, drop / again, read, open, readdir = %v,\nwant %v", v, want)
			}
		}},
		{"all", guestConfig{Env: map[string]string{"A": "1"}, Clock: true, Mounts: []guestMount{{Guest: "/", State: true}}},
			[]string{`(call $drop_all)`, envCount, openConfig, randomGet, wallSecond},
			func(t *testing.T, v []uint32) {
				if v[0] != 0 || v[1] != 0 || v[2] != errnoPerm || v[3] != errnoIO || v[4] >= year2023 {
					t.Errorf("drop_all, env count, open, random_get, wall = %v: want everything gone", v)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fsys []experimentalsys.FS
			for range tt.cfg.Mounts {
				fsys = append(fsys, stateFS(state, true))
			}
			v := runGuest(t, wat2wasm(t, callsModule(tt.calls...)), tt.cfg, fsys)
			if len(v) != len(tt.calls) {
				t.Fatalf("%d results, want %d", len(v), len(tt.calls))
			}
			tt.check(t, v)
		})
	}
}

// TestNoNetwork: an instance has no socket: accepting on any fd fails.
func TestNoNetwork(t *testing.T) {
	var calls []string
	for fd := range 8 {
		calls = append(calls, fmt.Sprintf("(call $sock_accept (i32.const %d) (i32.const 0) (i32.const 1024))", fd))
	}
	cfg := guestConfig{Clock: true, Random: true, Mounts: []guestMount{{Guest: "/", State: true}}}
	v := runGuest(t, wat2wasm(t, callsModule(calls...)), cfg, []experimentalsys.FS{stateFS(t.TempDir(), false)})
	for fd, errno := range v {
		if errno == 0 {
			t.Errorf("sock_accept(%d) succeeded", fd)
		}
	}
}

// TestRandomSource: without the random permission, a module's random
// numbers are the same on every run, and a spec's seed chooses another
// sequence; with it, they come from the host.
func TestRandomSource(t *testing.T) {
	read := func(cfg guestConfig) []byte {
		b := make([]byte, 32)
		if _, err := io.ReadFull(newGuest(cfg, nil).randSource(), b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(read(guestConfig{}), read(guestConfig{})) {
		t.Error("the default seed gives different sequences")
	}
	if !bytes.Equal(read(guestConfig{RandomSeed: "s1"}), read(guestConfig{RandomSeed: "s1"})) {
		t.Error("one seed gives different sequences")
	}
	if bytes.Equal(read(guestConfig{RandomSeed: "s1"}), read(guestConfig{RandomSeed: "s2"})) || bytes.Equal(read(guestConfig{RandomSeed: "s1"}), read(guestConfig{})) {
		t.Error("different seeds give the same sequence")
	}
	if bytes.Equal(read(guestConfig{Random: true}), read(guestConfig{Random: true})) {
		t.Error("the host's random numbers repeat")
	}
}

// TestDropExamples: the examples of docs/wasm-abi.md, Go and WAT, run as
// instances: each reads its config from its state, drops the filesystem,
// fails to read it again, handles that and goes on.
func TestDropExamples(t *testing.T) {
	r := newRuntime(t, nil)
	wat := filepath.Join(t.TempDir(), "drop.wasm")
	src, err := os.ReadFile("../../../examples/wasm-drop/drop.wat")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wat, wat2wasm(t, string(src)), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, module string
		perms        []string
		wantExit     int
		want         []string
	}{
		{"go", modules["app-drop"], []string{sdk.PermStateWrite, sdk.PermClock, sdk.PermRandom}, 0, []string{
			"config: mode=demo", "dropped the state at /", "dropped env", "dropped clock", "dropped random",
			"config after the drop: open config.txt: Operation not permitted",
			"write after the drop: open note.txt: Operation not permitted",
			"year after the drop: 2022", "still running",
		}},
		{"wat", wat, []string{sdk.PermStateRead}, errnoPerm, []string{"mode=demo", "dropped /", "config unreadable after the drop"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			state := stateDir(t)
			if err := os.WriteFile(filepath.Join(state, "config.txt"), []byte("mode=demo\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			req := request(t, "tiny", tt.perms...)
			req.Artifact.Module = tt.module
			req.Mounts = []sdk.Mount{{Source: state, Target: "/", Type: sdk.MountDir, State: true}}
			st, out := run(t, r, req)
			if st.State != sdk.StateExited || st.ExitCode != tt.wantExit {
				t.Errorf("status = %+v, want exit code %d", st, tt.wantExit)
			}
			if got := strings.Split(strings.TrimSpace(out), "\n"); !slices.Equal(got, tt.want) {
				t.Errorf("stdout:\n%s\nwant:\n%s", out, strings.Join(tt.want, "\n"))
			}
			if _, err := os.Stat(filepath.Join(state, "note.txt")); err == nil {
				t.Error("a file was written after the drop")
			}
		})
	}
}

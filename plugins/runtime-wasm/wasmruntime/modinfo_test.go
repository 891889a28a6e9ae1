package wasmruntime

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/sdktest"
)

// wasmBuilder assembles binary modules for tests, section by section.
type wasmBuilder struct{ buf []byte }

func newWasm() *wasmBuilder {
	return &wasmBuilder{buf: []byte("\x00asm\x01\x00\x00\x00")}
}

func leb(n uint64) []byte {
	var b []byte
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n != 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func wasmName(s string) []byte { return append(leb(uint64(len(s))), s...) }

// section appends a section with the given id and content.
func (w *wasmBuilder) section(id byte, content ...[]byte) *wasmBuilder {
	c := bytes.Join(content, nil)
	w.buf = append(append(append(w.buf, id), leb(uint64(len(c)))...), c...)
	return w
}

// funcType declares type 0, func() -> ().
func (w *wasmBuilder) funcType() *wasmBuilder { return w.section(1, []byte{1, 0x60, 0, 0}) }

// importFuncs imports functions of type 0, given as "module.name".
func (w *wasmBuilder) importFuncs(names ...string) *wasmBuilder {
	c := leb(uint64(len(names)))
	for _, n := range names {
		mod, name, _ := strings.Cut(n, ".")
		c = append(append(append(c, wasmName(mod)...), wasmName(name)...), 0, 0)
	}
	return w.section(sectionImport, c)
}

// memory defines a memory of min pages, and max pages unless max < 0.
func (w *wasmBuilder) memory(lo uint64, hi int64) *wasmBuilder {
	if hi < 0 {
		return w.section(sectionMemory, []byte{1, 0}, leb(lo))
	}
	return w.section(sectionMemory, []byte{1, 1}, leb(lo), leb(uint64(hi)))
}

// start defines function index idx (after the imports) as an empty _start,
// and exports it.
func (w *wasmBuilder) start(idx uint64) *wasmBuilder {
	w.section(3, []byte{1, 0})
	w.section(sectionExport, []byte{1}, wasmName("_start"), []byte{0}, leb(idx))
	return w.section(10, []byte{1, 2, 0, 0x0b})
}

func (w *wasmBuilder) bytes() []byte { return w.buf }

func TestScanModule(t *testing.T) {
	tests := []struct {
		name string
		bin  []byte
		// pages is the instance's memory limit (0: none).
		pages uint32
		// want is a part of the refusal, or "" for none; notWasm wants
		// errNotWasm, malformed another scan error.
		want               string
		notWasm, malformed bool
	}{
		{name: "tiny", bin: tinyModule},
		{name: "wasi imports", bin: newWasm().funcType().importFuncs("wasi_snapshot_preview1.fd_write", "wasi_snapshot_preview1.proc_exit").start(2).bytes()},
		{name: "kigumi imports", bin: newWasm().funcType().importFuncs("kigumi.drop_all", "kigumi.drop_env").start(2).bytes()},
		{name: "unknown import", bin: missingImportModule, want: `imports the function "env"."foo"`},
		{name: "unknown wasi function", bin: newWasm().funcType().importFuncs("wasi_snapshot_preview1.path_escape").start(1).bytes(), want: `"path_escape"`},
		{name: "unknown kigumi function", bin: newWasm().funcType().importFuncs("kigumi.grant_all").start(1).bytes(), want: `"grant_all"`},
		{name: "imported memory", bin: newWasm().section(sectionImport, []byte{1}, wasmName("env"), wasmName("memory"), []byte{2, 0, 1}).bytes(), want: `the memory "env"."memory"`},
		{name: "long import name", bin: newWasm().funcType().importFuncs("wasi_snapshot_preview1." + strings.Repeat("x", 100_000)).start(1).bytes(), want: `xxx..."`},
		{name: "no _start", bin: emptyModule, want: "exports no _start"},
		{name: "_start not a function", bin: newWasm().memory(1, -1).section(sectionExport, []byte{1}, wasmName("_start"), []byte{2, 0}).bytes(), want: "exports no _start"},
		{name: "memory minimum over the limit", bin: newWasm().funcType().memory(17, -1).start(0).bytes(), pages: 16, want: "needs at least 1.1 MiB of memory, more than the instance's memory limit of 1.0 MiB"},
		{name: "memory minimum at the limit", bin: newWasm().funcType().memory(16, -1).start(0).bytes(), pages: 16},
		{name: "memory maximum over the limit", bin: newWasm().funcType().memory(1, 17).start(0).bytes(), pages: 16, want: "declares a memory maximum of 1.1 MiB"},
		{name: "memory without maximum", bin: newWasm().funcType().memory(1, -1).start(0).bytes(), pages: 16},
		{name: "memory over wasm32", bin: newWasm().funcType().memory(1<<40, -1).start(0).bytes(), want: "1099511627776 pages"},
		{name: "not wasm", bin: []byte("#!/bin/sh\necho hi\n"), notWasm: true},
		{name: "empty file", bin: nil, notWasm: true},
		{name: "wasm version 2", bin: []byte("\x00asm\x02\x00\x00\x00"), notWasm: true},
		{name: "truncated section", bin: append(newWasm().bytes(), sectionImport, 10, 1), malformed: true},
		{name: "import count past the section", bin: newWasm().section(sectionImport, leb(1000)).bytes(), malformed: true},
		{name: "overlong LEB128", bin: append(newWasm().bytes(), 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01), malformed: true},
		{name: "bad import kind", bin: newWasm().section(sectionImport, []byte{1}, wasmName("a"), wasmName("b"), []byte{9, 0}).bytes(), malformed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := scanModule(bytes.NewReader(tt.bin), servedImport)
			switch {
			case tt.notWasm:
				if !errors.Is(err, errNotWasm) {
					t.Fatalf("scan = %v, want errNotWasm", err)
				}
				return
			case tt.malformed:
				if err == nil || errors.Is(err, errNotWasm) {
					t.Fatalf("scan = %v, want a malformed module", err)
				}
				return
			case err != nil:
				t.Fatalf("scan: %v", err)
			}
			err = info.check("/m.wasm", tt.pages)
			var e *sdk.Error
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("check = %v, want nil", err)
			case tt.want != "" && (!errors.As(err, &e) || e.Attribute != "module" || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("check = %v, want a refusal of module holding %q", err, tt.want)
			}
		})
	}
}

// TestWASIFunctionsServed: the WASI functions the scan lets through are
// exactly those wazero exports, and sorted for the binary search.
func TestWASIFunctionsServed(t *testing.T) {
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		t.Fatal(err)
	}
	var exported []string
	for name := range rt.Module(wasiModule).ExportedFunctionDefinitions() {
		exported = append(exported, name)
	}
	slices.Sort(exported)
	if !slices.Equal(exported, wasiFunctions) {
		t.Errorf("wazero exports %v,\nthe scan serves %v", exported, wasiFunctions)
	}
}

// TestScanModuleBounded: a 30 MB module (one function of megabytes of
// arithmetic, or a million imports) is scanned in a linear pass, in memory
// independent of its size; the code section is skipped unread.
func TestScanModuleBounded(t *testing.T) {
	body := bytes.Repeat([]byte{0x42, 0x01, 0x42, 0x02, 0x7c, 0x1a}, 5<<20) // i64.const 1; i64.const 2; i64.add; drop
	code := append(append([]byte{1}, leb(uint64(len(body)+3))...), append(append([]byte{0}, body...), 0x0b)...)
	huge := newWasm().funcType().section(3, []byte{1, 0}).memory(1, -1).
		section(sectionExport, []byte{1}, wasmName("_start"), []byte{0, 0}).section(10, code).bytes()
	var imports []string
	for range 1_000_000 {
		imports = append(imports, "wasi_snapshot_preview1.fd_write")
	}
	many := newWasm().funcType().importFuncs(imports...).start(1_000_000).bytes()
	for name, bin := range map[string][]byte{"huge code": huge, "many imports": many} {
		t.Run(name, func(t *testing.T) {
			if len(bin) < 25<<20 {
				t.Fatalf("module is only %d bytes", len(bin))
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			info, err := scanModule(bytes.NewReader(bin), servedImport)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			if err := info.check("/huge.wasm", 0); err != nil {
				t.Errorf("check = %v", err)
			}
			// Allocation: the read buffer and short names, not the module.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
				t.Errorf("scan allocated %d bytes", alloc)
			}
			t.Logf("%d bytes scanned in %v", len(bin), took)
		})
	}
}

// TestValidateModule: Validate refuses, on the module attribute and without
// compiling, each module the scan refuses, and accepts the test programs.
func TestValidateModule(t *testing.T) {
	r := newRuntime(t, nil)
	rt := sdktest.Runtime(t, r)
	dir := t.TempDir()
	write := func(name string, bin []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bin, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name   string
		module string
		memory int64
		want   string // "" for valid
	}{
		{"go program", modules["echo"], 0, ""},
		{"not wasm", modules["garbage"], 0, "not a WebAssembly module"},
		{"unknown import", modules["missing-import"], 0, `imports the function "env"."foo"`},
		{"no _start", modules["empty"], 0, "exports no _start"},
		{"memory over the limit", write("big.wasm", newWasm().funcType().memory(64, -1).start(0).bytes()), 2 << 20, "needs at least 4.0 MiB"},
		{"malformed", write("cut.wasm", tinyModule[:20]), 0, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(t, "tiny")
			req.RunDir, req.Cgroup = "", sdk.Cgroup{}
			req.Artifact.Module = tt.module
			if tt.memory > 0 {
				req.Resources.MemoryBytes = tt.memory
			}
			err := rt.Validate(context.Background(), req)
			var e *sdk.Error
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tt.want != "" && (!errors.As(err, &e) || e.Code != sdk.CodeInvalid || e.Attribute != "module" || !strings.Contains(e.Message, tt.want)):
				t.Errorf("Validate = %v, want invalid module holding %q", err, tt.want)
			}
		})
	}
}

func FuzzScanModule(f *testing.F) {
	for _, seed := range [][]byte{tinyModule, missingImportModule, trapModule, emptyModule,
		newWasm().funcType().importFuncs("kigumi.drop_all").memory(1, 2).start(1).bytes()} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, bin []byte) {
		info, err := scanModule(io.MultiReader(bytes.NewReader(bin)), servedImport)
		if err != nil {
			return
		}
		// A module the scan passes is checked without panicking, and
		// whatever it names stays short.
		if err := info.check("/m.wasm", 1); err != nil && len(err.Error()) > 4096 {
			t.Errorf("refusal of %d bytes", len(err.Error()))
		}
	})
}

package wasmruntime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"testing"

	"github.com/tetratelabs/wazero"
)

// BenchmarkInstantiate measures the core of what a sandbox does per
// instance: instantiating a compiled module with the instance's config.
// "wazero-default" seeds a math/rand source per instance; the others are the
// sandbox's configs without and with the random permission. Each builds its
// config per instance, as the sandbox does.
func BenchmarkInstantiate(b *testing.B) {
	configs := []struct {
		name string
		cfg  func() wazero.ModuleConfig
	}{
		{"wazero-default", func() wazero.ModuleConfig { return wazero.NewModuleConfig().WithName("") }},
		{"deterministic", func() wazero.ModuleConfig {
			return newGuest(guestConfig{Argv0: "bench"}, nil).moduleConfig(nil, io.Discard, io.Discard)
		}},
		{"crypto-rand", func() wazero.ModuleConfig {
			return newGuest(guestConfig{Argv0: "bench", Random: true}, nil).moduleConfig(nil, io.Discard, io.Discard)
		}},
	}
	for _, engine := range []string{"compiler", "interpreter"} {
		ctx := context.Background()
		rt := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(engine == "interpreter", 0, nil))
		compiled, err := rt.CompileModule(ctx, tinyModule)
		if err != nil {
			b.Fatal(err)
		}
		for _, c := range configs {
			b.Run(engine+"/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					mod, err := rt.InstantiateModule(ctx, compiled, c.cfg())
					if err != nil {
						b.Fatal(err)
					}
					mod.Close(ctx)
				}
			})
		}
		rt.Close(ctx)
	}
}

// BenchmarkScanModule measures the validate-time scan of a 30 MB module
// (one function of megabytes of arithmetic), against a baseline of hashing
// the same bytes with sha256, which Validate does anyway: both are one
// linear pass.
func BenchmarkScanModule(b *testing.B) {
	body := bytes.Repeat([]byte{0x42, 0x01, 0x42, 0x02, 0x7c, 0x1a}, 5<<20)
	code := append(append([]byte{1}, leb(uint64(len(body)+3))...), append(append([]byte{0}, body...), 0x0b)...)
	bin := newWasm().funcType().section(3, []byte{1, 0}).memory(1, -1).
		section(sectionExport, []byte{1}, wasmName("_start"), []byte{0, 0}).section(10, code).bytes()
	b.Run("scan", func(b *testing.B) {
		b.SetBytes(int64(len(bin)))
		for b.Loop() {
			if _, err := scanModule(bytes.NewReader(bin), servedImport); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sha256-baseline", func(b *testing.B) {
		b.SetBytes(int64(len(bin)))
		for b.Loop() {
			sha256.Sum256(bin)
		}
	})
}

package wasmruntime

import (
	"context"
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

package wasmruntime

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

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
		rt := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(engine == "interpreter", 0, false, nil))
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

// BenchmarkCompile measures compiling the quickstart's Go module (about
// 2 MB) as a sandbox does: "cold" with an empty compilation cache, "cached"
// from a filled one, each in a new wazero runtime.
func BenchmarkCompile(b *testing.B) {
	bin, err := os.ReadFile(modules["app"])
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	compile := func(b *testing.B, dir string) {
		cache, err := wazero.NewCompilationCacheWithDir(dir)
		if err != nil {
			b.Fatal(err)
		}
		rt := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(false, 0, false, cache))
		if _, err := rt.CompileModule(ctx, bin); err != nil {
			b.Fatal(err)
		}
		rt.Close(ctx)
		cache.Close(ctx)
	}
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			compile(b, b.TempDir())
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/compile")
	})
	b.Run("cached", func(b *testing.B) {
		dir := b.TempDir()
		compile(b, dir)
		b.ResetTimer()
		for b.Loop() {
			compile(b, dir)
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/compile")
	})
}

// BenchmarkInstantiateLatency reports the p50 and p99 of instantiating the
// tiny module, compiled, with the sandbox's config (random granted), and
// with wazero's default config as the baseline.
func BenchmarkInstantiateLatency(b *testing.B) {
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(false, 0, false, nil))
	defer rt.Close(ctx)
	compiled, err := rt.CompileModule(ctx, tinyModule)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cfg  func() wazero.ModuleConfig
	}{
		{"wazero-default", func() wazero.ModuleConfig { return wazero.NewModuleConfig().WithName("") }},
		{"sandbox", func() wazero.ModuleConfig {
			return newGuest(guestConfig{Argv0: "bench", Random: true}, nil).moduleConfig(nil, io.Discard, io.Discard)
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var took []time.Duration
			for b.Loop() {
				t0 := time.Now()
				mod, err := rt.InstantiateModule(ctx, compiled, c.cfg())
				took = append(took, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				mod.Close(ctx)
			}
			reportPercentiles(b, took, "us", time.Microsecond)
		})
	}
}

// BenchmarkSandboxStart measures Start of the tiny module, from the request
// to a sandbox that has compiled (from the cache) and linked it, as root
// with a cgroup and the nobody user; each instance is destroyed after. The
// baseline is starting and reaping /bin/true, the floor of any process.
func BenchmarkSandboxStart(b *testing.B) {
	ctx := context.Background()
	r := newRuntime(b, nil)
	var took, spawned []time.Duration
	for b.Loop() {
		req := request(b, "tiny")
		t0 := time.Now()
		h, err := r.Start(ctx, req)
		took = append(took, time.Since(t0))
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		t0 = time.Now()
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
		spawned = append(spawned, time.Since(t0))
		if err := r.Destroy(ctx, h); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	reportPercentiles(b, took, "ms", time.Millisecond)
	slices.Sort(spawned)
	b.ReportMetric(float64(spawned[len(spawned)/2])/float64(time.Millisecond), "exec-p50-ms")
}

// reportPercentiles reports the p50 and p99 of took in unit.
func reportPercentiles(b *testing.B, took []time.Duration, unit string, d time.Duration) {
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2])/float64(d), "p50-"+unit)
	b.ReportMetric(float64(took[len(took)*99/100])/float64(d), "p99-"+unit)
}

package wasmruntime

import (
	"context"
	"path"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// The kigumi host module: functions by which a running instance gives up,
// for the rest of its life, what it was granted (docs/wasm-abi.md). Each
// returns a WASI errno; a drop is never undone, and dropping twice is no
// error.
var hostFunctions = []struct {
	name   string
	params []string
	fn     func(g *guest, mod api.Module, stack []uint64) uint64
}{
	{"drop_mount", []string{"path", "path_len"}, func(g *guest, mod api.Module, stack []uint64) uint64 {
		b, ok := mod.Memory().Read(uint32(stack[0]), uint32(stack[1]))
		switch {
		case !ok:
			return errnoFault
		case len(b) == 0 || b[0] != '/' || path.Clean(string(b)) != string(b):
			return errnoInval
		case !g.dropMount(string(b)):
			return errnoNoent
		}
		return errnoSuccess
	}},
	{"drop_fs", nil, func(g *guest, _ api.Module, _ []uint64) uint64 { g.dropFS(); return errnoSuccess }},
	{"drop_env", nil, func(g *guest, _ api.Module, _ []uint64) uint64 { g.envGone.Store(true); return errnoSuccess }},
	{"drop_clock", nil, func(g *guest, _ api.Module, _ []uint64) uint64 { g.clockGone.Store(true); return errnoSuccess }},
	{"drop_random", nil, func(g *guest, _ api.Module, _ []uint64) uint64 { g.randomGone.Store(true); return errnoSuccess }},
	{"drop_all", nil, func(g *guest, _ api.Module, _ []uint64) uint64 { g.dropAll(); return errnoSuccess }},
}

// hostFunctionNames lists the kigumi module's functions.
func hostFunctionNames() []string {
	names := make([]string, len(hostFunctions))
	for i, f := range hostFunctions {
		names[i] = f.name
	}
	return names
}

// instantiateKigumi instantiates the kigumi host module in rt. Its
// functions act on the guest of the context they are called in.
func instantiateKigumi(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(hostModule)
	for _, f := range hostFunctions {
		params := make([]api.ValueType, len(f.params))
		for i := range params {
			params[i] = api.ValueTypeI32
		}
		b.NewFunctionBuilder().
			WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
				g := guestOf(ctx)
				if g == nil {
					stack[0] = errnoNosys
					return
				}
				stack[0] = f.fn(g, mod, stack)
			}), params, []api.ValueType{api.ValueTypeI32}).
			WithParameterNames(f.params...).
			Export(f.name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

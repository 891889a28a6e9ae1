//go:build wasip1

package main

// The functions of Kigumi's host module "kigumi" (docs/wasm-abi.md). Each
// returns a WASI errno: 0 on success.

//go:wasmimport kigumi drop_fs
func dropFS() uint32

//go:wasmimport kigumi drop_env
func dropEnv() uint32

//go:wasmimport kigumi drop_clock
func dropClock() uint32

//go:wasmimport kigumi drop_random
func dropRandom() uint32

//go:build wasip1

package main

// The functions of Kigumi's host module "kigumi" (docs/wasm-abi.md). Each
// returns a WASI errno: 0 on success.

import "unsafe"

//go:wasmimport kigumi drop_mount
func dropMount(path unsafe.Pointer, n uint32) uint32

// dropMountAt gives up the preopen at the guest path p.
func dropMountAt(p string) uint32 {
	b := []byte(p)
	return dropMount(unsafe.Pointer(&b[0]), uint32(len(b)))
}

//go:wasmimport kigumi drop_env
func dropEnv() uint32

//go:wasmimport kigumi drop_clock
func dropClock() uint32

//go:wasmimport kigumi drop_random
func dropRandom() uint32

//go:build !wasip1

package main

// errnoNosys is WASI's ENOSYS: outside WebAssembly there is no host module.
const errnoNosys = 52

func dropMountAt(string) uint32 { return errnoNosys }
func dropEnv() uint32           { return errnoNosys }
func dropClock() uint32         { return errnoNosys }
func dropRandom() uint32        { return errnoNosys }

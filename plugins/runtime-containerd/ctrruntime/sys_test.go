package ctrruntime

import (
	"os"
	"syscall"
)

// fileUID is the owner of fi.
func fileUID(fi os.FileInfo) uint32 { return fi.Sys().(*syscall.Stat_t).Uid }

// Command hostile is a WASI workload that does what a hostile tenant does to
// its state: it builds a directory tree -depth levels deep (without ever
// using a long path: it makes a new top directory and moves the tree so far
// into it, over and over) and fills one directory with -files empty files.
// Then it prints "hostile: done" and sleeps, so the tests can destroy it.
// With -fill it does nothing of that: it writes /fill until the volume is
// full (ENOSPC), prints "hostile: full", and sleeps. Its state is at /.
//
// Build it with GOOS=wasip1 GOARCH=wasm go build.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	depth := flag.Int("depth", 1000, "levels of the deep tree")
	files := flag.Int("files", 1000, "entries of the wide directory")
	fill := flag.Bool("fill", false, "write until the volume is full instead")
	flag.Parse()
	if *fill {
		err := fillState()
		fmt.Println("hostile: full:", err)
		for {
			time.Sleep(time.Hour)
		}
	}
	if err := run(*depth, *files); err != nil {
		fmt.Fprintln(os.Stderr, "hostile:", err)
		os.Exit(1)
	}
	fmt.Println("hostile: done")
	for {
		time.Sleep(time.Hour)
	}
}

// fillState writes to /fill, in its state, until a write fails, and returns that
// failure (ENOSPC once the volume is full).
func fillState() error {
	f, err := os.OpenFile("/fill", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i) | 1 // not zeros: nothing may store it sparse
	}
	for {
		if _, err := f.Write(chunk); err != nil {
			return err
		}
	}
}

func run(depth, files int) error {
	start := time.Now()
	const deep, tmp = "/deep", "/deep.next"
	if err := os.Mkdir(deep, 0o700); err != nil && !os.IsExist(err) {
		return err
	}
	for i := 1; i < depth; i++ {
		if err := os.Mkdir(tmp, 0o700); err != nil {
			return err
		}
		if err := os.Rename(deep, tmp+"/d"); err != nil {
			return err
		}
		if err := os.Rename(tmp, deep); err != nil {
			return err
		}
	}
	fmt.Printf("hostile: %d levels in %v\n", depth, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	const wide = "/wide"
	if err := os.Mkdir(wide, 0o700); err != nil && !os.IsExist(err) {
		return err
	}
	for i := 0; i < files; i++ {
		f, err := os.OpenFile(wide+"/"+strconv.Itoa(i), os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		f.Close()
	}
	fmt.Printf("hostile: %d files in %v\n", files, time.Since(start).Round(time.Millisecond))
	// A file nobody may read or write, in a directory nobody may enter.
	if err := os.WriteFile("/locked", nil, 0o000); err != nil {
		return err
	}
	return os.Chmod(wide, 0o000)
}

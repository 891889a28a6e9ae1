// Command fsprobe tries each "read:PATH", "write:PATH" or
// "symlink:TARGET=LINK" argument, prints how it went, and exits with the
// number of operations that succeeded.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	ok := 0
	for _, a := range os.Args[1:] {
		op, path, _ := strings.Cut(a, ":")
		var err error
		switch op {
		case "write":
			err = os.WriteFile(path, []byte("written\n"), 0o600)
		case "symlink":
			target, link, _ := strings.Cut(path, "=")
			err = os.Symlink(target, link)
		default:
			_, err = os.ReadFile(path)
		}
		if err != nil {
			fmt.Printf("%s %s: %v\n", op, path, err)
			continue
		}
		fmt.Printf("%s %s: ok\n", op, path)
		ok++
	}
	os.Exit(ok)
}

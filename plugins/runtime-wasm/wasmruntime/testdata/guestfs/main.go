// Command guestfs does what its arguments say, one operation each, and
// prints how each went: what a WASI program does with its files, stdin and
// argv. It exits with the number of operations that failed, or with N
// after "exit:N".
//
//	ls:DIR        list DIR, sorted, with each entry's kind
//	cat:FILE      print FILE
//	write:FILE=S  write S to FILE
//	append:FILE=S append S to FILE
//	mkdir:DIR     make DIR
//	rm:PATH       remove PATH
//	mv:OLD=NEW    rename OLD to NEW
//	stat:PATH     print PATH's kind, size and permissions
//	symlink:T=L   make L a symlink to T
//	stdin         print what stdin holds
//	argv0         print argv[0]
//	cwd           print the working directory
//	exit:N        exit with N
package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

func main() {
	failed := 0
	for _, a := range os.Args[1:] {
		op, arg, _ := strings.Cut(a, ":")
		out, err := do(op, arg)
		if err != nil {
			failed++
			fmt.Printf("%s: error: %v\n", a, err)
			continue
		}
		fmt.Printf("%s: %s\n", a, out)
	}
	os.Exit(failed)
}

func do(op, arg string) (string, error) {
	left, right, _ := strings.Cut(arg, "=")
	switch op {
	case "ls":
		entries, err := os.ReadDir(arg)
		if err != nil {
			return "", err
		}
		var names []string
		for _, e := range entries {
			kind := "f"
			switch {
			case e.IsDir():
				kind = "d"
			case e.Type()&os.ModeSymlink != 0:
				kind = "l"
			}
			names = append(names, kind+" "+e.Name())
		}
		slices.Sort(names)
		return strings.Join(names, ", "), nil
	case "cat":
		b, err := os.ReadFile(arg)
		return strconv.Quote(string(b)), err
	case "write":
		return "ok", os.WriteFile(left, []byte(right), 0o644)
	case "append":
		f, err := os.OpenFile(left, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return "", err
		}
		_, err = f.WriteString(right)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return "ok", err
	case "mkdir":
		return "ok", os.Mkdir(arg, 0o755)
	case "rm":
		return "ok", os.Remove(arg)
	case "mv":
		return "ok", os.Rename(left, right)
	case "stat":
		fi, err := os.Lstat(arg)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%v %d", fi.Mode(), fi.Size()), nil
	case "symlink":
		return "ok", os.Symlink(left, right)
	case "stdin":
		b, err := io.ReadAll(os.Stdin)
		return strconv.Quote(string(b)), err
	case "argv0":
		return os.Args[0], nil
	case "cwd":
		return os.Getwd()
	case "exit":
		n, err := strconv.Atoi(arg)
		if err != nil {
			return "", err
		}
		os.Exit(n)
	}
	return "", fmt.Errorf("unknown operation %q", op)
}

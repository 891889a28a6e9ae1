// Command app is the quickstart's WASI workload. It greets, counts its runs
// in the file counter of its state (mounted at /), then prints a heartbeat every -interval, counting each
// one too, and exits after -ticks heartbeats (0: never).
//
// Build it with GOOS=wasip1 GOARCH=wasm go build.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"
)

const counterFile = "counter"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(1)
	}
}

func run() error {
	name := flag.String("name", os.Args[0], "who to greet as")
	interval := flag.Duration("interval", 2*time.Second, "time between heartbeats")
	ticks := flag.Int("ticks", 0, "heartbeats before exiting; 0 for never")
	flag.Parse()

	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "Hello"
	}
	fmt.Printf("%s from %s!\n", greeting, *name)

	n, err := readCounter()
	if err != nil {
		return err
	}
	n++
	if err := writeCounter(n); err != nil {
		return err
	}
	fmt.Println("run", n)

	for i := 1; *ticks == 0 || i <= *ticks; i++ {
		time.Sleep(*interval)
		n++
		if err := writeCounter(n); err != nil {
			return err
		}
		fmt.Printf("heartbeat %d: counter %d\n", i, n)
	}
	return nil
}

// readCounter returns the stored counter, 0 if there is none yet.
func readCounter() (int, error) {
	b, err := os.ReadFile(counterFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// writeCounter stores n atomically: a reader sees the old or the new value.
func writeCounter(n int) error {
	tmp := counterFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(n)+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, counterFile)
}

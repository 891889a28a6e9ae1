// Command app shows a workload that gives up what it no longer needs: it
// reads its config from its state, then drops its state, its env, its
// clocks and its random source through Kigumi's host module (see
// docs/wasm-abi.md), for good. Trying to read its config again fails
// cleanly, and it carries on without it. (It reads no random numbers after
// dropping them: Go's crypto/rand ends a program that cannot get any.)
//
// Build it with GOOS=wasip1 GOARCH=wasm go build; elsewhere the drops
// report that the host module is missing.
package main

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// configFile is read from the instance's state, mounted at /.
const configFile = "config.txt"

func main() {
	config, err := os.ReadFile(configFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "app: read config:", err)
		os.Exit(1)
	}
	fmt.Printf("config: %s\n", strings.TrimSpace(string(config)))

	// The contract with its future self: nothing below reads a file, the
	// env, the time or host entropy again.
	for _, d := range []struct {
		what string
		drop func() uint32
	}{
		{"the state at /", func() uint32 { return dropMountAt("/") }},
		{"env", dropEnv},
		{"clock", dropClock},
		{"random", dropRandom},
	} {
		if errno := d.drop(); errno != 0 {
			fmt.Fprintf(os.Stderr, "app: drop %s: errno %d\n", d.what, errno)
			os.Exit(1)
		}
		fmt.Println("dropped", d.what)
	}

	if _, err := os.ReadFile(configFile); err != nil {
		fmt.Println("config after the drop:", err)
	} else {
		fmt.Println("config after the drop: still readable")
	}
	if err := os.WriteFile("note.txt", []byte("x"), 0o644); err != nil {
		fmt.Println("write after the drop:", err)
	}
	fmt.Println("year after the drop:", time.Now().UTC().Year())
	fmt.Println("still running")
}

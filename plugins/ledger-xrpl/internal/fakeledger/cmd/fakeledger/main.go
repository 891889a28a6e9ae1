// Command fakeledger runs the fake ledger, a TEST DOUBLE of a rippled
// WebSocket endpoint, as a process of its own: for end-to-end tests and
// demonstrations of the ledger market on one machine. It is no ledger:
// nothing it validates is real.
//
// It prints one line, "fakeledger: TEST DOUBLE of rippled listening on
// URL", then serves until it gets SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/internal/fakeledger"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "loopback address to listen on")
	interval := flag.Duration("close", time.Second, "interval at which ledgers close")
	fund := flag.String("fund", "", "comma-separated accounts to credit at start")
	drops := flag.Uint64("drops", 1_000_000_000, "drops credited to each account of -fund")
	flag.Parse()
	if *interval <= 0 {
		fmt.Fprintln(os.Stderr, "fakeledger: -close must be positive")
		os.Exit(2)
	}
	srv, err := fakeledger.Listen(*listen, fakeledger.AutoClose(*interval))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, a := range strings.Split(*fund, ",") {
		if a = strings.TrimSpace(a); a != "" {
			srv.Fund(a, *drops)
		}
	}
	fmt.Printf("fakeledger: TEST DOUBLE of rippled listening on %s\n", srv.URL())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	srv.Close()
}

// Command fakeledger runs the fake ledger, a TEST DOUBLE of a rippled
// WebSocket endpoint, as a process of its own: for end-to-end tests and
// demonstrations of the ledger market on one machine. It is no ledger:
// nothing it validates is real.
//
// It prints one line, "fakeledger: TEST DOUBLE of rippled listening on
// URL", then serves until it gets SIGINT or SIGTERM. Its fault flags
// (-hold-memo, -drop-mid-stream) are for fault tests; with -hold-memo it
// prints "fakeledger: held the submit of HASH" for each submit it holds.
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
	holdMemo := flag.String("hold-memo", "", "hold (never answer) the first -hold-count submits carrying a memo of this MemoType")
	holdCount := flag.Int("hold-count", 1, "how many submits -hold-memo holds")
	holdApply := flag.Bool("hold-apply", false, "apply the held submits (only their answers are lost)")
	dropEvery := flag.Int("drop-mid-stream", 0, "drop a subscriber's connection midway through every nth ledger with transactions for it")
	flag.Parse()
	if *interval <= 0 {
		fmt.Fprintln(os.Stderr, "fakeledger: -close must be positive")
		os.Exit(2)
	}
	opts := []fakeledger.Option{fakeledger.AutoClose(*interval)}
	if *holdMemo != "" {
		opts = append(opts, fakeledger.HoldSubmits(*holdMemo, *holdCount, *holdApply, func(hash string) {
			fmt.Printf("fakeledger: held the submit of %s\n", hash)
		}))
	}
	if *dropEvery > 0 {
		opts = append(opts, fakeledger.DropMidStream(*dropEvery))
	}
	srv, err := fakeledger.Listen(*listen, opts...)
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

// Command ledger-xrpl is Kigumi's XRP Ledger lease plugin: it serves
// sdk.Ledger (package xrplledger) to the agent that starts it.
package main

import (
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/xrplledger"
)

func main() {
	logger := sdk.NewLogger()
	sdk.Serve(sdk.ServeOpts{Ledger: xrplledger.New(logger), Logger: logger})
}

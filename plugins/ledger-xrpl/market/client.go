// Package market is the tenant's side of the Kigumi lease market on the
// XRP Ledger (docs/ledger-protocol.md): a Client that lists hosts and
// their lease offers, buys a lease with an instance request sealed to the
// host, extends and terminates it, and reads the host's replies, opened
// with the tenant's message key. The host's side is package xrplledger;
// both build their transactions with xrplledger's builders and speak the
// memos of package memo. `kigumi lease` is its command line.
package market

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/Peersyst/xrpl-go/xrpl/queries/account"
	"github.com/Peersyst/xrpl-go/xrpl/queries/common"
	"github.com/Peersyst/xrpl-go/xrpl/queries/ledger"
	"github.com/Peersyst/xrpl-go/xrpl/transaction"
	"github.com/Peersyst/xrpl-go/xrpl/transaction/types"
	"github.com/Peersyst/xrpl-go/xrpl/wallet"
	"github.com/Peersyst/xrpl-go/xrpl/websocket"
	"github.com/Peersyst/xrpl-go/xrpl/websocket/interfaces"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
)

// Client is a tenant's connection to the market: its wallet, its message
// key (derived from the wallet) and a WebSocket connection to a rippled,
// clio or fake ledger server.
type Client struct {
	c   *websocket.Client
	w   wallet.Wallet
	key memo.Key
	// Poll is how often WaitReply looks for a reply.
	Poll time.Duration
}

// ErrBadURL is Dial's error for a URL that is not a WebSocket URL.
var ErrBadURL = errors.New("not a WebSocket URL")

// Dial connects to the server at url (ws:// or wss://) as the tenant of
// wallet w; with no wallet (the zero Wallet), it only reads the market.
func Dial(url string, w wallet.Wallet) (*Client, error) {
	if !strings.HasPrefix(url, "ws://") && !strings.HasPrefix(url, "wss://") {
		return nil, fmt.Errorf("%w: want ws://... or wss://..., not %.80q", ErrBadURL, url)
	}
	// Submissions wait for validation up to 400 × 250 ms, longer than the
	// 20 ledgers autofill gives a transaction.
	cfg := websocket.NewClientConfig().WithHost(url).WithMaxRetries(400).WithRetryDelay(250 * time.Millisecond).
		WithTimeout(30 * time.Second)
	c := &Client{c: websocket.NewClient(cfg), w: w, Poll: 500 * time.Millisecond}
	if w.PrivateKey != "" {
		var err error
		if c.key, err = MessageKey(w); err != nil {
			return nil, err
		}
	}
	if err := c.c.Connect(); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() { _ = c.c.Disconnect() }

// Address is the tenant's account.
func (c *Client) Address() string { return string(c.w.ClassicAddress) }

// Key is the tenant's message key, to which hosts seal their replies.
func (c *Client) Key() memo.Key { return c.key }

// TxError is a transaction validated with a result other than
// tesSUCCESS (a tec* code): its fee is charged and nothing else happened.
// xrpl-go reports such a transaction as no error; the Client does.
type TxError struct {
	Type, Hash, Result string
}

func (e *TxError) Error() string {
	return fmt.Sprintf("the %s %s was validated with result %s: it had no effect but its fee", e.Type, e.Hash, e.Result)
}

// request sends req and decodes its result into out (by JSON field
// names, keeping what xrpl-go's typed responses drop).
func (c *Client) request(req interfaces.Request, out any) error {
	res, err := c.c.Request(req)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(res.Result)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, out)
}

// validatedLedger returns the index of the last validated ledger.
func (c *Client) validatedLedger() (uint32, error) {
	var res struct {
		LedgerIndex uint32 `json:"ledger_index"`
	}
	if err := c.request(&ledger.Request{LedgerIndex: common.Validated}, &res); err != nil {
		return 0, fmt.Errorf("ledger: %w", err)
	}
	return res.LedgerIndex, nil
}

// Sent is a transaction of the tenant's, validated with tesSUCCESS.
type Sent struct {
	Hash   string `json:"tx"`
	Ledger uint32 `json:"ledger"`
}

// submit fills the transaction's sequence, fee and last ledger, signs it
// with the tenant's wallet, submits it and waits until it is validated. A
// validated result other than tesSUCCESS is a *TxError.
func (c *Client) submit(ctx context.Context, tx map[string]any) (Sent, error) {
	typ := fmt.Sprint(tx["TransactionType"])
	flat := transaction.FlatTransaction(tx)
	if err := c.c.Autofill(&flat); err != nil {
		return Sent{}, fmt.Errorf("autofill the %s: %w", typ, err)
	}
	blob, hash, err := c.w.Sign(flat)
	if err != nil {
		return Sent{}, fmt.Errorf("sign the %s: %w", typ, err)
	}
	res, err := c.c.SubmitTxBlobAndWaitContext(ctx, blob, false)
	if err != nil {
		return Sent{}, fmt.Errorf("submit the %s %s: %w", typ, hash, err)
	}
	if r := res.Meta.TransactionResult; r != "tesSUCCESS" {
		return Sent{}, &TxError{Type: typ, Hash: hash, Result: r}
	}
	return Sent{Hash: hash, Ledger: uint32(res.LedgerIndex)}, nil
}

// ledgerTx is a validated transaction of account_tx, in API version 2's
// shape.
type ledgerTx struct {
	Hash        string         `json:"hash"`
	LedgerIndex uint32         `json:"ledger_index"`
	Validated   bool           `json:"validated"`
	Tx          map[string]any `json:"tx_json"`
	Meta        struct {
		TransactionResult string `json:"TransactionResult"`
		AffectedNodes     []map[string]struct {
			LedgerEntryType string         `json:"LedgerEntryType"`
			LedgerIndex     string         `json:"LedgerIndex"`
			FinalFields     map[string]any `json:"FinalFields"`
		} `json:"AffectedNodes"`
	} `json:"meta"`
}

// ok reports whether the transaction was validated with tesSUCCESS and
// sent by from.
func (t *ledgerTx) ok(from string) bool {
	return t.Validated && t.Meta.TransactionResult == "tesSUCCESS" && t.Tx["Account"] == from
}

// maxScanned bounds the transactions one account_tx scan reads.
const maxScanned = 20_000

// accountTx pages through addr's validated transactions from ledger
// minLedger on (0: all), oldest first if forward, calling fn for each
// until it returns false.
func (c *Client) accountTx(ctx context.Context, addr string, minLedger uint32, forward bool, fn func(ledgerTx) bool) error {
	var marker any
	for seen := 0; seen < maxScanned; {
		if err := ctx.Err(); err != nil {
			return err
		}
		var res struct {
			Transactions []ledgerTx `json:"transactions"`
			Marker       any        `json:"marker"`
		}
		req := &account.TransactionsRequest{Account: types.Address(addr), LedgerIndexMin: int(minLedger), LedgerIndexMax: -1,
			Forward: forward, Limit: 200, Marker: marker}
		if minLedger == 0 {
			req.LedgerIndexMin = -1
		}
		if err := c.request(req, &res); err != nil {
			var xe *websocket.ErrorWebsocketClientXrplResponse
			if errors.As(err, &xe) && xe.Type == "actNotFound" {
				return fmt.Errorf("account %s is not on the ledger (not funded)", addr)
			}
			return fmt.Errorf("account_tx %s: %w", addr, err)
		}
		for _, t := range res.Transactions {
			seen++
			if t.Validated && !fn(t) {
				return nil
			}
		}
		if res.Marker == nil {
			return nil
		}
		marker = res.Marker
	}
	return nil
}

package xrplledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/Peersyst/xrpl-go/xrpl/queries/account"
	"github.com/Peersyst/xrpl-go/xrpl/queries/common"
	"github.com/Peersyst/xrpl-go/xrpl/queries/ledger"
	subscribe "github.com/Peersyst/xrpl-go/xrpl/queries/subscription"
	streamtypes "github.com/Peersyst/xrpl-go/xrpl/queries/subscription/types"
	"github.com/Peersyst/xrpl-go/xrpl/queries/transactions"
	"github.com/Peersyst/xrpl-go/xrpl/transaction"
	"github.com/Peersyst/xrpl-go/xrpl/transaction/types"
	"github.com/Peersyst/xrpl-go/xrpl/websocket"
	"github.com/Peersyst/xrpl-go/xrpl/websocket/interfaces"
)

// conn is a connection to a rippled or clio server, through xrpl-go.
type conn struct {
	c *websocket.Client
	// streamLedger is the index of the last ledger the ledger stream
	// announced: when the validated ledger moves past it, the
	// subscription was lost (xrpl-go reconnects without subscribing
	// again, and without a word).
	streamLedger atomic.Uint32
	// wake is signalled, without blocking, at each ledger the stream
	// announces.
	wake chan struct{}
}

// dial connects to url.
func dial(url string) (*conn, error) {
	cfg := websocket.NewClientConfig().WithHost(url).WithMaxRetries(60).WithRetryDelay(250 * time.Millisecond).
		WithTimeout(30 * time.Second).WithMaxReconnects(1 << 20)
	k := &conn{c: websocket.NewClient(cfg), wake: make(chan struct{}, 1)}
	k.c.OnLedgerClosed(func(l *streamtypes.LedgerStream) {
		k.streamLedger.Store(l.LedgerIndex.Uint32())
		select {
		case k.wake <- struct{}{}:
		default:
		}
	})
	if err := k.c.Connect(); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	return k, nil
}

func (k *conn) close() { _ = k.c.Disconnect() }

// request sends req and decodes its result into out (JSON field names).
func (k *conn) request(req interfaces.Request, out any) error {
	res, err := k.c.Request(req)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(res.Result)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, out)
}

// subscribe subscribes to the account's transactions and to the ledger
// stream, and records the validated ledger it reports.
func (k *conn) subscribe(addr string) error {
	var res struct {
		LedgerIndex uint32 `json:"ledger_index"`
	}
	if err := k.request(&subscribe.Request{Accounts: []types.Address{types.Address(addr)}, Streams: []string{"ledger"}}, &res); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	k.streamLedger.Store(res.LedgerIndex)
	return nil
}

// validatedLedger returns the index of the last validated ledger.
func (k *conn) validatedLedger() (uint32, error) {
	v, _, err := k.validatedClose()
	return v, err
}

// rippleEpoch is the XRP Ledger's epoch, 2000-01-01T00:00:00Z, in Unix
// seconds: ledger close times count from it.
const rippleEpoch = 946684800

// validatedClose returns the index and the close time of the last
// validated ledger.
func (k *conn) validatedClose() (uint32, time.Time, error) {
	var res struct {
		LedgerIndex uint32 `json:"ledger_index"`
		Ledger      struct {
			CloseTime int64 `json:"close_time"`
		} `json:"ledger"`
	}
	if err := k.request(&ledger.Request{LedgerIndex: common.Validated}, &res); err != nil {
		return 0, time.Time{}, fmt.Errorf("ledger: %w", err)
	}
	return res.LedgerIndex, time.Unix(rippleEpoch+res.Ledger.CloseTime, 0).UTC(), nil
}

// ledgerTx is a validated transaction in API version 2's shape.
type ledgerTx struct {
	Hash        string         `json:"hash"`
	LedgerIndex uint32         `json:"ledger_index"`
	Validated   bool           `json:"validated"`
	Tx          map[string]any `json:"tx_json"`
	Meta        struct {
		TransactionIndex  uint32 `json:"TransactionIndex"`
		TransactionResult string `json:"TransactionResult"`
		AffectedNodes     []map[string]struct {
			LedgerEntryType string         `json:"LedgerEntryType"`
			LedgerIndex     string         `json:"LedgerIndex"`
			FinalFields     map[string]any `json:"FinalFields"`
			NewFields       map[string]any `json:"NewFields"`
		} `json:"AffectedNodes"`
		NFTokenID string `json:"nftoken_id"`
		OfferID   string `json:"offer_id"`
	} `json:"meta"`
}

// accountTx pages through the account's validated transactions from
// ledger minLedger on, oldest first, calling fn for each.
func (k *conn) accountTx(ctx context.Context, addr string, minLedger uint32, fn func(ledgerTx) error) error {
	var marker any
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var res struct {
			Transactions []ledgerTx `json:"transactions"`
			Marker       any        `json:"marker"`
		}
		req := &account.TransactionsRequest{Account: types.Address(addr), LedgerIndexMin: int(minLedger), LedgerIndexMax: -1, Forward: true, Limit: 200, Marker: marker}
		if minLedger == 0 {
			req.LedgerIndexMin = -1
		}
		if err := k.request(req, &res); err != nil {
			return fmt.Errorf("account_tx: %w", err)
		}
		for _, t := range res.Transactions {
			if err := fn(t); err != nil {
				return err
			}
		}
		if res.Marker == nil {
			return nil
		}
		marker = res.Marker
	}
}

// prepare fills the transaction's sequence, fee and last ledger from the
// server and signs it.
func (p *Plugin) prepare(k *conn, tx Tx) (blob, hash string, lastLedger uint32, err error) {
	flat := transaction.FlatTransaction(tx)
	if err := k.c.Autofill(&flat); err != nil {
		return "", "", 0, fmt.Errorf("autofill %v: %w", tx["TransactionType"], err)
	}
	p.mu.Lock()
	w := p.wallet
	p.mu.Unlock()
	blob, hash, err = w.Sign(flat)
	if err != nil {
		return "", "", 0, fmt.Errorf("sign %v: %w", tx["TransactionType"], err)
	}
	lastLedger, _ = flat["LastLedgerSequence"].(uint32)
	return blob, hash, lastLedger, nil
}

// txResult looks a transaction up: its result once validated, ok false
// while it is unknown or not validated.
func (k *conn) txResult(hash string) (result string, ok bool, err error) {
	var t ledgerTx
	if err := k.request(&transactions.TxRequest{Transaction: hash}, &t); err != nil {
		var xe *websocket.ErrorWebsocketClientXrplResponse
		if errors.As(err, &xe) && xe.Type == "txnNotFound" {
			return "", false, nil
		}
		return "", false, fmt.Errorf("tx %s: %w", hash, err)
	}
	if !t.Validated {
		return "", false, nil
	}
	return t.Meta.TransactionResult, true, nil
}

// awaitPoll is the interval at which await looks a transaction up;
// awaitOutage how long the lookups may fail in a row (the connection is
// lost, and xrpl-go reconnects) before await gives up.
const (
	awaitPoll   = 50 * time.Millisecond
	awaitOutage = 30 * time.Second
)

// send submits a signed transaction, unless it is already validated: done
// is true, with its result, when it is. A transaction past its last
// ledger, not validated, is an "expired" error: it never will be. Like
// xrpl-go, send refuses only a tem* result, and leaves any other
// preliminary result (the transaction queued, held, or submitted before)
// to await.
func (k *conn) send(blob, hash string, lastLedger uint32) (result string, done bool, err error) {
	// The validated ledger first: a transaction not found after it is past
	// its last ledger never will be (a stored blob, submitted again late).
	v, err := k.validatedLedger()
	if err != nil {
		return "", false, err
	}
	if r, ok, err := k.txResult(hash); err != nil || ok {
		return r, ok, err
	}
	if v > lastLedger {
		return "", false, fmt.Errorf("transaction %s expired unvalidated at ledger %d", hash, lastLedger)
	}
	res, err := k.c.SubmitTxBlob(blob, false)
	if err != nil {
		return "", false, fmt.Errorf("submit %s: %w", hash, err)
	}
	switch r := res.EngineResult; {
	case r == "tefMAX_LEDGER":
		return "", false, fmt.Errorf("transaction %s expired unvalidated at ledger %d: %s", hash, lastLedger, r)
	case strings.HasPrefix(r, "tem"):
		return "", false, fmt.Errorf("transaction %s refused: %s: %s", hash, r, res.EngineResultMessage)
	}
	return "", false, nil
}

// await waits until a submitted transaction is validated and returns the
// result of its validated metadata (xrpl-go reports a validated tec* as
// no error: the caller must check it), or an "expired" error once the
// validated ledger passed its last ledger without it.
func (k *conn) await(ctx context.Context, hash string, lastLedger uint32) (string, error) {
	var failing time.Time // since when the lookups fail
	for {
		v, err := k.validatedLedger()
		var r string
		var ok bool
		if err == nil {
			r, ok, err = k.txResult(hash)
		}
		switch {
		case err != nil && failing.IsZero():
			failing = time.Now()
		case err != nil && time.Since(failing) > awaitOutage:
			return "", fmt.Errorf("await %s: %w", hash, err)
		case err != nil:
		case ok:
			return r, nil
		case v > lastLedger:
			return "", fmt.Errorf("transaction %s expired unvalidated at ledger %d", hash, lastLedger)
		default:
			failing = time.Time{}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(awaitPoll):
		}
	}
}

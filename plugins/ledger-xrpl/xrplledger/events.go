package xrplledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
)

// ledgerInterval is the nominal time between validated ledgers, used only
// to turn a lease's last ledger into an approximate ExpiresAt.
const ledgerInterval = 4 * time.Second

// position is a transaction's place in the ledger: its ledger and its
// index there. Cursors name positions.
type position struct {
	ledger uint32
	index  uint32
}

func (p position) after(q position) bool {
	return p.ledger > q.ledger || p.ledger == q.ledger && p.index > q.index
}

func (p position) String() string { return fmt.Sprintf("%d.%d", p.ledger, p.index) }

// parseCursor parses a cursor, "<ledger>.<index>"; "" is the start.
func parseCursor(s string) (position, error) {
	if s == "" {
		return position{}, nil
	}
	l, i, ok := strings.Cut(s, ".")
	lv, err1 := strconv.ParseUint(l, 10, 32)
	iv, err2 := strconv.ParseUint(i, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return position{}, sdk.Errorf(sdk.CodeInvalid, "bad xrpl cursor %.40q: want <ledger>.<index>", s)
	}
	return position{uint32(lv), uint32(iv)}, nil
}

// TenantName is the tenant name of a lease: derived from the lease's NFT
// alone, never from what the tenant asked.
func TenantName(nft string) string {
	sum := sha256.Sum256([]byte(strings.ToUpper(nft)))
	return "l-" + hex.EncodeToString(sum[:8])
}

// handlerError marks an error of the caller's event handler, which ends
// Events; other errors are the connection's, retried.
type handlerError struct{ err error }

func (e handlerError) Error() string { return e.err.Error() }
func (e handlerError) Unwrap() error { return e.err }

// Events streams the lease events of the host's account after cursor: it
// backfills with account_tx from the cursor's ledger, then follows the
// account and ledger streams. Each poll interval it checks that the
// ledger stream still delivers (xrpl-go reconnects silently and without
// subscribing again) and subscribes again if not, then backfills: every
// validated transaction is seen, once per call, in ledger order.
func (p *Plugin) Events(ctx context.Context, cursor string, fn func(sdk.LeaseEvent) error) error {
	cfg, db, err := p.configured()
	if err != nil {
		return err
	}
	pos, err := parseCursor(cursor)
	if err != nil {
		return err
	}
	k, err := dial(cfg.url)
	if err != nil {
		return sdk.Errorf(sdk.CodeUnavailable, "%v", err)
	}
	defer k.close()
	p.mu.Lock()
	p.conn = k
	addr := string(p.wallet.ClassicAddress)
	p.mu.Unlock()
	if err := k.subscribe(addr); err != nil {
		return sdk.Errorf(sdk.CodeUnavailable, "%v", err)
	}
	hostCtx, stopHost := context.WithCancel(ctx)
	defer stopHost()
	go p.hostLoop(hostCtx, k)
	tick := time.NewTicker(cfg.poll)
	defer tick.Stop()
	for {
		err := k.accountTx(ctx, addr, pos.ledger, func(t ledgerTx) error {
			at := position{t.LedgerIndex, t.Meta.TransactionIndex}
			if !t.Validated || !at.after(pos) {
				return nil
			}
			ev, ok := p.handle(t, cfg, addr)
			if ok {
				ev.Cursor = at.String()
				if err := fn(ev); err != nil {
					return handlerError{err}
				}
			}
			pos = at
			return nil
		})
		var he handlerError
		switch {
		case errors.As(err, &he):
			return he.err
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			p.logger.Warn("backfill failed; retrying at the next ledger", "error", err)
		default:
			if err := putLastLedger(db, pos.ledger); err != nil {
				p.logger.Error("store the last processed ledger", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-k.wake:
		case <-tick.C:
			p.checkStream(k, addr)
		}
	}
}

// checkStream subscribes again when the validated ledger has moved more
// than one ledger past the last one the ledger stream announced (one may
// be in flight): the subscription was lost.
func (p *Plugin) checkStream(k *conn, addr string) {
	v, err := k.validatedLedger()
	if err != nil {
		p.logger.Warn("check the ledger stream", "error", err)
		return
	}
	if seen := k.streamLedger.Load(); v > seen+1 {
		p.logger.Warn("the ledger stream is silent while the ledger advances (a silent reconnect): subscribing again",
			"validated", v, "last_streamed", seen)
		if err := k.subscribe(addr); err != nil {
			p.logger.Warn("subscribe again", "error", err)
		}
	}
}

// handle turns a validated transaction of the host's account into a lease
// event; ok is false for every other transaction, and for rejected input,
// which it logs.
func (p *Plugin) handle(t ledgerTx, cfg config, host string) (ev sdk.LeaseEvent, ok bool) {
	log := p.logger.With("tx", t.Hash, "ledger", t.LedgerIndex)
	if t.Meta.TransactionResult != "tesSUCCESS" {
		log.Debug("ignoring a failed transaction", "result", t.Meta.TransactionResult)
		return ev, false
	}
	from, _ := t.Tx["Account"].(string)
	if from == host {
		return ev, false // our own: heartbeats, offers, replies
	}
	m, err := memo.Parse(t.Tx["Memos"])
	switch {
	case errors.Is(err, memo.ErrNotKigumi):
		return ev, false
	case errors.Is(err, memo.ErrUnknownType):
		log.Info("ignoring a memo of an unknown type", "error", err)
		return ev, false
	case err != nil:
		log.Warn("rejecting a malformed memo", "from", from, "error", err)
		return ev, false
	}
	switch typ, _ := t.Tx["TransactionType"].(string); {
	case typ == "NFTokenAcceptOffer" && m.Type == memo.TypeAcquire:
		return p.acquired(t, m, cfg, host, log)
	case typ == "Payment" && t.Tx["Destination"] == host && (m.Type == memo.TypeExtend || m.Type == memo.TypeTerminate):
		return p.changed(t, m, cfg, log)
	}
	log.Info("ignoring a memo on an unexpected transaction", "type", m.Type, "tx_type", t.Tx["TransactionType"])
	return ev, false
}

// acquired handles an acquire: a tenant bought one of the host's lease
// NFTs through its sell offer.
func (p *Plugin) acquired(t ledgerTx, m memo.Memo, cfg config, host string, log interface {
	Warn(string, ...any)
}) (sdk.LeaseEvent, bool) {
	nft := ""
	for _, n := range t.Meta.AffectedNodes {
		d, ok := n["DeletedNode"]
		if ok && d.LedgerEntryType == "NFTokenOffer" && d.FinalFields["Owner"] == host && d.LedgerIndex == t.Tx["NFTokenSellOffer"] {
			nft, _ = d.FinalFields["NFTokenID"].(string)
		}
	}
	if nft == "" {
		log.Warn("rejecting an acquire without a matching accepted offer of this host")
		return sdk.LeaseEvent{}, false
	}
	var req memo.Acquire
	if err := memo.Decode(m, &p.key, cfg.allowPlaintext, &req); err != nil {
		log.Warn("rejecting an acquire", "lease", nft, "error", err)
		return sdk.LeaseEvent{}, false
	}
	if _, err := memo.PublicKey(req.TenantKey); err != nil {
		log.Warn("rejecting an acquire", "lease", nft, "error", err)
		return sdk.LeaseEvent{}, false
	}
	l := lease{NFT: nft, TenantKey: req.TenantKey, Acquire: t.Hash, Ledger: t.LedgerIndex, Expires: t.LedgerIndex + cfg.leaseLedgers}
	l.Account, _ = t.Tx["Account"].(string)
	var old lease
	if found, err := getJSON(p.db, bucketLeases, []byte(nft), &old); err == nil && found && old.Acquire != t.Hash && old.Expires >= t.LedgerIndex {
		log.Warn("rejecting an acquire of a lease still held", "lease", nft)
		return sdk.LeaseEvent{}, false
	}
	if err := putJSON(p.db, bucketLeases, []byte(nft), l); err != nil {
		log.Warn("store a lease", "lease", nft, "error", err)
		return sdk.LeaseEvent{}, false
	}
	return sdk.LeaseEvent{
		ID: t.Hash, Kind: sdk.LeaseAcquired, Lease: nft, Tenant: TenantName(nft), Spec: []byte(req.Spec),
		ExpiresAt: time.Now().Add(time.Duration(cfg.leaseLedgers) * ledgerInterval),
	}, true
}

// changed handles an extend or a terminate, paid to the host by the
// lease's tenant.
func (p *Plugin) changed(t ledgerTx, m memo.Memo, cfg config, log interface {
	Warn(string, ...any)
}) (sdk.LeaseEvent, bool) {
	var ref memo.Extend // Terminate has the same fields
	if err := memo.Decode(m, &p.key, true, &ref); err != nil {
		log.Warn("rejecting a lease change", "error", err)
		return sdk.LeaseEvent{}, false
	}
	var l lease
	found, err := getJSON(p.db, bucketLeases, []byte(strings.ToUpper(ref.Lease)), &l)
	if err != nil || !found || l.Burned || l.Account != t.Tx["Account"] {
		log.Warn("rejecting a change of a lease not held by its sender", "lease", ref.Lease)
		return sdk.LeaseEvent{}, false
	}
	ev := sdk.LeaseEvent{ID: t.Hash, Lease: l.NFT, Tenant: TenantName(l.NFT)}
	if m.Type == memo.TypeTerminate {
		ev.Kind = sdk.LeaseTerminated
		ev.ExpiresAt = time.Now()
		return ev, true
	}
	paid, _ := strconv.ParseUint(fmt.Sprint(t.Tx["Amount"]), 10, 64)
	periods := paid / cfg.priceDrops
	if periods == 0 {
		log.Warn("rejecting an extend that pays less than one period", "lease", l.NFT, "paid", paid)
		return sdk.LeaseEvent{}, false
	}
	l.Expires += uint32(periods) * cfg.leaseLedgers
	if err := putJSON(p.db, bucketLeases, []byte(l.NFT), l); err != nil {
		log.Warn("store a lease", "lease", l.NFT, "error", err)
		return sdk.LeaseEvent{}, false
	}
	ev.Kind = sdk.LeaseExtended
	ev.ExpiresAt = time.Now().Add(time.Duration(l.Expires-t.LedgerIndex) * ledgerInterval)
	return ev, true
}

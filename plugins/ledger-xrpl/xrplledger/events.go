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

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/bbolt"

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
	// The host loop ends before Events returns: nothing of it outlives
	// the call. It and the handlers use the store this call began with: a
	// Close meanwhile closes it, and their calls on it then fail instead
	// of finding no store.
	hostCtx, stopHost := context.WithCancel(ctx)
	hostDone := make(chan struct{})
	go func() {
		defer close(hostDone)
		p.hostLoop(hostCtx, k, db)
	}()
	defer func() {
		stopHost()
		<-hostDone
	}()
	tick := time.NewTicker(cfg.poll)
	defer tick.Stop()
	var progressed uint32 // the last ledger a progress event announced
	for {
		// The validated ledger before the backfill: every transaction up to
		// it is seen by the backfill, so that its progress event comes after
		// them.
		validated, closed, verr := k.validatedClose()
		err := k.accountTx(ctx, addr, pos.ledger, func(t ledgerTx) error {
			at := position{t.LedgerIndex, t.Meta.TransactionIndex}
			if !t.Validated || !at.after(pos) {
				return nil
			}
			ev, ok := p.handle(t, cfg, db, addr)
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
			if verr == nil && validated > progressed {
				progressed = validated
				if err := fn(sdk.LeaseEvent{Kind: sdk.LeaseProgress, Ledger: uint64(validated), LedgerTime: closed}); err != nil {
					return err
				}
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
// which it logs. A purchase of one of the host's leases whose acquire
// cannot be served (its memo is missing, garbage, or sealed to another
// key) is recorded as refused, to be refunded by the host loop.
func (p *Plugin) handle(t ledgerTx, cfg config, db *bbolt.DB, host string) (ev sdk.LeaseEvent, ok bool) {
	log := p.logger.With("tx", t.Hash, "ledger", t.LedgerIndex)
	if t.Meta.TransactionResult != "tesSUCCESS" {
		log.Debug("ignoring a failed transaction", "result", t.Meta.TransactionResult)
		return ev, false
	}
	from, _ := t.Tx["Account"].(string)
	if from == host {
		return ev, false // our own: heartbeats, offers, replies
	}
	typ, _ := t.Tx["TransactionType"].(string)
	if typ == "NFTokenAcceptOffer" {
		if nft, paid := soldLease(t, host); nft != "" {
			return p.acquired(t, nft, paid, cfg, db, log)
		}
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
	switch {
	case typ == "NFTokenAcceptOffer" && m.Type == memo.TypeAcquire:
		log.Warn("rejecting an acquire without a matching accepted offer of this host")
		return ev, false
	case typ == "Payment" && t.Tx["Destination"] == host && (m.Type == memo.TypeExtend || m.Type == memo.TypeTerminate):
		return p.changed(t, m, cfg, db, log)
	}
	log.Info("ignoring a memo on an unexpected transaction", "type", m.Type, "tx_type", typ)
	return ev, false
}

// soldLease returns the NFT of the host's sell offer an NFTokenAcceptOffer
// took (its metadata deletes that offer, owned by the host), and the price
// paid; nft is "" when it took none of the host's offers.
func soldLease(t ledgerTx, host string) (nft string, paid uint64) {
	for _, n := range t.Meta.AffectedNodes {
		d, ok := n["DeletedNode"]
		if ok && d.LedgerEntryType == "NFTokenOffer" && d.FinalFields["Owner"] == host && d.LedgerIndex == t.Tx["NFTokenSellOffer"] {
			nft, _ = d.FinalFields["NFTokenID"].(string)
			paid, _ = strconv.ParseUint(fmt.Sprint(d.FinalFields["Amount"]), 10, 64)
		}
	}
	return strings.ToUpper(nft), paid
}

// acquired handles the purchase of lease nft, for paid drops: an acquire
// event, or, for a request the host cannot read, a refused lease left to
// the host loop to refund. A purchase seen before (a replay of the same
// transaction) stands as recorded.
func (p *Plugin) acquired(t ledgerTx, nft string, paid uint64, cfg config, db *bbolt.DB, log hclog.Logger) (sdk.LeaseEvent, bool) {
	log = log.With("lease", nft)
	var old lease
	found, err := getJSON(db, bucketLeases, []byte(nft), &old)
	switch {
	case err != nil:
		log.Error("read a lease", "error", err)
		return sdk.LeaseEvent{}, false
	case found && old.Acquire == t.Hash && old.Refund != "":
		return sdk.LeaseEvent{}, false // refused before; its refund is the host loop's
	case found && old.Acquire == t.Hash:
		return p.acquireEvent(old, cfg), true // a replay: the same event again
	case found:
		log.Warn("rejecting a second purchase of a lease NFT", "first", old.Acquire)
		return sdk.LeaseEvent{}, false
	}
	l := lease{NFT: nft, Acquire: t.Hash, Ledger: t.LedgerIndex, Expires: t.LedgerIndex + cfg.leaseLedgers, Paid: paid}
	l.Account, _ = t.Tx["Account"].(string)
	spec, refusal := p.readAcquire(t, cfg, &l)
	if refusal != "" {
		l.Ended, l.Refund = true, refusal
		log.Warn("refusing a purchase: its acquire cannot be served; refunding", "reason", refusal)
	}
	if err := putJSON(db, bucketLeases, []byte(nft), l); err != nil {
		log.Error("store a lease", "error", err)
		return sdk.LeaseEvent{}, false
	}
	if refusal != "" {
		p.kickHost()
		return sdk.LeaseEvent{}, false
	}
	ev := p.acquireEvent(l, cfg)
	ev.Spec = []byte(spec)
	return ev, true
}

// readAcquire reads the acquire memo of a purchase into l (the tenant's
// key) and returns its spec, or why it cannot be served: a message for
// the tenant.
func (p *Plugin) readAcquire(t ledgerTx, cfg config, l *lease) (spec, refusal string) {
	m, err := memo.Parse(t.Tx["Memos"])
	switch {
	case errors.Is(err, memo.ErrNotKigumi):
		return "", "the purchase carries no acquire memo"
	case err != nil:
		return "", fmt.Sprintf("the acquire memo cannot be read: %v", err)
	case m.Type != memo.TypeAcquire:
		return "", fmt.Sprintf("the purchase carries a %s memo, not an acquire", m.Type)
	}
	var req memo.Acquire
	if err := memo.Decode(m, &p.key, cfg.allowPlaintext, &req); err != nil {
		return "", fmt.Sprintf("the acquire cannot be read (it must be sealed to the host's key): %v", err)
	}
	if _, err := memo.PublicKey(req.TenantKey); err != nil {
		return "", fmt.Sprintf("the acquire's tenant_key: %v", err)
	}
	l.TenantKey = req.TenantKey
	return req.Spec, ""
}

// acquireEvent is the acquire event of lease l, without its spec.
func (p *Plugin) acquireEvent(l lease, cfg config) sdk.LeaseEvent {
	return sdk.LeaseEvent{
		ID: l.Acquire, Kind: sdk.LeaseAcquired, Lease: l.NFT, Tenant: TenantName(l.NFT),
		Ledger: uint64(l.Ledger), ExpiresLedger: uint64(l.Expires),
		ExpiresAt: time.Now().Add(time.Duration(cfg.leaseLedgers) * ledgerInterval),
	}
}

// changed handles an extend or a terminate, paid to the host by the
// lease's tenant. A change at or before the last one applied is a replay:
// its event comes again, and nothing changes.
func (p *Plugin) changed(t ledgerTx, m memo.Memo, cfg config, db *bbolt.DB, log hclog.Logger) (sdk.LeaseEvent, bool) {
	var ref memo.Extend // Terminate has the same fields
	if err := memo.Decode(m, &p.key, true, &ref); err != nil {
		log.Warn("rejecting a lease change", "error", err)
		return sdk.LeaseEvent{}, false
	}
	at := position{t.LedgerIndex, t.Meta.TransactionIndex}
	nft := strings.ToUpper(ref.Lease)
	from, _ := t.Tx["Account"].(string)
	paid, _ := strconv.ParseUint(fmt.Sprint(t.Tx["Amount"]), 10, 64)
	var l lease
	var refusal string
	err := updateLease(db, nft, func(cur *lease, found bool) bool {
		l = *cur
		if found && l.Changed != "" {
			if last, err := parseCursor(l.Changed); err == nil && !at.after(last) {
				return false // a replay
			}
		}
		switch {
		case !found || l.Account != from:
			refusal = "a change of a lease not held by its sender"
		case l.over(t.LedgerIndex) || l.Burned:
			refusal = "a change of a lease that ended"
		case m.Type == memo.TypeTerminate:
			l.Ended = true
		case paid/cfg.priceDrops == 0:
			refusal = "an extend that pays less than one period"
		default:
			l.Expires += uint32(paid/cfg.priceDrops) * cfg.leaseLedgers
		}
		if refusal != "" {
			return false
		}
		l.Changed = at.String()
		*cur = l
		return true
	})
	if err != nil {
		log.Error("store a lease", "lease", nft, "error", err)
		return sdk.LeaseEvent{}, false
	}
	if refusal != "" {
		log.Warn("rejecting "+refusal, "lease", ref.Lease, "paid", paid)
		return sdk.LeaseEvent{}, false
	}
	ev := sdk.LeaseEvent{ID: t.Hash, Lease: l.NFT, Tenant: TenantName(l.NFT), Ledger: uint64(t.LedgerIndex)}
	if m.Type == memo.TypeTerminate {
		p.kickHost()
		ev.Kind = sdk.LeaseTerminated
		ev.ExpiresAt = time.Now()
		return ev, true
	}
	ev.Kind = sdk.LeaseExtended
	ev.ExpiresLedger = uint64(l.Expires)
	ev.ExpiresAt = time.Now().Add(time.Duration(l.Expires-min(t.LedgerIndex, l.Expires)) * ledgerInterval)
	return ev, true
}

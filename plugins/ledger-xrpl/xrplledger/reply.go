package xrplledger

import (
	"context"
	"strings"

	"go.etcd.io/bbolt"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
)

// replyDrops is the amount of a reply Payment that refunds nothing.
const replyDrops = 1

// connection returns the connection Events made, or makes one.
func (p *Plugin) connection() (*conn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil && p.conn.c.IsConnected() {
		return p.conn, nil
	}
	k, err := dial(p.cfg.url)
	if err != nil {
		return nil, sdk.Errorf(sdk.CodeUnavailable, "%v", err)
	}
	p.conn = k
	return k, nil
}

// Reply answers a lease event with a Payment to the lease's tenant,
// carrying a reply memo whose Payload is sealed to the tenant's key; an
// error answering an acquire refunds the price and ends the lease, so
// that its slot is offered again. The signed transaction is stored under
// the idempotency key before it is submitted: a retry with the same key
// submits that same transaction again (the ledger applies it at most
// once) or returns its stored result, never a second payment.
func (p *Plugin) Reply(ctx context.Context, r sdk.LeaseReply) error {
	cfg, db, err := p.configured()
	if err != nil {
		return err
	}
	if r.IdempotencyKey == "" || len(r.IdempotencyKey) > 256 {
		return sdk.Errorf(sdk.CodeInvalid, "a reply needs an idempotency key of 1 to 256 bytes")
	}
	hash, result, err := p.sendOnce(ctx, db, r.IdempotencyKey, func() (Tx, error) { return p.replyTx(cfg, db, r) })
	if err != nil {
		return err
	}
	p.logger.Info("replied", "event", r.EventID, "lease", r.Lease, "ok", r.OK, "tx", hash, "result", result)
	return resultError(result)
}

// sendOnce signs the transaction build makes, stores it under key, and
// submits it until it is validated; a key sent before returns its stored
// result, and a key stored but not known validated submits the stored
// transaction again. It returns the transaction's hash and result.
func (p *Plugin) sendOnce(ctx context.Context, db *bbolt.DB, idem string, build func() (Tx, error)) (string, string, error) {
	key := []byte(idem)
	rec, done, err := p.sendStored(db, idem, build)
	if err != nil {
		return "", "", err
	}
	if done {
		return rec.Hash, rec.Result, nil
	}
	k, err := p.connection()
	if err == nil {
		rec.Result, err = k.await(ctx, rec.Hash, rec.LastLedger)
	}
	if err != nil {
		if strings.Contains(err.Error(), "expired") {
			// Never validated, never will be: the next attempt signs anew.
			_ = db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketReplies).Delete(key) })
		}
		return "", "", sdk.Errorf(sdk.CodeUnavailable, "submit reply %s: %v", idem, err)
	}
	if err := putJSON(db, bucketReplies, key, rec); err != nil {
		return "", "", sdk.Errorf(sdk.CodeInternal, "store reply %s: %v", idem, err)
	}
	return rec.Hash, rec.Result, nil
}

// sendStored is sendOnce up to the wait: under the submit lock, it returns
// the stored reply of idem if its result is known (done), or signs and
// stores the transaction build makes, if none is stored, and submits it.
func (p *Plugin) sendStored(db *bbolt.DB, idem string, build func() (Tx, error)) (rec reply, done bool, err error) {
	key := []byte(idem)
	p.submitMu.Lock()
	defer p.submitMu.Unlock()
	found, err := getJSON(db, bucketReplies, key, &rec)
	if err != nil {
		return rec, false, sdk.Errorf(sdk.CodeInternal, "read reply %s: %v", idem, err)
	}
	if found && rec.Result != "" {
		return rec, true, nil
	}
	k, err := p.connection()
	if err != nil {
		return rec, false, err
	}
	if !found {
		tx, err := build()
		if err != nil {
			return rec, false, err
		}
		rec.Blob, rec.Hash, rec.LastLedger, err = p.prepare(k, tx)
		if err != nil {
			return rec, false, sdk.Errorf(sdk.CodeUnavailable, "%v", err)
		}
		if err := putJSON(db, bucketReplies, key, rec); err != nil {
			return rec, false, sdk.Errorf(sdk.CodeInternal, "store reply %s: %v", idem, err)
		}
	}
	result, done, err := k.send(rec.Blob, rec.Hash, rec.LastLedger)
	if err != nil {
		if strings.Contains(err.Error(), "expired") {
			// Never validated, never will be: the next attempt signs anew.
			_ = db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketReplies).Delete(key) })
		}
		return rec, false, sdk.Errorf(sdk.CodeUnavailable, "submit reply %s: %v", idem, err)
	}
	if done {
		rec.Result = result
		if err := putJSON(db, bucketReplies, key, rec); err != nil {
			return rec, false, sdk.Errorf(sdk.CodeInternal, "store reply %s: %v", idem, err)
		}
	}
	return rec, done, nil
}

// resultError is the error of a validated result: nil for tesSUCCESS.
func resultError(result string) error {
	if result == "tesSUCCESS" {
		return nil
	}
	return sdk.Errorf(sdk.CodeInternal, "the reply was validated with result %s", result)
}

// replyTx builds the reply Payment.
func (p *Plugin) replyTx(cfg config, db *bbolt.DB, r sdk.LeaseReply) (Tx, error) {
	var l lease
	found, err := getJSON(db, bucketLeases, []byte(strings.ToUpper(r.Lease)), &l)
	if err != nil {
		return nil, sdk.Errorf(sdk.CodeInternal, "read lease %s: %v", r.Lease, err)
	}
	if !found {
		return nil, sdk.Errorf(sdk.CodeNotFound, "no lease %.80q", r.Lease)
	}
	body := memo.Reply{Ref: r.EventID, OK: r.OK, Message: r.Message}
	if len(r.Payload) > 0 {
		to, err := memo.PublicKey(l.TenantKey)
		if err != nil {
			return nil, sdk.Errorf(sdk.CodeInternal, "lease %s: %v", r.Lease, err)
		}
		if body.Payload, err = memo.Seal(to, r.Payload); err != nil {
			return nil, sdk.Errorf(sdk.CodeInternal, "%v", err)
		}
	}
	m, err := memo.Encode(memo.TypeReply, &body)
	if err != nil {
		return nil, sdk.Errorf(sdk.CodeInvalid, "%v", err)
	}
	drops := uint64(replyDrops)
	if !r.OK && r.EventID == l.Acquire {
		// Refused: refund, and end the lease, so that its NFT is burned and
		// its slot offered again.
		drops = refundDrops(l, cfg)
		if err := updateLease(db, l.NFT, func(cur *lease, _ bool) bool { cur.Ended = true; return true }); err != nil {
			return nil, sdk.Errorf(sdk.CodeInternal, "end lease %s: %v", r.Lease, err)
		}
		p.kickHost()
	}
	return paymentTx(p.address(), l.Account, drops, m), nil
}

// refundDrops is what refunding lease l pays back: the price paid for
// it, or the configured price for a lease recorded without it.
func refundDrops(l lease, cfg config) uint64 {
	if l.Paid != 0 {
		return l.Paid
	}
	return cfg.priceDrops
}

// refundTx builds the error reply, with the refund, to an acquire the
// plugin refused itself.
func (p *Plugin) refundTx(cfg config, l lease) (Tx, error) {
	m, err := memo.Encode(memo.TypeReply, &memo.Reply{Ref: l.Acquire, Message: bounded(l.Refund)})
	if err != nil {
		return nil, sdk.Errorf(sdk.CodeInternal, "%v", err)
	}
	return paymentTx(p.address(), l.Account, refundDrops(l, cfg), m), nil
}

// maxRefusal bounds the message of a refusal the plugin writes itself.
const maxRefusal = 400

func bounded(s string) string {
	if len(s) > maxRefusal {
		return s[:maxRefusal] + "..."
	}
	return s
}

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
// error answering an acquire refunds the price. The signed transaction is
// stored under the idempotency key before it is submitted: a retry with
// the same key submits that same transaction again (the ledger applies it
// at most once) or returns its stored result, never a second payment.
func (p *Plugin) Reply(ctx context.Context, r sdk.LeaseReply) error {
	cfg, db, err := p.configured()
	if err != nil {
		return err
	}
	if r.IdempotencyKey == "" || len(r.IdempotencyKey) > 256 {
		return sdk.Errorf(sdk.CodeInvalid, "a reply needs an idempotency key of 1 to 256 bytes")
	}
	key := []byte(r.IdempotencyKey)
	p.submitMu.Lock()
	defer p.submitMu.Unlock()
	var rec reply
	found, err := getJSON(db, bucketReplies, key, &rec)
	if err != nil {
		return sdk.Errorf(sdk.CodeInternal, "read reply %s: %v", r.IdempotencyKey, err)
	}
	if found && rec.Result != "" {
		return resultError(rec.Result)
	}
	k, err := p.connection()
	if err != nil {
		return err
	}
	if !found {
		tx, err := p.replyTx(cfg, db, r)
		if err != nil {
			return err
		}
		rec.Blob, rec.Hash, rec.LastLedger, err = p.prepare(k, tx)
		if err != nil {
			return sdk.Errorf(sdk.CodeUnavailable, "%v", err)
		}
		if err := putJSON(db, bucketReplies, key, rec); err != nil {
			return sdk.Errorf(sdk.CodeInternal, "store reply %s: %v", r.IdempotencyKey, err)
		}
	}
	result, err := k.submitBlob(ctx, rec.Blob, rec.Hash, rec.LastLedger)
	if err != nil {
		if strings.Contains(err.Error(), "expired") {
			// Never validated, never will be: the next attempt signs anew.
			_ = db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketReplies).Delete(key) })
		}
		return sdk.Errorf(sdk.CodeUnavailable, "submit reply %s: %v", r.IdempotencyKey, err)
	}
	rec.Result = result
	if err := putJSON(db, bucketReplies, key, rec); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "store reply %s: %v", r.IdempotencyKey, err)
	}
	p.logger.Info("replied", "event", r.EventID, "lease", r.Lease, "ok", r.OK, "tx", rec.Hash, "result", result)
	return resultError(result)
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
		drops = cfg.priceDrops // refund
	}
	p.mu.Lock()
	from := string(p.wallet.ClassicAddress)
	p.mu.Unlock()
	return paymentTx(from, l.Account, drops, m), nil
}

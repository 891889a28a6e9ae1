package xrplledger

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/Peersyst/xrpl-go/xrpl/queries/account"
	"github.com/Peersyst/xrpl-go/xrpl/transaction/types"
	"go.etcd.io/bbolt"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
)

// leaseTaxon is the NFTokenTaxon of lease NFTs.
const leaseTaxon = 0x6b67 // "kg"

// hostLoop runs the host side while Events runs: a heartbeat to the
// registry every heartbeat interval, jittered, and, every poll interval,
// a sell offer for each free slot.
func (p *Plugin) hostLoop(ctx context.Context, k *conn, db *bbolt.DB) {
	cfg, _, err := p.configured()
	if err != nil {
		return
	}
	nextBeat := time.Now()
	tick := time.NewTicker(cfg.poll)
	defer tick.Stop()
	for {
		if err := p.ensureOffers(ctx, k, cfg, db); err != nil && ctx.Err() == nil {
			p.logger.Warn("offer leases", "error", err)
		}
		if cfg.registry != "" && !time.Now().Before(nextBeat) {
			if err := p.heartbeat(ctx, k, cfg, db); err != nil && ctx.Err() == nil {
				// Tried again at the next round.
				p.logger.Warn("heartbeat", "error", err)
			} else {
				// ±20% jitter, so that hosts started together spread out.
				nextBeat = time.Now().Add(cfg.heartbeat*4/5 + rand.N(cfg.heartbeat*2/5+1))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-p.kick:
		}
	}
}

// kickHost wakes the host loop, without waiting: a lease ended, or a
// refund is due.
func (p *Plugin) kickHost() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// refundKey is the idempotency key of the refund of acquire hash.
func refundKey(hash string) string { return "kigumi-refund:" + hash }

// sendRefunds answers each purchase the plugin refused itself with an
// error reply that refunds its price, once.
func (p *Plugin) sendRefunds(ctx context.Context, cfg config, db *bbolt.DB) error {
	ls, err := leases(db)
	if err != nil {
		return err
	}
	for _, l := range ls {
		if l.Refund == "" {
			continue
		}
		var rec reply
		if found, err := getJSON(db, bucketReplies, []byte(refundKey(l.Acquire)), &rec); err != nil || found && rec.Result != "" {
			continue
		}
		hash, result, err := p.sendOnce(ctx, db, refundKey(l.Acquire), func() (Tx, error) { return p.refundTx(cfg, l) })
		if err != nil {
			return fmt.Errorf("refund %s: %w", l.Acquire, err)
		}
		p.logger.Info("refunded a purchase whose acquire could not be served", "lease", l.NFT, "acquire", l.Acquire,
			"drops", refundDrops(l, cfg), "tx", hash, "result", result)
	}
	return nil
}

// submit signs and submits a transaction of the host's and waits until it
// is validated; a validated result other than tesSUCCESS is an error.
func (p *Plugin) submit(ctx context.Context, k *conn, tx Tx) error {
	// The lock covers taking the sequence and submitting, not the wait:
	// another transaction may follow at once.
	p.submitMu.Lock()
	blob, hash, last, err := p.prepare(k, tx)
	if err != nil {
		p.submitMu.Unlock()
		return err
	}
	result, done, err := k.send(blob, hash, last)
	p.submitMu.Unlock()
	if err == nil && !done {
		result, err = k.await(ctx, hash, last)
	}
	if err != nil {
		return fmt.Errorf("%v %s: %w", tx["TransactionType"], hash, err)
	}
	if result != "tesSUCCESS" {
		return &txFailedError{Type: fmt.Sprint(tx["TransactionType"]), Hash: hash, Result: result}
	}
	return nil
}

// txFailedError is a transaction validated with a result other than
// tesSUCCESS: applied (its fee charged), without effect.
type txFailedError struct{ Type, Hash, Result string }

func (e *txFailedError) Error() string {
	return fmt.Sprintf("%s %s validated with result %s", e.Type, e.Hash, e.Result)
}

// burnExpired burns the NFT of each lease over at ledger v (expired, or
// ended early), which its tenant still holds, and records it burned. A
// burn validated without effect (the tenant burned the NFT already) is
// not tried again; one not validated is, at the next round.
func (p *Plugin) burnExpired(ctx context.Context, k *conn, db *bbolt.DB, addr string, v uint32) error {
	ls, err := leases(db)
	if err != nil {
		return err
	}
	for _, l := range ls {
		if l.Burned || !l.over(v) {
			continue
		}
		var failed *txFailedError
		switch err := p.submit(ctx, k, burnTx(addr, l.NFT, l.Account)); {
		case errors.As(err, &failed):
			p.logger.Warn("the burn of an expired lease's NFT failed; not trying again", "lease", l.NFT, "error", err)
		case err != nil:
			p.logger.Warn("burn the NFT of an expired lease", "lease", l.NFT, "error", err)
			continue
		default:
			p.logger.Info("burned the NFT of an expired lease", "lease", l.NFT)
		}
		if err := updateLease(db, l.NFT, func(cur *lease, _ bool) bool { cur.Burned = true; return true }); err != nil {
			return err
		}
	}
	return nil
}

// activeLeases counts the leases sold that are not over at ledger v.
func (p *Plugin) activeLeases(db *bbolt.DB, v uint32) int {
	ls, err := leases(db)
	if err != nil {
		p.logger.Warn("read leases", "error", err)
	}
	n := 0
	for _, l := range ls {
		if !l.over(v) {
			n++
		}
	}
	return n
}

// heartbeat registers the host with the registry: a Payment of one drop
// with a host memo.
func (p *Plugin) heartbeat(ctx context.Context, k *conn, cfg config, db *bbolt.DB) error {
	v, err := k.validatedLedger()
	if err != nil {
		return err
	}
	active := p.activeLeases(db, v)
	m, err := memo.Encode(memo.TypeHost, &memo.Host{
		Software: Version, Capacity: cfg.slots, Free: max(cfg.slots-active, 0),
		PriceDrops: strconv.FormatUint(cfg.priceDrops, 10), LeaseLedgers: cfg.leaseLedgers,
		Key: hex.EncodeToString(p.key.Public()),
	})
	if err != nil {
		return err
	}
	return p.submit(ctx, k, paymentTx(p.address(), cfg.registry, 1, m))
}

func (p *Plugin) address() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return string(p.wallet.ClassicAddress)
}

// ensureOffers refunds the purchases it refused, burns the NFTs of
// leases over, mints a lease NFT for
// each free slot the host lacks one for, and offers for sale each lease
// NFT the host holds without an offer.
func (p *Plugin) ensureOffers(ctx context.Context, k *conn, cfg config, db *bbolt.DB) error {
	addr := p.address()
	v, err := k.validatedLedger()
	if err != nil {
		return err
	}
	if err := p.sendRefunds(ctx, cfg, db); err != nil {
		p.logger.Warn("refunds", "error", err)
	}
	if err := p.burnExpired(ctx, k, db, addr, v); err != nil {
		return err
	}
	var nfts struct {
		NFTs []struct {
			ID     string `json:"NFTokenID"`
			Issuer string `json:"Issuer"`
			Taxon  uint32 `json:"NFTokenTaxon"`
		} `json:"account_nfts"`
	}
	if err := k.request(&account.NFTsRequest{Account: types.Address(addr), Limit: 400}, &nfts); err != nil {
		return fmt.Errorf("account_nfts: %w", err)
	}
	var objs struct {
		Objects []struct {
			Type  string `json:"LedgerEntryType"`
			NFT   string `json:"NFTokenID"`
			Flags uint32 `json:"Flags"`
		} `json:"account_objects"`
	}
	if err := k.request(&account.ObjectsRequest{Account: types.Address(addr), Type: account.NFTOfferObject, Limit: 400}, &objs); err != nil {
		return fmt.Errorf("account_objects: %w", err)
	}
	offered := map[string]bool{}
	for _, o := range objs.Objects {
		if o.Type == "NFTokenOffer" && o.Flags&tfSellNFToken != 0 {
			offered[strings.ToUpper(o.NFT)] = true
		}
	}
	held := 0
	for _, n := range nfts.NFTs {
		if n.Issuer != addr || n.Taxon != leaseTaxon {
			continue
		}
		held++
		if offered[strings.ToUpper(n.ID)] {
			continue
		}
		if err := p.submit(ctx, k, sellOfferTx(addr, n.ID, cfg.priceDrops)); err != nil {
			return err
		}
		p.logger.Info("offered a lease", "lease", n.ID, "price_drops", cfg.priceDrops)
	}
	for free := cfg.slots - p.activeLeases(db, v) - held; free > 0; free-- {
		if err := p.submit(ctx, k, mintTx(addr, leaseTaxon, leaseURI(cfg.leaseLedgers, cfg.priceDrops))); err != nil {
			return err
		}
		p.logger.Info("minted a lease NFT")
	}
	return nil
}

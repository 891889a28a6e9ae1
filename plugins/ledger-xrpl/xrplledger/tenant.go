package xrplledger

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
)

// What the tenant side of the market (package market) shares with the
// host side: the transactions a tenant sends, built by the same builders
// (tx.go) and covered by the same golden signing vectors, and the terms
// of a lease NFT.

// LeaseTaxon is the NFTokenTaxon of the lease NFTs hosts mint.
const LeaseTaxon uint32 = leaseTaxon

// AcceptOfferTx is a tenant's acquire: it buys a lease NFT through the
// host's sell offer, carrying m.
func AcceptOfferTx(account, offerID string, m memo.Memo) Tx {
	return acceptOfferTx(account, offerID, m)
}

// PaymentTx pays drops from one account to another, carrying m: a
// tenant's extend or terminate.
func PaymentTx(from, to string, drops uint64, m memo.Memo) Tx {
	return paymentTx(from, to, drops, m)
}

// ParseLeaseURI reads the terms of a lease NFT from its URI (already
// decoded from hex), as leaseURI writes them: the ledgers a period lasts
// and its price in drops.
func ParseLeaseURI(uri string) (ledgers uint32, priceDrops uint64, err error) {
	rest, ok := strings.CutPrefix(uri, "kigumi:lease:1?")
	if !ok {
		return 0, 0, fmt.Errorf("%.80q is not a version 1 lease URI", uri)
	}
	q, err := url.ParseQuery(rest)
	if err != nil {
		return 0, 0, fmt.Errorf("lease URI %.80q: %w", uri, err)
	}
	l, err1 := strconv.ParseUint(q.Get("ledgers"), 10, 32)
	p, err2 := strconv.ParseUint(q.Get("price"), 10, 64)
	if err := errors.Join(err1, err2); err != nil || l == 0 || p == 0 {
		return 0, 0, fmt.Errorf("lease URI %.80q: want positive ledgers and price", uri)
	}
	return uint32(l), p, nil
}

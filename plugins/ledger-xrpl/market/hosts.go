package market

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/Peersyst/xrpl-go/xrpl/queries/account"
	"github.com/Peersyst/xrpl-go/xrpl/transaction/types"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/xrplledger"
)

// Host is a host of the market as its latest heartbeat describes it, with
// the lease offers it has open.
type Host struct {
	// Address is the host's account.
	Address string `json:"address"`
	memo.Host
	// HeartbeatLedger is the ledger of the heartbeat read.
	HeartbeatLedger uint32  `json:"heartbeat_ledger"`
	Offers          []Offer `json:"offers"`
}

// Offer is a host's sell offer of a lease NFT.
type Offer struct {
	// ID is the offer's ledger index, which an acquire accepts.
	ID string `json:"offer"`
	// Lease is the lease NFT's NFTokenID: the lease's ID.
	Lease string `json:"lease"`
	// Tenant is the tenant name the lease gives (the request must
	// declare it; Acquire sets it).
	Tenant string `json:"tenant"`
	// PriceDrops is what the offer asks, in drops.
	PriceDrops uint64 `json:"price_drops"`
	// LeaseLedgers is how many validated ledgers a period lasts, by the
	// NFT's terms.
	LeaseLedgers uint32 `json:"lease_ledgers"`
}

// heartbeat decodes a host's heartbeat: a Payment sent by the host with a
// plaintext host memo whose key is an ed25519 key. ok is false for any
// other transaction.
func heartbeat(t ledgerTx) (h memo.Host, ok bool) {
	from, _ := t.Tx["Account"].(string)
	if !t.ok(from) || t.Tx["TransactionType"] != "Payment" {
		return h, false
	}
	m, err := memo.Parse(t.Tx["Memos"])
	if err != nil || m.Type != memo.TypeHost {
		return h, false
	}
	if err := memo.Decode(m, nil, true, &h); err != nil {
		return h, false
	}
	if _, err := memo.PublicKey(h.Key); err != nil {
		return h, false
	}
	return h, true
}

// Hosts lists the hosts registered with the registry account: the latest
// heartbeat each host sent it, newest first, with the host's open offers.
// Malformed heartbeats are skipped.
func (c *Client) Hosts(ctx context.Context, registry string) ([]Host, error) {
	var hosts []Host
	seen := map[string]bool{}
	err := c.accountTx(ctx, registry, 0, false, func(t ledgerTx) bool {
		from, _ := t.Tx["Account"].(string)
		if seen[from] || t.Tx["Destination"] != registry {
			return true
		}
		if h, ok := heartbeat(t); ok {
			seen[from] = true
			hosts = append(hosts, Host{Address: from, Host: h, HeartbeatLedger: t.LedgerIndex})
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	for i := range hosts {
		if hosts[i].Offers, err = c.offers(hosts[i].Address); err != nil {
			return nil, err
		}
	}
	return hosts, nil
}

// Host returns host addr as its latest heartbeat (to any registry)
// describes it, with its open offers.
func (c *Client) Host(ctx context.Context, addr string) (Host, error) {
	h := Host{Address: addr}
	found := false
	err := c.accountTx(ctx, addr, 0, false, func(t ledgerTx) bool {
		if t.Tx["Account"] != addr {
			return true
		}
		h.Host, found = heartbeat(t)
		h.HeartbeatLedger = t.LedgerIndex
		return !found
	})
	if err != nil {
		return Host{}, err
	}
	if !found {
		return Host{}, fmt.Errorf("host %s has sent no heartbeat: it publishes no message key to seal a request to", addr)
	}
	if h.Offers, err = c.offers(addr); err != nil {
		return Host{}, err
	}
	return h, nil
}

// offers returns host's open sell offers of lease NFTs it issued and
// holds, priced in drops and open to anyone.
func (c *Client) offers(host string) ([]Offer, error) {
	var nfts struct {
		NFTs []struct {
			ID     string `json:"NFTokenID"`
			Issuer string `json:"Issuer"`
			Taxon  uint32 `json:"NFTokenTaxon"`
			URI    string `json:"URI"`
		} `json:"account_nfts"`
	}
	if err := c.request(&account.NFTsRequest{Account: types.Address(host), Limit: 400}, &nfts); err != nil {
		return nil, fmt.Errorf("account_nfts %s: %w", host, err)
	}
	terms := map[string]uint32{}
	for _, n := range nfts.NFTs {
		if n.Issuer != host || n.Taxon != xrplledger.LeaseTaxon {
			continue
		}
		uri, err := hex.DecodeString(n.URI)
		if err != nil {
			continue
		}
		if ledgers, _, err := xrplledger.ParseLeaseURI(string(uri)); err == nil {
			terms[strings.ToUpper(n.ID)] = ledgers
		}
	}
	var objs struct {
		Objects []struct {
			Type        string `json:"LedgerEntryType"`
			ID          string `json:"index"`
			Owner       string `json:"Owner"`
			NFT         string `json:"NFTokenID"`
			Amount      any    `json:"Amount"`
			Flags       uint32 `json:"Flags"`
			Destination string `json:"Destination"`
		} `json:"account_objects"`
	}
	if err := c.request(&account.ObjectsRequest{Account: types.Address(host), Type: account.NFTOfferObject, Limit: 400}, &objs); err != nil {
		return nil, fmt.Errorf("account_objects %s: %w", host, err)
	}
	offers := []Offer{}
	for _, o := range objs.Objects {
		nft := strings.ToUpper(o.NFT)
		ledgers, lease := terms[nft]
		amount, isDrops := o.Amount.(string)
		price, err := strconv.ParseUint(amount, 10, 64)
		if o.Type != "NFTokenOffer" || o.Flags&1 == 0 || o.Owner != host || !lease || !isDrops || err != nil ||
			(o.Destination != "" && o.Destination != c.Address()) {
			continue
		}
		offers = append(offers, Offer{ID: o.ID, Lease: nft, Tenant: xrplledger.TenantName(nft), PriceDrops: price, LeaseLedgers: ledgers})
	}
	return offers, nil
}

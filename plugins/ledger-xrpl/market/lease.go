package market

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/Peersyst/xrpl-go/xrpl/queries/account"
	"github.com/Peersyst/xrpl-go/xrpl/transaction/types"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"

	addresscodec "github.com/Peersyst/xrpl-go/address-codec"

	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/xrplledger"
)

// terminateDrops is what a terminate pays the host: the least a Payment
// can carry.
const terminateDrops = 1

// PrepareSpec checks a tenant spec as the host will (spec.Parser's
// ParseTenant: size, nesting and token limits, decoding) and names its
// one tenant block tenant, the name the lease gives: hosts refuse a
// request that declares any other. Comments are dropped and the rest
// formatted: a request must fit in a memo. It returns the spec to send, or the
// diagnostics (of the file as written) and no spec. The parser holds the
// files, for spec.WriteDiagnostics.
func PrepareSpec(filename string, src []byte, tenant string) (*spec.Parser, []byte, hcl.Diagnostics) {
	p := spec.NewParser()
	if len(src) > spec.MaxFileSize {
		return p, nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Spec too large",
			Detail: fmt.Sprintf("%s is %d bytes; the limit is %d.", filename, len(src), spec.MaxFileSize)}}
	}
	// The limits first: hclwrite parses recursively, without them.
	tenants, diags := p.ParseTenant(filename, src)
	if diags.HasErrors() {
		return p, nil, diags
	}
	if len(tenants) != 1 {
		return p, nil, hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Not one tenant",
			Detail: fmt.Sprintf("A lease request declares exactly one tenant; %s declares %d.", filename, len(tenants))}}
	}
	f, wd := hclwrite.ParseConfig(src, filename, hcl.InitialPos)
	if wd.HasErrors() {
		return p, nil, wd
	}
	for _, b := range f.Body().Blocks() {
		if b.Type() == "tenant" {
			b.SetLabels([]string{tenant})
		}
	}
	out := compact(f)
	if _, diags := spec.NewParser().ParseTenant(filename, out); diags.HasErrors() {
		return p, nil, diags
	}
	return p, out, diags
}

// compact returns f without its comments, formatted, without blank lines.
func compact(f *hclwrite.File) []byte {
	var toks hclwrite.Tokens
	for _, t := range f.BuildTokens(nil) {
		if t.Type == hclsyntax.TokenComment {
			// A line comment holds its newline.
			if bytes.HasSuffix(t.Bytes, []byte("\n")) {
				toks = append(toks, &hclwrite.Token{Type: hclsyntax.TokenNewline, Bytes: []byte("\n")})
			}
			continue
		}
		toks = append(toks, t)
	}
	var out []byte
	for _, line := range bytes.Split(hclwrite.Format(toks.Bytes()), []byte("\n")) {
		if len(bytes.TrimSpace(line)) > 0 {
			out = append(append(out, line...), '\n')
		}
	}
	return hclwrite.Format(out) // aligned again, without the gaps
}

// Acquisition is a lease bought: the acquire validated.
type Acquisition struct {
	Host   string `json:"host"`
	Offer  string `json:"offer"`
	Lease  string `json:"lease"`
	Tenant string `json:"tenant"`
	Sent
}

// Acquire buys the lease of offer from host h, with a request for the
// instances of spec (as PrepareSpec returns it) sealed to the host's
// message key. It returns once the NFTokenAcceptOffer is validated with
// tesSUCCESS; any other result is a *TxError.
func (c *Client) Acquire(ctx context.Context, h Host, offer Offer, spec []byte) (Acquisition, error) {
	tx, err := c.acquireTx(h, offer, spec)
	if err != nil {
		return Acquisition{}, err
	}
	sent, err := c.submit(ctx, tx)
	if err != nil {
		return Acquisition{}, err
	}
	return Acquisition{Host: h.Address, Offer: offer.ID, Lease: offer.Lease, Tenant: offer.Tenant, Sent: sent}, nil
}

// acquireTx is the NFTokenAcceptOffer of an acquire, unsigned.
func (c *Client) acquireTx(h Host, offer Offer, spec []byte) (map[string]any, error) {
	hostKey, err := memo.PublicKey(h.Key)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", h.Address, err)
	}
	m, err := memo.EncodeSealed(memo.TypeAcquire, hostKey, &memo.Acquire{TenantKey: hex.EncodeToString(c.key.Public()), Spec: string(spec)})
	if errors.Is(err, memo.ErrTooLarge) {
		return nil, fmt.Errorf("the request does not fit in a memo (%w): a sealed request holds a spec of about %d bytes at most, this one is %d",
			err, memo.MaxData-memo.SealOverhead-100, len(spec))
	} else if err != nil {
		return nil, err
	}
	return xrplledger.AcceptOfferTx(c.Address(), offer.ID, m), nil
}

// Reply is a host's reply to one of the tenant's transactions.
type Reply struct {
	// Tx is the reply's transaction, Ledger its ledger.
	Tx     string `json:"tx"`
	Ledger uint32 `json:"ledger"`
	// Ref is the hash of the transaction answered.
	Ref     string `json:"ref"`
	OK      bool   `json:"ok"`
	Message string `json:"message,omitempty"`
	// Details is the payload, opened with the tenant's message key: the
	// instance details of an acquire's success.
	Details json.RawMessage `json:"details,omitempty"`
	// AmountDrops is what the reply paid: the price, for a refund.
	AmountDrops uint64 `json:"amount_drops"`
	// Error says why the reply was refused (it does not decode, or its
	// payload was not sealed to the tenant's key).
	Error string `json:"error,omitempty"`
}

// reply decodes a reply memo on t, a Payment from host to the tenant; ok
// is false for any other transaction. A reply whose payload does not open
// with the tenant's key has Error set.
func (c *Client) reply(t ledgerTx, host string) (r Reply, ok bool) {
	if !t.ok(host) || t.Tx["TransactionType"] != "Payment" || t.Tx["Destination"] != c.Address() {
		return r, false
	}
	m, err := memo.Parse(t.Tx["Memos"])
	if err != nil || m.Type != memo.TypeReply {
		return r, false
	}
	var body memo.Reply
	if err := memo.Decode(m, nil, true, &body); err != nil {
		return Reply{Tx: t.Hash, Ledger: t.LedgerIndex, Error: err.Error()}, true
	}
	r = Reply{Tx: t.Hash, Ledger: t.LedgerIndex, Ref: body.Ref, OK: body.OK, Message: body.Message}
	r.AmountDrops, _ = strconv.ParseUint(fmt.Sprint(t.Tx["Amount"]), 10, 64)
	if len(body.Payload) > 0 {
		payload, err := c.key.Open(body.Payload)
		switch {
		case err != nil:
			r.Error = fmt.Sprintf("the reply's payload is refused: %v (it was not sealed to this tenant's key)", err)
		case json.Valid(payload):
			r.Details = payload
		default:
			r.Details, _ = json.Marshal(string(payload))
		}
	}
	return r, true
}

// ErrReplyRefused is the error of a reply that does not decode or whose
// payload does not open with the tenant's key.
var ErrReplyRefused = errors.New("reply refused")

// WaitReply waits until host replies to the tenant's transaction ref,
// validated in ledger since, and returns the reply. It gives up when ctx
// ends. A reply it refuses (see Reply.Error) is returned with an error
// wrapping ErrReplyRefused; replies from anyone but host are ignored.
func (c *Client) WaitReply(ctx context.Context, host, ref string, since uint32) (Reply, error) {
	for {
		var found *Reply
		err := c.accountTx(ctx, c.Address(), since, true, func(t ledgerTx) bool {
			if r, ok := c.reply(t, host); ok && strings.EqualFold(r.Ref, ref) {
				found = &r
				return false
			}
			return true
		})
		if err != nil && ctx.Err() == nil {
			return Reply{}, err
		}
		if found != nil {
			if found.Error != "" {
				return *found, fmt.Errorf("%w: %s", ErrReplyRefused, found.Error)
			}
			return *found, nil
		}
		select {
		case <-ctx.Done():
			return Reply{}, fmt.Errorf("no reply from host %s to %s yet: %w", host, ref, context.Cause(ctx))
		case <-time.After(c.Poll):
		}
	}
}

// held is a lease NFT the tenant holds: its issuer and terms.
type held struct {
	issuer     string
	ledgers    uint32
	priceDrops uint64
}

// heldLeases returns the lease NFTs the tenant holds from hosts, by
// NFTokenID.
func (c *Client) heldLeases() (map[string]held, error) {
	var nfts struct {
		NFTs []struct {
			ID     string `json:"NFTokenID"`
			Issuer string `json:"Issuer"`
			Taxon  uint32 `json:"NFTokenTaxon"`
			URI    string `json:"URI"`
		} `json:"account_nfts"`
	}
	if err := c.request(&account.NFTsRequest{Account: types.Address(c.Address()), Limit: 400}, &nfts); err != nil {
		return nil, fmt.Errorf("account_nfts: %w", err)
	}
	out := map[string]held{}
	for _, n := range nfts.NFTs {
		if n.Taxon != xrplledger.LeaseTaxon || n.Issuer == c.Address() {
			continue
		}
		h := held{issuer: n.Issuer}
		if uri, err := hex.DecodeString(n.URI); err == nil {
			h.ledgers, h.priceDrops, _ = xrplledger.ParseLeaseURI(string(uri))
		}
		out[strings.ToUpper(n.ID)] = h
	}
	return out, nil
}

// leaseHost is the issuer of a lease NFT, from its NFTokenID (flags 2
// bytes, transfer fee 2, issuer 20, taxon 4, serial 4).
func leaseHost(nft string) (string, error) {
	b, err := hex.DecodeString(nft)
	if err != nil || len(b) != 32 {
		return "", fmt.Errorf("%.80q is not a lease ID (an NFTokenID: 64 hex digits)", nft)
	}
	return addresscodec.EncodeAccountIDToClassicAddress(b[4:24])
}

// change pays host drops with an extend or terminate memo for lease, which
// the tenant must hold.
func (c *Client) change(ctx context.Context, typ memo.Type, lease string, periods uint64) (Sent, error) {
	lease = strings.ToUpper(lease)
	host, err := leaseHost(lease)
	if err != nil {
		return Sent{}, err
	}
	hs, err := c.heldLeases()
	if err != nil {
		return Sent{}, err
	}
	h, ok := hs[lease]
	if !ok {
		return Sent{}, fmt.Errorf("you hold no lease %s: it ended (expired or terminated), or was never yours", lease)
	}
	drops := uint64(terminateDrops)
	if typ == memo.TypeExtend {
		if h.priceDrops == 0 {
			return Sent{}, fmt.Errorf("lease %s names no price in its URI", lease)
		}
		drops = periods * h.priceDrops
	}
	tx, err := changeTx(c.Address(), host, typ, lease, drops)
	if err != nil {
		return Sent{}, err
	}
	return c.submit(ctx, tx)
}

// changeTx is the Payment of an extend or terminate, unsigned.
func changeTx(from, host string, typ memo.Type, lease string, drops uint64) (map[string]any, error) {
	m, err := memo.Encode(typ, &memo.Extend{Lease: lease})
	if err != nil {
		return nil, err
	}
	return xrplledger.PaymentTx(from, host, drops, m), nil
}

// Extend pays the host of lease for periods more periods (at the price
// its NFT names). It returns once the Payment is validated.
func (c *Client) Extend(ctx context.Context, lease string, periods uint64) (Sent, error) {
	if periods < 1 || periods > 1_000_000 {
		return Sent{}, fmt.Errorf("want 1 to 1000000 periods, not %d", periods)
	}
	return c.change(ctx, memo.TypeExtend, lease, periods)
}

// Terminate asks the host of lease to end it now. It returns once the
// Payment is validated.
func (c *Client) Terminate(ctx context.Context, lease string) (Sent, error) {
	return c.change(ctx, memo.TypeTerminate, lease, 0)
}

// LeaseHost is the host of a lease ID, from the NFTokenID.
func LeaseHost(lease string) (string, error) { return leaseHost(strings.ToUpper(lease)) }

// Lease is a lease the tenant bought, as far as its ledger history and
// the NFTs it holds tell.
type Lease struct {
	Lease  string `json:"lease"`
	Host   string `json:"host"`
	Tenant string `json:"tenant"`
	// Acquire is the acquire's transaction, AcquiredLedger its ledger.
	Acquire        string `json:"acquire"`
	AcquiredLedger uint32 `json:"acquired_ledger"`
	// Held says the tenant still holds the lease NFT; the host burns it
	// when the lease ends.
	Held bool `json:"held"`
	// LeaseLedgers and PriceDrops are the NFT's terms (0: unknown, once
	// the NFT is gone).
	LeaseLedgers uint32 `json:"lease_ledgers,omitempty"`
	PriceDrops   uint64 `json:"price_drops,omitempty"`
	// ExtendedPeriods counts the periods paid by extends.
	ExtendedPeriods uint64 `json:"extended_periods"`
	// ExpiresLedger is the last ledger of the lease (0: unknown): a lease
	// ends LeaseLedgers after its acquire, plus its extensions.
	ExpiresLedger uint32 `json:"expires_ledger,omitempty"`
	// State is "active", "expired" (held past its last ledger: the host
	// is ending it), "terminating" (held, terminate sent), "ended" (the
	// NFT is gone) or "not acquired" (held, but not bought with an
	// acquire of the tenant's: its host serves no request for it).
	State   string  `json:"state"`
	Replies []Reply `json:"replies"`
}

// Status is what Leases returns: the tenant's leases at a validated
// ledger.
type Status struct {
	Account         string  `json:"account"`
	ValidatedLedger uint32  `json:"validated_ledger"`
	Leases          []Lease `json:"leases"`
}

// Leases reads the tenant's leases from its validated transactions (the
// acquires, extends and terminates it sent and the hosts' replies) and
// the lease NFTs it holds, oldest acquire first, then the lease NFTs held
// without an acquire.
func (c *Client) Leases(ctx context.Context) (Status, error) {
	v, err := c.validatedLedger()
	if err != nil {
		return Status{}, err
	}
	hs, err := c.heldLeases()
	if err != nil {
		return Status{}, err
	}
	st := Status{Account: c.Address(), ValidatedLedger: v, Leases: []Lease{}}
	byNFT := map[string]int{}   // the latest acquire of each NFT
	byRef := map[string]int{}   // the lease each of the tenant's transactions concerns
	extends := map[string]int{} // the drops each extend paid, by tx
	terminated := map[int]bool{}
	me := c.Address()
	err = c.accountTx(ctx, me, 0, true, func(t ledgerTx) bool {
		typ, _ := t.Tx["TransactionType"].(string)
		m, err := memo.Parse(t.Tx["Memos"])
		if err != nil {
			return true
		}
		switch {
		case t.ok(me) && typ == "NFTokenAcceptOffer" && m.Type == memo.TypeAcquire:
			for _, n := range t.Meta.AffectedNodes {
				d, ok := n["DeletedNode"]
				if !ok || d.LedgerEntryType != "NFTokenOffer" || d.LedgerIndex != t.Tx["NFTokenSellOffer"] {
					continue
				}
				nft, _ := d.FinalFields["NFTokenID"].(string)
				host, _ := d.FinalFields["Owner"].(string)
				nft = strings.ToUpper(nft)
				price, _ := strconv.ParseUint(fmt.Sprint(d.FinalFields["Amount"]), 10, 64)
				byNFT[nft] = len(st.Leases)
				byRef[strings.ToUpper(t.Hash)] = len(st.Leases)
				st.Leases = append(st.Leases, Lease{Lease: nft, Host: host, Tenant: xrplledger.TenantName(nft), Acquire: t.Hash,
					AcquiredLedger: t.LedgerIndex, PriceDrops: price, Replies: []Reply{}})
			}
		case t.ok(me) && typ == "Payment" && (m.Type == memo.TypeExtend || m.Type == memo.TypeTerminate):
			var ref memo.Extend
			if memo.Decode(m, nil, true, &ref) != nil {
				return true
			}
			i, ok := byNFT[strings.ToUpper(ref.Lease)]
			if !ok || st.Leases[i].Host != t.Tx["Destination"] {
				return true
			}
			byRef[strings.ToUpper(t.Hash)] = i
			if m.Type == memo.TypeTerminate {
				terminated[i] = true
			} else {
				paid, _ := strconv.ParseUint(fmt.Sprint(t.Tx["Amount"]), 10, 64)
				if p := st.Leases[i].PriceDrops; p > 0 {
					st.Leases[i].ExtendedPeriods += paid / p
				}
				extends[t.Hash] = int(paid)
			}
		case typ == "Payment" && m.Type == memo.TypeReply:
			from, _ := t.Tx["Account"].(string)
			r, ok := c.reply(t, from)
			if !ok {
				return true
			}
			if i, ok := byRef[strings.ToUpper(r.Ref)]; ok && st.Leases[i].Host == from {
				st.Leases[i].Replies = append(st.Leases[i].Replies, r)
			}
		}
		return true
	})
	if err != nil {
		return Status{}, err
	}
	// Lease NFTs held without an acquire of the tenant's (bought or
	// given without a request): hosts count only their buyer's changes.
	for _, nft := range slices.Sorted(maps.Keys(hs)) {
		if _, ok := byNFT[nft]; !ok {
			h := hs[nft]
			byNFT[nft] = len(st.Leases)
			st.Leases = append(st.Leases, Lease{Lease: nft, Host: h.issuer, Tenant: xrplledger.TenantName(nft), Replies: []Reply{}})
		}
	}
	for i := range st.Leases {
		l := &st.Leases[i]
		h, ok := hs[l.Lease]
		l.Held = ok && h.issuer == l.Host && byNFT[l.Lease] == i
		if l.Held {
			l.LeaseLedgers, l.PriceDrops = h.ledgers, h.priceDrops
		}
		if l.LeaseLedgers > 0 && l.Acquire != "" {
			l.ExpiresLedger = l.AcquiredLedger + l.LeaseLedgers*uint32(1+l.ExtendedPeriods)
		}
		switch {
		case !l.Held:
			l.State = "ended"
		case l.Acquire == "":
			l.State = "not acquired"
		case terminated[i]:
			l.State = "terminating"
		case l.ExpiresLedger != 0 && v > l.ExpiresLedger:
			l.State = "expired"
		default:
			l.State = "active"
		}
	}
	return st, nil
}

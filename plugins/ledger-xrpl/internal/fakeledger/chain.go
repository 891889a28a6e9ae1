// Package fakeledger is a TEST DOUBLE of an XRP Ledger server: an
// in-memory ledger behind the subset of rippled's WebSocket API (API
// version 2) that xrpl-go and the ledger-xrpl plugin use: server_info,
// account_info, ledger, ledger_accept, submit, tx, account_tx, subscribe
// (account and ledger streams), account_nfts and account_objects. It is
// no rippled: it verifies signatures and sequences, applies Payment (XRP
// only) and the NFToken transactions the plugin sends, and closes a
// ledger, validated at once, only when asked (CloseLedger or
// ledger_accept) or on its AutoClose tick. Its response shapes follow the
// recorded rippled responses in testdata/, checked by its tests. Fault
// hooks (DropMidStream, HoldSubmits) and observers (OnSubmit, OnClose)
// serve fault tests and benchmarks.
package fakeledger

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	addresscodec "github.com/Peersyst/xrpl-go/address-codec"
	binarycodec "github.com/Peersyst/xrpl-go/binary-codec"
	"github.com/Peersyst/xrpl-go/keypairs"
	"github.com/Peersyst/xrpl-go/pkg/crypto"
	"github.com/Peersyst/xrpl-go/xrpl/hash"
)

// BaseFee is the fee, in drops, of every transaction.
const BaseFee = 10

type account struct {
	balance  uint64
	sequence uint32 // the next sequence, counting queued transactions
	minted   uint32
}

type nft struct {
	id, issuer, owner, uri string
	flags                  uint32
	taxon                  uint32
	serial                 uint32
}

type offer struct {
	id, owner, nftID string
	amount           uint64
	sell             bool
}

// txRec is a transaction submitted, then applied in a closed ledger.
type txRec struct {
	hash   string
	blob   string
	tx     map[string]any
	meta   map[string]any
	ledger uint32 // 0 while pending
	index  int
}

type ledgerRec struct {
	index uint32
	hash  string
	txs   []*txRec
}

// chain is the ledger state. The Server guards it with its mutex.
type chain struct {
	accounts map[string]*account
	nfts     map[string]*nft
	offers   map[string]*offer
	txs      map[string]*txRec
	pending  []*txRec
	ledgers  []*ledgerRec // ledgers[i].index == i+firstLedger
}

const firstLedger = 2

func newChain() *chain {
	c := &chain{
		accounts: map[string]*account{},
		nfts:     map[string]*nft{},
		offers:   map[string]*offer{},
		txs:      map[string]*txRec{},
	}
	c.ledgers = append(c.ledgers, &ledgerRec{index: firstLedger, hash: ledgerHash(firstLedger)})
	return c
}

func (c *chain) validated() *ledgerRec { return c.ledgers[len(c.ledgers)-1] }

func ledgerHash(i uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], i)
	return strings.ToUpper(hex.EncodeToString(crypto.Sha512Half(append([]byte("fakeledger"), b[:]...))))
}

// submitError is a submit refused before it reaches a ledger.
type submitError struct{ code, msg string }

func (e *submitError) Error() string { return e.code + ": " + e.msg }

// submit verifies a signed blob and queues it for the next ledger.
func (c *chain) submit(blob string) (*txRec, error) {
	tx, err := binarycodec.Decode(blob)
	if err != nil {
		return nil, &submitError{"invalidTransaction", err.Error()}
	}
	if err := verify(tx); err != nil {
		return nil, &submitError{"temBAD_SIGNATURE", err.Error()}
	}
	h, err := hash.SignTxBlob(blob)
	if err != nil {
		return nil, &submitError{"invalidTransaction", err.Error()}
	}
	if old, ok := c.txs[h]; ok {
		return old, &submitError{"tefALREADY", "the transaction was already submitted"}
	}
	from, _ := tx["Account"].(string)
	acct := c.accounts[from]
	if acct == nil {
		return nil, &submitError{"terNO_ACCOUNT", "the source account does not exist"}
	}
	seq := toUint32(tx["Sequence"])
	switch {
	case seq < acct.sequence:
		return nil, &submitError{"tefPAST_SEQ", "this sequence number has already passed"}
	case seq > acct.sequence:
		return nil, &submitError{"terPRE_SEQ", "missing or inapplicable prior transaction"}
	}
	fee, err := strconv.ParseUint(fmt.Sprint(tx["Fee"]), 10, 64)
	if err != nil || fee < BaseFee {
		return nil, &submitError{"telINSUF_FEE_P", "the fee is below the base fee"}
	}
	if lls := toUint32(tx["LastLedgerSequence"]); lls != 0 && lls <= c.validated().index {
		return nil, &submitError{"tefMAX_LEDGER", "the LastLedgerSequence has passed"}
	}
	switch tx["TransactionType"] {
	case "Payment", "NFTokenMint", "NFTokenCreateOffer", "NFTokenAcceptOffer", "NFTokenBurn":
	default:
		return nil, &submitError{"temDISABLED", fmt.Sprintf("the test double does not apply %v", tx["TransactionType"])}
	}
	acct.sequence++
	r := &txRec{hash: h, blob: blob, tx: tx}
	c.txs[h] = r
	c.pending = append(c.pending, r)
	return r, nil
}

// verify checks a transaction's single signature against its signing key
// and its Account's master key.
func verify(tx map[string]any) error {
	pub, _ := tx["SigningPubKey"].(string)
	sig, _ := tx["TxnSignature"].(string)
	if pub == "" || sig == "" {
		return errors.New("the transaction is not signed")
	}
	unsigned := make(map[string]any, len(tx))
	for k, v := range tx {
		if k != "TxnSignature" {
			unsigned[k] = v
		}
	}
	msg, err := binarycodec.EncodeForSigning(unsigned)
	if err != nil {
		return err
	}
	raw, err := hex.DecodeString(msg)
	if err != nil {
		return err
	}
	// keypairs signs and validates the signing bytes themselves, as a
	// string, as xrpl-go's wallet signs them.
	ok, err := keypairs.Validate(string(raw), pub, sig)
	if err != nil || !ok {
		return fmt.Errorf("the signature does not verify: %v", err)
	}
	addr, err := keypairs.DeriveClassicAddress(pub)
	if err != nil || addr != tx["Account"] {
		return errors.New("the signing key is not the account's master key")
	}
	return nil
}

// close applies the pending transactions into a new validated ledger and
// returns it.
func (c *chain) close() *ledgerRec {
	l := &ledgerRec{index: c.validated().index + 1}
	l.hash = ledgerHash(l.index)
	for _, r := range c.pending {
		if lls := toUint32(r.tx["LastLedgerSequence"]); lls != 0 && lls < l.index {
			delete(c.txs, r.hash) // expired: never in a ledger
			continue
		}
		r.ledger, r.index = l.index, len(l.txs)
		r.meta = c.apply(r.tx, r.index)
		l.txs = append(l.txs, r)
	}
	c.pending = nil
	c.ledgers = append(c.ledgers, l)
	return l
}

// apply applies one transaction and returns its metadata.
func (c *chain) apply(tx map[string]any, index int) map[string]any {
	from := tx["Account"].(string)
	acct := c.accounts[from]
	fee, _ := strconv.ParseUint(fmt.Sprint(tx["Fee"]), 10, 64)
	acct.balance -= min(fee, acct.balance)
	meta := map[string]any{"TransactionIndex": index, "AffectedNodes": []any{}}
	result := "tesSUCCESS"
	switch tx["TransactionType"] {
	case "Payment":
		result = c.pay(from, tx, meta)
	case "NFTokenMint":
		result = c.mint(from, tx, meta)
	case "NFTokenCreateOffer":
		result = c.createOffer(from, tx, meta)
	case "NFTokenAcceptOffer":
		result = c.acceptOffer(from, tx, meta)
	case "NFTokenBurn":
		result = c.burn(from, tx, meta)
	}
	meta["TransactionResult"] = result
	return meta
}

func (c *chain) pay(from string, tx map[string]any, meta map[string]any) string {
	amount, err := strconv.ParseUint(fmt.Sprint(tx["Amount"]), 10, 64)
	if err != nil {
		return "temBAD_AMOUNT"
	}
	to, _ := tx["Destination"].(string)
	if c.accounts[from].balance < amount {
		return "tecUNFUNDED_PAYMENT"
	}
	if c.accounts[to] == nil {
		c.accounts[to] = &account{sequence: 1}
	}
	c.accounts[from].balance -= amount
	c.accounts[to].balance += amount
	meta["delivered_amount"] = strconv.FormatUint(amount, 10)
	return "tesSUCCESS"
}

// nftID computes an NFTokenID as rippled does: flags, transfer fee,
// issuer, scrambled taxon, serial.
func nftID(flags uint16, issuer string, taxon, serial uint32) string {
	_, accountID, _ := addresscodec.DecodeClassicAddressToAccountID(issuer)
	b := make([]byte, 0, 32)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = append(b, accountID...)
	b = binary.BigEndian.AppendUint32(b, taxon^(384160001*serial+2459))
	b = binary.BigEndian.AppendUint32(b, serial)
	return strings.ToUpper(hex.EncodeToString(b))
}

// offerID computes an NFTokenOffer's ledger index: SHA-512Half of the
// space key 'q', the owner's account ID and the offer's sequence.
func offerID(owner string, seq uint32) string {
	_, accountID, _ := addresscodec.DecodeClassicAddressToAccountID(owner)
	b := []byte{0x00, 'q'}
	b = append(b, accountID...)
	b = binary.BigEndian.AppendUint32(b, seq)
	return strings.ToUpper(hex.EncodeToString(crypto.Sha512Half(b)))
}

func (c *chain) mint(from string, tx map[string]any, meta map[string]any) string {
	acct := c.accounts[from]
	flags := toUint32(tx["Flags"])
	n := &nft{issuer: from, owner: from, flags: flags, taxon: toUint32(tx["NFTokenTaxon"]), serial: acct.minted}
	n.uri, _ = tx["URI"].(string)
	n.id = nftID(uint16(flags&0xffff), from, n.taxon, n.serial)
	acct.minted++
	c.nfts[n.id] = n
	meta["nftoken_id"] = n.id
	return "tesSUCCESS"
}

func (c *chain) createOffer(from string, tx map[string]any, meta map[string]any) string {
	id, _ := tx["NFTokenID"].(string)
	n := c.nfts[id]
	sell := toUint32(tx["Flags"])&1 != 0
	if n == nil || (sell && n.owner != from) {
		return "tecNO_ENTRY"
	}
	amount, err := strconv.ParseUint(fmt.Sprint(tx["Amount"]), 10, 64)
	if err != nil {
		return "temBAD_AMOUNT"
	}
	o := &offer{id: offerID(from, toUint32(tx["Sequence"])), owner: from, nftID: id, amount: amount, sell: sell}
	c.offers[o.id] = o
	meta["offer_id"] = o.id
	meta["AffectedNodes"] = []any{map[string]any{"CreatedNode": map[string]any{
		"LedgerEntryType": "NFTokenOffer", "LedgerIndex": o.id,
		"NewFields": map[string]any{"Owner": from, "NFTokenID": id, "Amount": strconv.FormatUint(amount, 10), "Flags": toUint32(tx["Flags"])},
	}}}
	return "tesSUCCESS"
}

func (c *chain) acceptOffer(from string, tx map[string]any, meta map[string]any) string {
	id, _ := tx["NFTokenSellOffer"].(string)
	o := c.offers[id]
	if o == nil || !o.sell {
		return "tecOBJECT_NOT_FOUND"
	}
	n := c.nfts[o.nftID]
	if n == nil || n.owner != o.owner {
		return "tecNO_PERMISSION"
	}
	if o.owner == from {
		return "tecCANT_ACCEPT_OWN_NFTOKEN_OFFER"
	}
	if c.accounts[from].balance < o.amount {
		return "tecINSUFFICIENT_FUNDS"
	}
	c.accounts[from].balance -= o.amount
	c.accounts[o.owner].balance += o.amount
	n.owner = from
	delete(c.offers, id)
	meta["nftoken_id"] = n.id
	meta["AffectedNodes"] = []any{map[string]any{"DeletedNode": map[string]any{
		"LedgerEntryType": "NFTokenOffer", "LedgerIndex": id,
		"FinalFields": map[string]any{"Owner": o.owner, "NFTokenID": n.id, "Amount": strconv.FormatUint(o.amount, 10), "Flags": uint32(1)},
	}}}
	return "tesSUCCESS"
}

func (c *chain) burn(from string, tx map[string]any, meta map[string]any) string {
	id, _ := tx["NFTokenID"].(string)
	n := c.nfts[id]
	if n == nil {
		return "tecNO_ENTRY"
	}
	if n.owner != from && (n.issuer != from || n.flags&1 == 0) {
		return "tecNO_PERMISSION"
	}
	delete(c.nfts, id)
	for oid, o := range c.offers {
		if o.nftID == id {
			delete(c.offers, oid)
		}
	}
	meta["nftoken_id"] = id
	return "tesSUCCESS"
}

// affects reports whether a transaction concerns an account, for its
// account stream and account_tx.
func (r *txRec) affects(addr string) bool {
	if r.tx["Account"] == addr || r.tx["Destination"] == addr || r.tx["Owner"] == addr {
		return true
	}
	nodes, _ := r.meta["AffectedNodes"].([]any)
	for _, n := range nodes {
		for _, kind := range []string{"CreatedNode", "DeletedNode"} {
			node, _ := n.(map[string]any)[kind].(map[string]any)
			for _, f := range []string{"NewFields", "FinalFields"} {
				if fields, ok := node[f].(map[string]any); ok && fields["Owner"] == addr {
					return true
				}
			}
		}
	}
	return false
}

func toUint32(v any) uint32 {
	switch n := v.(type) {
	case uint32:
		return n
	case int:
		return uint32(n)
	case float64:
		return uint32(n)
	case uint64:
		return uint32(n)
	case int64:
		return uint32(n)
	}
	return 0
}

package xrplledger

import (
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
)

// Transaction flags the plugin sets (rippled's tx flags).
const (
	// tfBurnable lets the issuer burn a lease NFT held by a tenant, once
	// the lease ends.
	tfBurnable uint32 = 0x00000001
	// tfTransferable lets a lease NFT change hands.
	tfTransferable uint32 = 0x00000008
	// tfSellNFToken makes an NFTokenCreateOffer a sell offer.
	tfSellNFToken uint32 = 0x00000001
)

// Tx is an unsigned transaction in rippled's JSON form, as xrpl-go's
// binary codec and xrpl.js both take it. The submitter fills Sequence,
// Fee and LastLedgerSequence.
type Tx = map[string]any

// Every transaction this plugin (or the tenant side) sends is built here,
// and each has a golden signing vector against xrpl.js (tx_test.go).

// paymentTx pays drops from one account to another, carrying m.
func paymentTx(from, to string, drops uint64, m memo.Memo) Tx {
	return Tx{
		"TransactionType": "Payment",
		"Account":         from,
		"Destination":     to,
		"Amount":          strconv.FormatUint(drops, 10),
		"Flags":           uint32(0),
		"Memos":           []any{m.XRPL()},
	}
}

// mintTx mints a lease NFT, its URI the lease terms.
func mintTx(account string, taxon uint32, uri string) Tx {
	return Tx{
		"TransactionType": "NFTokenMint",
		"Account":         account,
		"NFTokenTaxon":    taxon,
		"Flags":           tfBurnable | tfTransferable,
		"URI":             strings.ToUpper(hex.EncodeToString([]byte(uri))),
	}
}

// sellOfferTx offers an NFT for drops.
func sellOfferTx(account, nftID string, drops uint64) Tx {
	return Tx{
		"TransactionType": "NFTokenCreateOffer",
		"Account":         account,
		"NFTokenID":       nftID,
		"Amount":          strconv.FormatUint(drops, 10),
		"Flags":           tfSellNFToken,
	}
}

// acceptOfferTx buys an NFT through its sell offer, carrying m: a
// tenant's acquire.
func acceptOfferTx(account, offerID string, m memo.Memo) Tx {
	return Tx{
		"TransactionType":  "NFTokenAcceptOffer",
		"Account":          account,
		"NFTokenSellOffer": offerID,
		"Flags":            uint32(0),
		"Memos":            []any{m.XRPL()},
	}
}

// burnTx burns an NFT the account issued, held by owner.
func burnTx(account, nftID, owner string) Tx {
	tx := Tx{
		"TransactionType": "NFTokenBurn",
		"Account":         account,
		"NFTokenID":       nftID,
		"Flags":           uint32(0),
	}
	if owner != "" && owner != account {
		tx["Owner"] = owner
	}
	return tx
}

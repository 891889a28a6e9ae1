package market

import (
	"bytes"
	"encoding/hex"
	"testing"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/internal/xrpljs"

	"github.com/Peersyst/xrpl-go/keypairs"
	"github.com/Peersyst/xrpl-go/pkg/crypto"
	"github.com/Peersyst/xrpl-go/xrpl/wallet"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
)

// xrplJS is the test-local install of xrpl.js that the host side's golden
// vectors use (.ci/install-deps runs npm ci there).
const xrplJS = "../xrplledger/testdata/xrpljs"

// TestGoldenSigning signs every transaction the tenant sends (the
// NFTokenAcceptOffer of an acquire, with its sealed memo, and the
// Payments of an extend and a terminate, with their memos), built as the
// Client builds them, with xrpl-go and with xrpl.js, for the same fields
// and key, and requires the same blob and hash byte for byte.
func TestGoldenSigning(t *testing.T) {
	hostKey, err := memo.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	host := Host{Address: "rHb9CJAWyB4rj91VRWn96DkukG4bwdtyTh", Host: memo.Host{Key: hex.EncodeToString(hostKey.Public())}}
	lease := "000900001E0A3DFA7B5E9FB0E4A2C0E1D6A0F6C2B5F3A1E90000099A00000002"
	offer := Offer{ID: "5C2A1F3E0D9B8A7C6E5F4D3C2B1A09F8E7D6C5B4A39281706F5E4D3C2B1A0900", Lease: lease}
	var vectors []xrpljs.Vector
	for _, alg := range []string{"secp256k1", "ed25519"} {
		var seed string
		entropy := bytes.Repeat([]byte{42}, 16)
		if alg == "ed25519" {
			seed, err = keypairs.GenerateSeed(entropy, crypto.ED25519(), nil)
		} else {
			seed, err = keypairs.GenerateSeed(entropy, crypto.SECP256K1(), nil)
		}
		if err != nil {
			t.Fatal(err)
		}
		w, err := wallet.FromSeed(seed, "")
		if err != nil {
			t.Fatal(err)
		}
		key, err := MessageKey(w)
		if err != nil {
			t.Fatal(err)
		}
		c := &Client{w: w, key: key}
		_, spec, diags := PrepareSpec("req.hcl", []byte(leaseSpec), "l-0123456789abcdef")
		if diags.HasErrors() {
			t.Fatal(diags)
		}
		acquire, err := c.acquireTx(host, offer, spec)
		if err != nil {
			t.Fatal(err)
		}
		extend, err := changeTx(c.Address(), host.Address, memo.TypeExtend, lease, 3*5000)
		if err != nil {
			t.Fatal(err)
		}
		terminate, err := changeTx(c.Address(), host.Address, memo.TypeTerminate, lease, terminateDrops)
		if err != nil {
			t.Fatal(err)
		}
		for name, tx := range map[string]map[string]any{
			"NFTokenAcceptOffer of an acquire": acquire,
			"Payment of an extend":             extend,
			"Payment of a terminate":           terminate,
		} {
			tx["Sequence"] = uint32(7)
			tx["Fee"] = "12"
			tx["LastLedgerSequence"] = uint32(4321)
			vectors = append(vectors, xrpljs.Vector{Name: name + " (" + alg + ")", Seed: seed, Tx: tx})
		}
	}
	xrpljs.Check(t, xrplJS, vectors)
}

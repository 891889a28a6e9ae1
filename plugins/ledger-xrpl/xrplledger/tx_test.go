package xrplledger

import (
	"bytes"
	"testing"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/internal/xrpljs"

	"github.com/Peersyst/xrpl-go/keypairs"
	"github.com/Peersyst/xrpl-go/pkg/crypto"
	"github.com/Peersyst/xrpl-go/xrpl/wallet"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
)

// xrplJS is the test-local install of xrpl.js (.ci/install-deps runs npm
// ci there).
const xrplJS = "testdata/xrpljs"

// testWallet derives a wallet from fixed entropy, so the vectors are the
// same at every run.
func testWallet(t testing.TB, alg string, fill byte) wallet.Wallet {
	t.Helper()
	entropy := bytes.Repeat([]byte{fill}, 16)
	var seed string
	var err error
	switch alg {
	case "secp256k1":
		seed, err = keypairs.GenerateSeed(entropy, crypto.SECP256K1(), nil)
	case "ed25519":
		seed, err = keypairs.GenerateSeed(entropy, crypto.ED25519(), nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	w, err := wallet.FromSeed(seed, "")
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestGoldenSigning signs every transaction type the plugin sends with
// xrpl-go and with xrpl.js (node, as a subprocess), for the same fields
// and key, and requires the same blob and hash byte for byte.
func TestGoldenSigning(t *testing.T) {
	key, err := memo.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	host := testWallet(t, "secp256k1", 7)
	nftID := "000900001E0A3DFA7B5E9FB0E4A2C0E1D6A0F6C2B5F3A1E90000099A00000002"
	offerID := "5C2A1F3E0D9B8A7C6E5F4D3C2B1A09F8E7D6C5B4A39281706F5E4D3C2B1A0900"
	var vectors []xrpljs.Vector
	for _, alg := range []string{"secp256k1", "ed25519"} {
		w := testWallet(t, alg, 42)
		reply, err := memo.Encode(memo.TypeReply, &memo.Reply{Ref: offerID, OK: true, Message: "running"})
		if err != nil {
			t.Fatal(err)
		}
		acquire, err := memo.EncodeSealed(memo.TypeAcquire, key.Public(), &memo.Acquire{Spec: `instance "web" {}`})
		if err != nil {
			t.Fatal(err)
		}
		txs := map[string]Tx{
			"Payment with a memo":      paymentTx(string(w.ClassicAddress), string(host.ClassicAddress), 1, reply),
			"NFTokenMint":              mintTx(string(w.ClassicAddress), 7, leaseURI(100, 1000)),
			"NFTokenCreateOffer":       sellOfferTx(string(w.ClassicAddress), nftID, 1000),
			"NFTokenAcceptOffer":       acceptOfferTx(string(w.ClassicAddress), offerID, acquire),
			"NFTokenBurn":              burnTx(string(w.ClassicAddress), nftID, string(host.ClassicAddress)),
			"NFTokenBurn by its owner": burnTx(string(w.ClassicAddress), nftID, ""),
		}
		for name, tx := range txs {
			tx["Sequence"] = uint32(19)
			tx["Fee"] = "12"
			tx["LastLedgerSequence"] = uint32(1234)
			vectors = append(vectors, xrpljs.Vector{Name: name + " (" + alg + ")", Seed: w.Seed, Tx: tx})
		}
	}
	xrpljs.Check(t, xrplJS, vectors)
}

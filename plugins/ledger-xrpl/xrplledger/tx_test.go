package xrplledger

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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
	if _, err := os.Stat(filepath.Join(xrplJS, "node_modules", "xrpl", "package.json")); err != nil {
		t.Fatalf("xrpl.js is not installed in %s (run .ci/install-deps): %v", xrplJS, err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (run .ci/install-deps): %v", err)
	}
	key, err := memo.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	host := testWallet(t, "secp256k1", 7)
	nftID := "000900001E0A3DFA7B5E9FB0E4A2C0E1D6A0F6C2B5F3A1E90000099A00000002"
	offerID := "5C2A1F3E0D9B8A7C6E5F4D3C2B1A09F8E7D6C5B4A39281706F5E4D3C2B1A0900"
	var vectors []struct {
		name string
		seed string
		tx   Tx
	}
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
			vectors = append(vectors, struct {
				name string
				seed string
				tx   Tx
			}{name + " (" + alg + ")", w.Seed, tx})
		}
	}
	type input struct {
		Seed string `json:"seed"`
		Tx   Tx     `json:"tx"`
	}
	in := make([]input, len(vectors))
	for i, v := range vectors {
		in[i] = input{v.seed, v.tx}
	}
	raw, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(node, "sign.js")
	cmd.Dir = xrplJS
	cmd.Stdin = bytes.NewReader(raw)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xrpl.js: %v: %s", err, stderr.String())
	}
	var js []struct {
		Blob string `json:"tx_blob"`
		Hash string `json:"hash"`
	}
	if err := json.Unmarshal(out, &js); err != nil {
		t.Fatalf("xrpl.js output: %v: %s", err, out)
	}
	if len(js) != len(vectors) {
		t.Fatalf("xrpl.js signed %d transactions, want %d", len(js), len(vectors))
	}
	for i, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			w, err := wallet.FromSeed(v.seed, "")
			if err != nil {
				t.Fatal(err)
			}
			blob, hash, err := w.Sign(v.tx)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.EqualFold(blob, js[i].Blob) {
				t.Errorf("blobs differ:\nxrpl-go %s\nxrpl.js %s", blob, js[i].Blob)
			}
			if !strings.EqualFold(hash, js[i].Hash) {
				t.Errorf("hashes differ: xrpl-go %s, xrpl.js %s", hash, js[i].Hash)
			}
		})
	}
}

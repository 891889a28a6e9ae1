package fakeledger

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/Peersyst/xrpl-go/keypairs"
	"github.com/Peersyst/xrpl-go/keypairs/interfaces"
	"github.com/Peersyst/xrpl-go/pkg/crypto"
	"github.com/Peersyst/xrpl-go/xrpl/wallet"
	"github.com/gorilla/websocket"
)

func start(t *testing.T) *Server {
	t.Helper()
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func newWallet(t *testing.T, fill byte, ed bool) wallet.Wallet {
	t.Helper()
	var alg interfaces.KeypairCryptoAlg = crypto.SECP256K1()
	if ed {
		alg = crypto.ED25519()
	}
	seed, err := keypairs.GenerateSeed(bytes.Repeat([]byte{fill}, 16), alg, nil)
	if err != nil {
		t.Fatal(err)
	}
	w, err := wallet.FromSeed(seed, "")
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// client is a raw WebSocket client of the test double.
type client struct {
	t  *testing.T
	ws *websocket.Conn
	id int
}

func dial(t *testing.T, s *Server) *client {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(s.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return &client{t: t, ws: ws}
}

// call sends a request and returns the response, skipping stream messages.
func (c *client) call(req map[string]any) map[string]any {
	c.t.Helper()
	c.id++
	req["id"] = c.id
	req["api_version"] = 2
	if err := c.ws.WriteJSON(req); err != nil {
		c.t.Fatal(err)
	}
	for {
		var m map[string]any
		if err := c.ws.ReadJSON(&m); err != nil {
			c.t.Fatal(err)
		}
		if m["type"] == "response" {
			return m
		}
	}
}

func (c *client) next() map[string]any {
	c.t.Helper()
	var m map[string]any
	if err := c.ws.ReadJSON(&m); err != nil {
		c.t.Fatal(err)
	}
	return m
}

func result(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	if m["status"] != "success" {
		t.Fatalf("error response: %v", m)
	}
	return m["result"].(map[string]any)
}

// sign fills a transaction's sequence, fee and last ledger, and signs it.
func sign(t *testing.T, s *Server, w wallet.Wallet, seq uint32, tx map[string]any) string {
	t.Helper()
	tx["Account"] = string(w.ClassicAddress)
	tx["Sequence"] = seq
	tx["Fee"] = "12"
	tx["LastLedgerSequence"] = s.ValidatedIndex() + 20
	blob, _, err := w.Sign(tx)
	if err != nil {
		t.Fatal(err)
	}
	return blob
}

func TestPaymentAndStreams(t *testing.T) {
	s := start(t)
	alice, bob := newWallet(t, 1, false), newWallet(t, 2, true)
	s.Fund(string(alice.ClassicAddress), 100_000_000)
	s.Fund(string(bob.ClassicAddress), 100_000_000)
	watcher := dial(t, s)
	result(t, watcher.call(map[string]any{"command": "subscribe", "accounts": []any{string(bob.ClassicAddress)}, "streams": []any{"ledger"}}))
	c := dial(t, s)

	blob := sign(t, s, alice, 1, map[string]any{"TransactionType": "Payment", "Destination": string(bob.ClassicAddress), "Amount": "1000", "Flags": uint32(0)})
	sub := result(t, c.call(map[string]any{"command": "submit", "tx_blob": blob}))
	if sub["engine_result"] != "tesSUCCESS" {
		t.Fatalf("submit: %v", sub)
	}
	again := result(t, c.call(map[string]any{"command": "submit", "tx_blob": blob}))
	if again["engine_result"] != "tefALREADY" {
		t.Fatalf("a resubmitted blob: %v", again)
	}
	pending := result(t, c.call(map[string]any{"command": "account_tx", "account": string(bob.ClassicAddress)}))
	if n := len(pending["transactions"].([]any)); n != 0 {
		t.Fatalf("account_tx shows %d unvalidated transactions", n)
	}
	l := s.CloseLedger()
	got := watcher.next()
	if got["type"] != "transaction" || got["validated"] != true || got["meta"].(map[string]any)["TransactionResult"] != "tesSUCCESS" {
		t.Fatalf("stream: %v", got)
	}
	if got := watcher.next(); got["type"] != "ledgerClosed" || got["ledger_index"] != float64(l) {
		t.Fatalf("ledger stream: %v", got)
	}
	if s.Balance(string(bob.ClassicAddress)) != 100_001_000 || s.Balance(string(alice.ClassicAddress)) != 100_000_000-1000-12 {
		t.Fatalf("balances %d %d", s.Balance(string(alice.ClassicAddress)), s.Balance(string(bob.ClassicAddress)))
	}
	tx := result(t, c.call(map[string]any{"command": "tx", "transaction": got["hash"]}))
	if tx["validated"] != true || tx["ledger_index"] != float64(l) {
		t.Fatalf("tx: %v", tx)
	}
	hist := result(t, c.call(map[string]any{"command": "account_tx", "account": string(bob.ClassicAddress), "forward": true}))
	if n := len(hist["transactions"].([]any)); n != 1 {
		t.Fatalf("account_tx: %d transactions", n)
	}
}

func TestSubmitRejects(t *testing.T) {
	s := start(t)
	alice, bob := newWallet(t, 1, false), newWallet(t, 2, false)
	s.Fund(string(alice.ClassicAddress), 100_000_000)
	c := dial(t, s)
	pay := func() map[string]any {
		return map[string]any{"TransactionType": "Payment", "Destination": string(bob.ClassicAddress), "Amount": "1000", "Flags": uint32(0)}
	}
	good := sign(t, s, alice, 1, pay())
	// Flip a bit of the Amount: the signature no longer matches.
	tampered := []byte(good)
	i := bytes.Index(tampered, []byte("61400000000000"))
	tampered[i+len("61400000000000")] ^= 1
	forged := pay()
	forged["Account"] = string(alice.ClassicAddress)
	forged["Sequence"], forged["Fee"] = uint32(1), "12"
	forgedBlob, _, err := bob.Sign(forged) // bob signs for alice
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, blob, want string
	}{
		{"tampered", string(tampered), "temBAD_SIGNATURE"},
		{"another's key", forgedBlob, "temBAD_SIGNATURE"},
		{"future sequence", sign(t, s, alice, 5, pay()), "terPRE_SEQ"},
		{"unknown account", sign(t, s, bob, 1, pay()), "terNO_ACCOUNT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := result(t, c.call(map[string]any{"command": "submit", "tx_blob": tt.blob}))
			if res["engine_result"] != tt.want {
				t.Fatalf("engine_result %v, want %s", res["engine_result"], tt.want)
			}
		})
	}
	if res := c.call(map[string]any{"command": "submit", "tx_blob": "zz"}); res["error"] != "invalidTransaction" {
		t.Fatalf("garbage blob: %v", res)
	}
	if res := c.call(map[string]any{"command": "submit", "tx_blob": good}); result(t, res)["engine_result"] != "tesSUCCESS" {
		t.Fatalf("good blob: %v", res)
	}
	s.CloseLedger()
	if n := s.Submitted(string(alice.ClassicAddress), "Payment"); n != 1 {
		t.Fatalf("%d payments recorded, want 1", n)
	}
}

func TestNFTokenLease(t *testing.T) {
	s := start(t)
	host, tenant := newWallet(t, 1, false), newWallet(t, 2, true)
	s.Fund(string(host.ClassicAddress), 100_000_000)
	s.Fund(string(tenant.ClassicAddress), 100_000_000)
	c := dial(t, s)
	submit := func(blob string) string {
		res := result(t, c.call(map[string]any{"command": "submit", "tx_blob": blob}))
		if res["engine_result"] != "tesSUCCESS" {
			t.Fatalf("submit: %v", res)
		}
		s.CloseLedger()
		return res["tx_json"].(map[string]any)["hash"].(string)
	}
	meta := func(hash string) map[string]any {
		return result(t, c.call(map[string]any{"command": "tx", "transaction": hash}))["meta"].(map[string]any)
	}
	mint := meta(submit(sign(t, s, host, 1, map[string]any{"TransactionType": "NFTokenMint", "NFTokenTaxon": uint32(7), "Flags": uint32(9), "URI": "6869"})))
	nft := mint["nftoken_id"].(string)
	offer := meta(submit(sign(t, s, host, 2, map[string]any{"TransactionType": "NFTokenCreateOffer", "NFTokenID": nft, "Amount": "5000", "Flags": uint32(1)})))
	offerID := offer["offer_id"].(string)
	objs := result(t, c.call(map[string]any{"command": "account_objects", "account": string(host.ClassicAddress)}))
	if n := len(objs["account_objects"].([]any)); n != 1 {
		t.Fatalf("%d offers", n)
	}
	missing := meta(submit(sign(t, s, tenant, 1, map[string]any{"TransactionType": "NFTokenAcceptOffer", "NFTokenSellOffer": nft, "Flags": uint32(0)})))
	if missing["TransactionResult"] != "tecOBJECT_NOT_FOUND" {
		t.Fatalf("accepting no offer: %v", missing)
	}
	accept := meta(submit(sign(t, s, tenant, 2, map[string]any{"TransactionType": "NFTokenAcceptOffer", "NFTokenSellOffer": offerID, "Flags": uint32(0)})))
	if accept["TransactionResult"] != "tesSUCCESS" || accept["nftoken_id"] != nft {
		t.Fatalf("accept: %v", accept)
	}
	nfts := result(t, c.call(map[string]any{"command": "account_nfts", "account": string(tenant.ClassicAddress)}))
	if n := len(nfts["account_nfts"].([]any)); n != 1 {
		t.Fatalf("the tenant holds %d NFTs", n)
	}
	hist := result(t, c.call(map[string]any{"command": "account_tx", "account": string(host.ClassicAddress), "forward": true, "limit": 2}))
	if len(hist["transactions"].([]any)) != 2 || hist["marker"] == nil {
		t.Fatalf("paged account_tx: %v", hist)
	}
	rest := result(t, c.call(map[string]any{"command": "account_tx", "account": string(host.ClassicAddress), "forward": true, "limit": 2, "marker": hist["marker"]}))
	if n := len(rest["transactions"].([]any)); n != 1 { // the accept: it deleted the host's offer
		t.Fatalf("second page: %d transactions", n)
	}
	burn := meta(submit(sign(t, s, host, 3, map[string]any{"TransactionType": "NFTokenBurn", "NFTokenID": nft, "Owner": string(tenant.ClassicAddress), "Flags": uint32(0)})))
	if burn["TransactionResult"] != "tesSUCCESS" {
		t.Fatalf("burn: %v", burn)
	}
}

// TestResponseShapes requires every response of the test double to carry
// the fields, with their JSON types, of the recorded rippled responses in
// testdata.
func TestResponseShapes(t *testing.T) {
	s := start(t)
	alice, bob := newWallet(t, 1, false), newWallet(t, 2, false)
	s.Fund(string(alice.ClassicAddress), 100_000_000)
	s.Fund(string(bob.ClassicAddress), 100_000_000)
	c := dial(t, s)
	w := dial(t, s)
	result(t, w.call(map[string]any{"command": "subscribe", "accounts": []any{string(bob.ClassicAddress)}, "streams": []any{"ledger"}}))
	sub := c.call(map[string]any{"command": "submit", "tx_blob": sign(t, s, alice, 1, map[string]any{
		"TransactionType": "Payment", "Destination": string(bob.ClassicAddress), "Amount": "1000", "Flags": uint32(0)})})
	s.CloseLedger()
	txStream, ledgerStream := w.next(), w.next()
	hash := txStream["hash"]
	got := map[string]map[string]any{
		"server_info":        c.call(map[string]any{"command": "server_info"}),
		"account_info":       c.call(map[string]any{"command": "account_info", "account": string(alice.ClassicAddress), "ledger_index": "current"}),
		"ledger":             c.call(map[string]any{"command": "ledger", "ledger_index": "validated"}),
		"submit":             sub,
		"tx":                 c.call(map[string]any{"command": "tx", "transaction": hash}),
		"account_tx":         c.call(map[string]any{"command": "account_tx", "account": string(bob.ClassicAddress)}),
		"stream_transaction": txStream,
		"stream_ledger":      ledgerStream,
		"error_txnNotFound":  c.call(map[string]any{"command": "tx", "transaction": "00"}),
	}
	for name, m := range got {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", name+".json"))
			if err != nil {
				t.Fatal(err)
			}
			var want any
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatal(err)
			}
			// Round-trip the response through JSON, as a client sees it.
			b, _ := json.Marshal(m)
			var have any
			if err := json.Unmarshal(b, &have); err != nil {
				t.Fatal(err)
			}
			for _, d := range shapeDiff("", want, have) {
				t.Error(d)
			}
		})
	}
}

// shapeDiff lists the fields of want missing from have or of another JSON
// type, recursively (for lists, their first elements).
func shapeDiff(path string, want, have any) []string {
	if fmt.Sprintf("%T", want) != fmt.Sprintf("%T", have) {
		return []string{fmt.Sprintf("%s: %T, rippled has %T", path, have, want)}
	}
	var out []string
	switch w := want.(type) {
	case map[string]any:
		h := have.(map[string]any)
		for k, v := range w {
			if path == ".request" {
				continue
			}
			hv, ok := h[k]
			if !ok {
				out = append(out, fmt.Sprintf("%s.%s: missing", path, k))
				continue
			}
			out = append(out, shapeDiff(path+"."+k, v, hv)...)
		}
	case []any:
		h := have.([]any)
		if len(w) > 0 && len(h) > 0 {
			out = append(out, shapeDiff(path+"[0]", w[0], h[0])...)
		}
	}
	return out
}

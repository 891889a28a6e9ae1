package xrplledger

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Peersyst/xrpl-go/xrpl/transaction"
	"github.com/Peersyst/xrpl-go/xrpl/wallet"
	"github.com/hashicorp/go-hclog"
	"go.etcd.io/bbolt"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/sdktest"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/internal/fakeledger"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
)

// market is a host plugin, behind real gRPC, on the fake ledger (a test
// double of rippled), with a tenant and a registry.
type market struct {
	t        *testing.T
	srv      *fakeledger.Server
	plugin   *Plugin
	ledger   sdk.Ledger
	host     wallet.Wallet
	tenant   wallet.Wallet
	registry wallet.Wallet
	tk       *conn // the tenant's connection
	settings sdk.Config
	dataDir  string

	pmu sync.Mutex
	// progress holds the progress events of events, in order; log every
	// event.
	progress, log []sdk.LeaseEvent
}

// progressed returns the progress events received so far.
func (m *market) progressed() []sdk.LeaseEvent {
	m.pmu.Lock()
	defer m.pmu.Unlock()
	return slices.Clone(m.progress)
}

const testPrice = 5000

func newMarket(t *testing.T) *market {
	t.Helper()
	return newMarketWith(t, fakeledger.AutoClose(20*time.Millisecond))
}

// newMarketWith is newMarket on a fake ledger with opts.
func newMarketWith(t *testing.T, opts ...fakeledger.Option) *market {
	t.Helper()
	srv, err := fakeledger.Start(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	m := &market{t: t, srv: srv, host: testWallet(t, "secp256k1", 1), tenant: testWallet(t, "ed25519", 2), registry: testWallet(t, "secp256k1", 3)}
	for _, w := range []wallet.Wallet{m.host, m.tenant, m.registry} {
		srv.Fund(string(w.ClassicAddress), 1_000_000_000)
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "host.secret")
	if err := os.WriteFile(secret, []byte(m.host.Seed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m.settings = sdk.Config{
		"url": srv.URL(), "secret_file": secret, "registry": string(m.registry.ClassicAddress),
		"slots": float64(1), "price_drops": float64(testPrice), "lease_ledgers": float64(1000),
		"heartbeat": "1h", "poll": "50ms",
	}
	m.dataDir = filepath.Join(dir, "data")
	if err := os.Mkdir(m.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	m.start()
	m.tk, err = dial(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.tk.close)
	return m
}

// start starts (or restarts) the host plugin on the same data directory.
func (m *market) start() {
	m.t.Helper()
	if m.plugin != nil {
		m.plugin.Close()
	}
	m.plugin = New(hclog.New(&hclog.LoggerOptions{Name: "xrpl", Level: hclog.Debug, Output: os.Stderr}))
	m.t.Cleanup(func() { m.plugin.Close() })
	m.ledger = sdktest.Ledger(m.t, m.plugin)
	if err := m.ledger.Configure(context.Background(), sdk.ConfigureRequest{Host: "h", Settings: m.settings, DataDir: m.dataDir}); err != nil {
		m.t.Fatal(err)
	}
}

// events runs Events from cursor until the test ends or stop is called.
// Progress events go to m.progress, the others to the channel.
func (m *market) events(cursor string) (<-chan sdk.LeaseEvent, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan sdk.LeaseEvent, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = m.ledger.Events(ctx, cursor, func(e sdk.LeaseEvent) error {
			m.pmu.Lock()
			m.log = append(m.log, e)
			if e.Kind == sdk.LeaseProgress {
				m.progress = append(m.progress, e)
			}
			m.pmu.Unlock()
			if e.Kind == sdk.LeaseProgress {
				return nil
			}
			select {
			case ch <- e:
			case <-ctx.Done():
			}
			return nil
		})
	}()
	stop := func() { cancel(); <-done }
	m.t.Cleanup(stop)
	return ch, stop
}

// waitFor polls cond until it holds; the test's deadline bounds it.
func (m *market) waitFor(what string, cond func() bool) {
	m.t.Helper()
	for !cond() {
		if dl, ok := m.t.Deadline(); ok && time.Until(dl) < 5*time.Second {
			m.t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *market) next(ch <-chan sdk.LeaseEvent) sdk.LeaseEvent {
	m.t.Helper()
	select {
	case e := <-ch:
		return e
	case <-time.After(time.Minute):
		m.t.Fatal("no lease event")
	}
	return sdk.LeaseEvent{}
}

// tenantSubmit signs a transaction of the tenant's and waits until it is
// validated; it returns its hash and result.
func (m *market) tenantSubmit(tx Tx) (string, string) {
	m.t.Helper()
	flat := transaction.FlatTransaction(tx)
	if err := m.tk.c.Autofill(&flat); err != nil {
		m.t.Fatal(err)
	}
	blob, hash, err := m.tenant.Sign(flat)
	if err != nil {
		m.t.Fatal(err)
	}
	res, err := m.tk.c.SubmitTxBlobAndWait(blob, false)
	if err != nil {
		m.t.Fatal(err)
	}
	return hash, res.Meta.TransactionResult
}

// hostKey reads the host's message key from its heartbeat on the
// registry, as a tenant does.
func (m *market) hostKey() []byte {
	m.t.Helper()
	var key []byte
	m.waitFor("a heartbeat", func() bool {
		_ = m.tk.accountTx(context.Background(), string(m.registry.ClassicAddress), 0, func(t ledgerTx) error {
			mm, err := memo.Parse(t.Tx["Memos"])
			var h memo.Host
			if err == nil && mm.Type == memo.TypeHost && memo.Decode(mm, nil, true, &h) == nil && t.Tx["Account"] == string(m.host.ClassicAddress) {
				key, _ = memo.PublicKey(h.Key)
				if h.Capacity != 1 || h.PriceDrops != "5000" {
					m.t.Errorf("heartbeat %+v", h)
				}
			}
			return nil
		})
		return key != nil
	})
	return key
}

func (m *market) offer() string {
	m.t.Helper()
	var offers []string
	m.waitFor("a lease offer", func() bool {
		offers = m.srv.SellOffers(string(m.host.ClassicAddress))
		return len(offers) > 0
	})
	if len(offers) != 1 {
		m.t.Fatalf("%d offers for 1 slot", len(offers))
	}
	return offers[0]
}

func sealedAcquire(t *testing.T, to []byte, tenantKey memo.Key, spec string) memo.Memo {
	t.Helper()
	mm, err := memo.EncodeSealed(memo.TypeAcquire, to, &memo.Acquire{TenantKey: hex.EncodeToString(tenantKey.Public()), Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	return mm
}

// TestAcquireReply: the host registers and offers its slot; bad acquires
// are rejected without an event; a good one becomes one LeaseEvent; the
// reply reaches the tenant sealed to its key, once per idempotency key;
// a restart resumes after the stored cursor.
func TestAcquireReply(t *testing.T) {
	m := newMarket(t)
	events, stop := m.events("")
	hostKey := m.hostKey()
	offerID := m.offer()
	tenantKey, _ := memo.NewKey()
	wrongKey, _ := memo.NewKey()
	tenant := string(m.tenant.ClassicAddress)
	host := string(m.host.ClassicAddress)
	plain, _ := memo.Encode(memo.TypeAcquire, &memo.Acquire{TenantKey: hex.EncodeToString(tenantKey.Public()), Spec: "x"})
	garbage := memo.Memo{Type: memo.TypeAcquire, Format: memo.FormatSealed, Data: []byte("garbage")}
	unknown := memo.Memo{Type: "gossip", Format: memo.FormatJSON, Data: []byte("{}")}

	// Rejected, in ledger order before the good acquire: none may surface.
	if _, r := m.tenantSubmit(paymentTx(tenant, host, 1, sealedAcquire(t, hostKey, tenantKey, "no offer"))); r != "tesSUCCESS" {
		t.Fatalf("payment: %s", r)
	}
	if _, r := m.tenantSubmit(paymentTx(tenant, host, 1, unknown)); r != "tesSUCCESS" {
		t.Fatalf("payment: %s", r)
	}
	for _, bad := range []memo.Memo{garbage, plain, sealedAcquire(t, wrongKey.Public(), tenantKey, "wrong key")} {
		// An accept of a missing offer fails (tec*): no acquire either.
		if _, r := m.tenantSubmit(acceptOfferTx(tenant, strings.Repeat("AB", 32), bad)); !strings.HasPrefix(r, "tec") {
			t.Fatalf("accepting no offer: %s", r)
		}
	}
	spec := `instance "web" { module = "/srv/app.wasm" }`
	acq, r := m.tenantSubmit(acceptOfferTx(tenant, offerID, sealedAcquire(t, hostKey, tenantKey, spec)))
	if r != "tesSUCCESS" {
		t.Fatalf("acquire: %s", r)
	}
	ev := m.next(events)
	if ev.ID != acq || ev.Kind != sdk.LeaseAcquired || string(ev.Spec) != spec || ev.Tenant != TenantName(ev.Lease) || ev.Lease == "" {
		t.Fatalf("event %+v, want the acquire %s", ev, acq)
	}
	if _, err := parseCursor(ev.Cursor); err != nil || ev.Cursor == "" {
		t.Fatalf("cursor %q: %v", ev.Cursor, err)
	}

	// The reply, twice with the same key: one payment.
	before := m.srv.Submitted(host, "Payment")
	reply := sdk.LeaseReply{EventID: ev.ID, IdempotencyKey: "reply-1", Lease: ev.Lease, OK: true, Message: "running", Payload: []byte("secret address")}
	for range 2 {
		if err := m.ledger.Reply(context.Background(), reply); err != nil {
			t.Fatal(err)
		}
	}
	if n := m.srv.Submitted(host, "Payment") - before; n != 1 {
		t.Fatalf("%d reply payments for one idempotency key", n)
	}
	var got memo.Reply
	_ = m.tk.accountTx(context.Background(), tenant, 0, func(t ledgerTx) error {
		if mm, err := memo.Parse(t.Tx["Memos"]); err == nil && mm.Type == memo.TypeReply && t.Tx["Account"] == host {
			return memo.Decode(mm, nil, true, &got)
		}
		return nil
	})
	payload, err := tenantKey.Open(got.Payload)
	if got.Ref != acq || !got.OK || got.Message != "running" || err != nil || string(payload) != "secret address" {
		t.Fatalf("reply %+v, payload %q, %v", got, payload, err)
	}
	if _, err := wrongKey.Open(got.Payload); !errors.Is(err, memo.ErrOpen) {
		t.Fatalf("another key opened the payload: %v", err)
	}

	// Bad replies are refused before anything is sent.
	before = m.srv.Submitted(host, "Payment")
	for _, bad := range []struct {
		r    sdk.LeaseReply
		code sdk.Code
	}{
		{sdk.LeaseReply{EventID: ev.ID, IdempotencyKey: "r-none", Lease: strings.Repeat("00", 32), OK: true}, sdk.CodeNotFound},
		{sdk.LeaseReply{EventID: ev.ID, IdempotencyKey: "r-big", Lease: ev.Lease, OK: true, Payload: make([]byte, memo.MaxData)}, sdk.CodeInvalid},
		{sdk.LeaseReply{EventID: ev.ID, Lease: ev.Lease, OK: true}, sdk.CodeInvalid},
	} {
		var se *sdk.Error
		if err := m.ledger.Reply(context.Background(), bad.r); !errors.As(err, &se) || se.Code != bad.code {
			t.Errorf("Reply(%s): %v, want %s", bad.r.IdempotencyKey, err, bad.code)
		}
	}
	if n := m.srv.Submitted(host, "Payment") - before; n != 0 {
		t.Fatalf("refused replies sent %d payments", n)
	}

	// A restart after the cursor does not repeat the acquire; the next
	// event is the tenant's extend.
	stop()
	m.start()
	subs := m.srv.Subscribes()
	events, _ = m.events(ev.Cursor)
	m.waitFor("the restarted plugin's subscription", func() bool { return m.srv.Subscribes() > subs })
	subs = m.srv.Subscribes()
	m.srv.DropConnections() // xrpl-go reconnects the host without subscribing again
	m.tk.close()
	var err2 error
	if m.tk, err2 = dial(m.srv.URL()); err2 != nil {
		t.Fatal(err2)
	}
	ext, _ := memo.Encode(memo.TypeExtend, &memo.Extend{Lease: ev.Lease})
	extHash, r := m.tenantSubmit(paymentTx(tenant, host, 2*testPrice, ext))
	if r != "tesSUCCESS" {
		t.Fatalf("extend: %s", r)
	}
	ev2 := m.next(events)
	if ev2.ID != extHash || ev2.Kind != sdk.LeaseExtended || ev2.Lease != ev.Lease {
		t.Fatalf("after the restart: %+v, want the extend %s", ev2, extHash)
	}
	m.waitFor("a new subscription after the dropped connection", func() bool { return m.srv.Subscribes() > subs })

	// The retried reply after the restart still sends nothing.
	before = m.srv.Submitted(host, "Payment")
	if err := m.ledger.Reply(context.Background(), reply); err != nil {
		t.Fatal(err)
	}
	if n := m.srv.Submitted(host, "Payment") - before; n != 0 {
		t.Fatalf("a retried reply after a restart sent %d payments", n)
	}
}

// TestAcquireRejects feeds validated transactions that must not become
// events. A purchase of the host's lease whose acquire cannot be served is
// recorded as refused (to be refunded, its lease ended); any other is
// logged and ignored, and nothing is stored. A replayed purchase is the
// same event again; a second purchase of a leased NFT is refused.
func TestAcquireRejects(t *testing.T) {
	m := newMarket(t)
	p := m.plugin
	cfg, db, _ := p.configured()
	host := string(m.host.ClassicAddress)
	tenant := string(m.tenant.ClassicAddress)
	tenantKey, _ := memo.NewKey()
	wrongKey, _ := memo.NewKey()
	offer := strings.Repeat("CD", 32)
	nft := strings.Repeat("EF", 32)
	accepted := func(hash string, mm *memo.Memo, owner string) ledgerTx {
		t := ledgerTx{Hash: hash, LedgerIndex: 9, Validated: true, Tx: map[string]any{
			"TransactionType": "NFTokenAcceptOffer", "Account": tenant, "NFTokenSellOffer": offer}}
		if mm != nil {
			t.Tx["Memos"] = jsonMemos(*mm)
		}
		t.Meta.TransactionResult = "tesSUCCESS"
		t.Meta.AffectedNodes = append(t.Meta.AffectedNodes, map[string]struct {
			LedgerEntryType string         `json:"LedgerEntryType"`
			LedgerIndex     string         `json:"LedgerIndex"`
			FinalFields     map[string]any `json:"FinalFields"`
			NewFields       map[string]any `json:"NewFields"`
		}{"DeletedNode": {LedgerEntryType: "NFTokenOffer", LedgerIndex: offer, FinalFields: map[string]any{"Owner": owner, "NFTokenID": nft, "Amount": "7000"}}})
		return t
	}
	good := sealedAcquire(t, p.key.Public(), tenantKey, "x")
	plain, _ := memo.Encode(memo.TypeAcquire, &memo.Acquire{TenantKey: hex.EncodeToString(tenantKey.Public()), Spec: "x"})
	badTenantKey, _ := memo.EncodeSealed(memo.TypeAcquire, p.key.Public(), &memo.Acquire{TenantKey: "00", Spec: "x"})
	extend, _ := memo.Encode(memo.TypeExtend, &memo.Extend{Lease: nft})
	garbage := memo.Memo{Type: memo.TypeAcquire, Format: memo.FormatSealed, Data: []byte("garbage")}
	wrong := sealedAcquire(t, wrongKey.Public(), tenantKey, "x")
	oversized := accepted("H", &good, host)
	oversized.Tx["Memos"] = []any{map[string]any{"Memo": map[string]any{
		"MemoType":   hex.EncodeToString([]byte("kigumi/1/acquire")),
		"MemoFormat": hex.EncodeToString([]byte(memo.FormatSealed)),
		"MemoData":   strings.Repeat("AA", 1<<20)}}}
	failed := accepted("H", &good, host)
	failed.Meta.TransactionResult = "tecINSUFFICIENT_FUNDS"
	payment := ledgerTx{Hash: "H", LedgerIndex: 9, Validated: true, Tx: map[string]any{
		"TransactionType": "Payment", "Account": tenant, "Destination": host, "Amount": "7000", "Memos": jsonMemos(good)}}
	payment.Meta.TransactionResult = "tesSUCCESS"

	refused := []struct {
		name string
		tx   ledgerTx
		why  string
	}{
		{"garbage", accepted("H", &garbage, host), "cannot be read"},
		{"sealed to another key", accepted("H", &wrong, host), "cannot be read"},
		{"plaintext", accepted("H", &plain, host), "sealed"},
		{"bad tenant key", accepted("H", &badTenantKey, host), "tenant_key"},
		{"oversized memo", oversized, "too large"},
		{"no memo", accepted("H", nil, host), "no acquire memo"},
		{"an extend memo", accepted("H", &extend, host), "not an acquire"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			if err := p.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketLeases).Delete([]byte(nft)) }); err != nil {
				t.Fatal(err)
			}
			for range 2 { // the replay of the same transaction changes nothing
				if ev, ok := p.handle(tt.tx, cfg, db, host); ok {
					t.Fatalf("an event: %+v", ev)
				}
			}
			var l lease
			if found, err := getJSON(p.db, bucketLeases, []byte(nft), &l); !found || err != nil {
				t.Fatalf("no refused lease stored: %v", err)
			}
			if !l.Ended || !strings.Contains(l.Refund, tt.why) || l.Paid != 7000 || l.Account != tenant || l.Acquire != "H" {
				t.Fatalf("lease %+v, want it ended with a refund of 7000 saying %q", l, tt.why)
			}
		})
	}
	if err := p.db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucketLeases).Delete([]byte(nft)) }); err != nil {
		t.Fatal(err)
	}
	ignored := []struct {
		name string
		tx   ledgerTx
	}{
		{"another owner's offer", accepted("H", &good, string(m.registry.ClassicAddress))},
		{"a failed accept", failed},
		{"a payment with an acquire memo", payment},
	}
	for _, tt := range ignored {
		t.Run(tt.name, func(t *testing.T) {
			if ev, ok := p.handle(tt.tx, cfg, db, host); ok {
				t.Fatalf("an event: %+v", ev)
			}
			if found, _ := getJSON(p.db, bucketLeases, []byte(nft), &lease{}); found {
				t.Fatal("a lease was stored")
			}
		})
	}
	ev, ok := p.handle(accepted("G", &good, host), cfg, db, host)
	if !ok || ev.ID != "G" || ev.Ledger != 9 || ev.ExpiresLedger != 9+1000 || string(ev.Spec) != "x" {
		t.Fatalf("the good acquire: %+v, %v", ev, ok)
	}
	again, ok := p.handle(accepted("G", &good, host), cfg, db, host)
	if !ok || again.ID != "G" || again.ExpiresLedger != ev.ExpiresLedger {
		t.Fatalf("the replayed acquire: %+v, %v; want the same event", again, ok)
	}
	if ev, ok := p.handle(accepted("G2", &good, host), cfg, db, host); ok {
		t.Fatalf("a second purchase of a leased NFT: %+v", ev)
	}
	var l lease
	if _, err := getJSON(p.db, bucketLeases, []byte(nft), &l); err != nil || l.Acquire != "G" || l.Ended {
		t.Fatalf("the lease after the second purchase: %+v, %v", l, err)
	}
}

// jsonMemos is a memo as a transaction's Memos decode from JSON.
func jsonMemos(mm memo.Memo) any {
	raw, _ := json.Marshal([]any{mm.XRPL()})
	var out any
	_ = json.Unmarshal(raw, &out)
	return out
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	w := testWallet(t, "secp256k1", 9)
	write := func(name string, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", w.Seed, 0o600)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	notRoot := write("notroot", w.Seed, 0o600)
	if err := os.Chown(notRoot, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path string
		ok         bool
	}{
		{"root only", good, true},
		{"readable by others", write("world", w.Seed, 0o644), false},
		{"readable by group", write("group", w.Seed, 0o640), false},
		{"a symlink", link, false},
		{"a directory", dir, false},
		{"missing", filepath.Join(dir, "none"), false},
		{"not owned by root", notRoot, false},
		{"empty", write("empty", "", 0o600), false},
		{"no seed", write("junk", "sNOTASEEDxxxxxxxxxxxxxxxxxxxx", 0o600), false},
		{"too large", write("large", strings.Repeat("s", maxSecretFile+1), 0o600), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(hclog.NewNullLogger())
			defer p.Close()
			err := p.Configure(context.Background(), sdk.ConfigureRequest{DataDir: t.TempDir(), Settings: sdk.Config{
				"url": "ws://127.0.0.1:1", "secret_file": tt.path,
			}})
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var se *sdk.Error
			if !errors.As(err, &se) || se.Attribute != "secret_file" {
				t.Fatalf("Configure: %v, want an error on secret_file", err)
			}
			if strings.Contains(err.Error(), "sNOTASEED") || strings.Contains(err.Error(), w.Seed) {
				t.Fatalf("the error shows the secret: %v", err)
			}
		})
	}
}

func TestConfigureRejects(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "s")
	if err := os.WriteFile(secret, []byte(testWallet(t, "ed25519", 4).Seed), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		attr string
		val  any
	}{
		{"url", "ws://example.com"},
		{"url", "http://127.0.0.1"},
		{"secret_file", "relative"},
		{"slots", float64(0)},
		{"slots", float64(257)},
		{"slots", 1.5},
		{"price_drops", float64(0)},
		{"lease_ledgers", float64(0)},
		{"heartbeat", "soon"},
		{"poll", "0s"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s=%v", tt.attr, tt.val), func(t *testing.T) {
			s := sdk.Config{"url": "wss://s1.ripple.com", "secret_file": secret}
			s[tt.attr] = tt.val
			p := New(hclog.NewNullLogger())
			defer p.Close()
			err := p.Configure(context.Background(), sdk.ConfigureRequest{DataDir: t.TempDir(), Settings: s})
			var se *sdk.Error
			if !errors.As(err, &se) || se.Attribute != tt.attr || se.Code != sdk.CodeInvalid {
				t.Fatalf("Configure: %v, want an invalid %s", err, tt.attr)
			}
		})
	}
}

// TestConfigureAgain: a plugin configured again on the same data
// directory, as the agent does when it starts, keeps its store; another
// data directory gets its own.
func TestConfigureAgain(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "s")
	if err := os.WriteFile(secret, []byte(testWallet(t, "ed25519", 5).Seed), 0o600); err != nil {
		t.Fatal(err)
	}
	p := New(hclog.NewNullLogger())
	defer p.Close()
	first, second := t.TempDir(), t.TempDir()
	for i, dir := range []string{first, first, second, first} {
		err := p.Configure(context.Background(), sdk.ConfigureRequest{DataDir: dir, Settings: sdk.Config{
			"url": "ws://127.0.0.1:1", "secret_file": secret,
		}})
		if err != nil {
			t.Fatalf("Configure %d on %s: %v", i, dir, err)
		}
		if got := p.db.Path(); got != filepath.Join(dir, "xrpl.db") {
			t.Fatalf("Configure %d: the store is %s, want one in %s", i, got, dir)
		}
	}
}

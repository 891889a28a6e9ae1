package market

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Peersyst/xrpl-go/pkg/crypto"
	"github.com/Peersyst/xrpl-go/xrpl/queries/account"
	"github.com/Peersyst/xrpl-go/xrpl/queries/transactions"
	"github.com/Peersyst/xrpl-go/xrpl/transaction/types"
	"github.com/Peersyst/xrpl-go/xrpl/wallet"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/internal/fakeledger"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/xrplledger"
)

// market is a fake ledger (the test double of rippled) with a registry,
// a host played by hand (its wallet, its message key) and a tenant's
// Client.
type market struct {
	srv      *fakeledger.Server
	registry string
	host     *Client // the host's wallet, to submit its transactions by hand
	hostKey  memo.Key
	tenant   *Client
}

func newWallet(t *testing.T) wallet.Wallet {
	t.Helper()
	w, err := wallet.New(crypto.ED25519())
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func dial(t *testing.T, srv *fakeledger.Server, w wallet.Wallet) *Client {
	t.Helper()
	c, err := Dial(srv.URL(), w)
	if err != nil {
		t.Fatal(err)
	}
	c.Poll = 50 * time.Millisecond
	t.Cleanup(c.Close)
	return c
}

func newMarket(t *testing.T) *market {
	t.Helper()
	srv, err := fakeledger.Start(fakeledger.AutoClose(50 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	hostW, tenantW, registryW := newWallet(t), newWallet(t), newWallet(t)
	for _, w := range []wallet.Wallet{hostW, tenantW, registryW} {
		srv.Fund(string(w.ClassicAddress), 1_000_000_000)
	}
	k, err := memo.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return &market{srv: srv, registry: string(registryW.ClassicAddress), host: dial(t, srv, hostW), hostKey: k, tenant: dial(t, srv, tenantW)}
}

// send submits tx from c's wallet and requires tesSUCCESS.
func send(t *testing.T, c *Client, tx map[string]any) Sent {
	t.Helper()
	s, err := c.submit(context.Background(), tx)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// heartbeat sends h from the host c to the registry.
func (m *market) heartbeat(t *testing.T, c *Client, to string, h memo.Host) {
	t.Helper()
	mm, err := memo.Encode(memo.TypeHost, &h)
	if err != nil {
		t.Fatal(err)
	}
	send(t, c, xrplledger.PaymentTx(c.Address(), to, 1, mm))
}

// offerLease mints an NFT of taxon with uri and offers it for sale,
// returning the offer's ID and the NFT's.
func (m *market) offerLease(t *testing.T, taxon uint32, uri string, drops string) (offer, nft string) {
	t.Helper()
	nfts := func() map[string]bool {
		var res struct {
			NFTs []struct {
				ID string `json:"NFTokenID"`
			} `json:"account_nfts"`
		}
		if err := m.host.request(&account.NFTsRequest{Account: types.Address(m.host.Address())}, &res); err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, n := range res.NFTs {
			ids[n.ID] = true
		}
		return ids
	}
	before, offers := nfts(), map[string]bool{}
	for _, o := range m.srv.SellOffers(m.host.Address()) {
		offers[o] = true
	}
	send(t, m.host, map[string]any{"TransactionType": "NFTokenMint", "Account": m.host.Address(), "NFTokenTaxon": taxon,
		"Flags": uint32(9), "URI": strings.ToUpper(hex.EncodeToString([]byte(uri)))})
	for id := range nfts() {
		if !before[id] {
			nft = id
		}
	}
	send(t, m.host, map[string]any{"TransactionType": "NFTokenCreateOffer", "Account": m.host.Address(), "NFTokenID": nft,
		"Amount": drops, "Flags": uint32(1)})
	for _, o := range m.srv.SellOffers(m.host.Address()) {
		if !offers[o] {
			offer = o
		}
	}
	if nft == "" || offer == "" {
		t.Fatalf("offerLease: NFT %q, offer %q", nft, offer)
	}
	return offer, nft
}

// reply sends a reply from c to the tenant answering ref, with payload
// sealed to key.
func (m *market) reply(t *testing.T, c *Client, ref string, ok bool, to memo.Key, payload string) {
	t.Helper()
	body := memo.Reply{Ref: ref, OK: ok, Message: "tenant is running"}
	if payload != "" {
		var err error
		if body.Payload, err = memo.Seal(to.Public(), []byte(payload)); err != nil {
			t.Fatal(err)
		}
	}
	mm, err := memo.Encode(memo.TypeReply, &body)
	if err != nil {
		t.Fatal(err)
	}
	send(t, c, xrplledger.PaymentTx(c.Address(), m.tenant.Address(), 1, mm))
}

func (m *market) hostInfo(free int) memo.Host {
	return memo.Host{Software: "test", Capacity: 2, Free: free, PriceDrops: "5000", LeaseLedgers: 4, Key: hex.EncodeToString(m.hostKey.Public())}
}

const leaseSpec = `tenant "mine" {
  instance "app" {
    runtime = "wasm"
    module  = "app.wasm"
  }
}
`

// TestHosts reads the registry: each host's latest heartbeat, garbage
// and heartbeats to other accounts skipped, and only the host's sell
// offers of lease NFTs it issued.
func TestHosts(t *testing.T) {
	m := newMarket(t)
	m.heartbeat(t, m.host, m.registry, m.hostInfo(2))
	offer, nft := m.offerLease(t, xrplledger.LeaseTaxon, "kigumi:lease:1?ledgers=4&price=5000", "5000")
	m.offerLease(t, 7, "kigumi:lease:1?ledgers=4&price=5000", "5000")                           // not a lease NFT
	m.offerLease(t, xrplledger.LeaseTaxon, "https://example.com/a-picture", "5000")             // no lease terms
	m.heartbeat(t, m.host, m.registry, m.hostInfo(1))                                           // the latest
	m.heartbeat(t, m.host, m.tenant.Address(), memo.Host{Capacity: 99, Key: m.hostInfo(1).Key}) // not to the registry
	// A stranger's garbage: a host memo whose key is no ed25519 key, and
	// a memo that is not JSON.
	stranger := dial(t, m.srv, newWallet(t))
	m.srv.Fund(stranger.Address(), 1_000_000_000)
	m.heartbeat(t, stranger, m.registry, memo.Host{Capacity: 5, Key: "00"})
	send(t, stranger, xrplledger.PaymentTx(stranger.Address(), m.registry, 1, memo.Memo{Type: memo.TypeHost, Format: memo.FormatJSON, Data: []byte("{not json")}))

	hosts, err := m.tenant.Hosts(context.Background(), m.registry)
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 1 {
		t.Fatalf("hosts = %+v, want the one host", hosts)
	}
	h := hosts[0]
	if h.Address != m.host.Address() || h.Free != 1 || h.Capacity != 2 || h.PriceDrops != "5000" || h.LeaseLedgers != 4 || h.Key != m.hostInfo(1).Key {
		t.Errorf("host = %+v, want its latest heartbeat to the registry", h)
	}
	want := Offer{ID: offer, Lease: nft, Tenant: xrplledger.TenantName(nft), PriceDrops: 5000, LeaseLedgers: 4}
	if len(h.Offers) != 1 || h.Offers[0] != want {
		t.Errorf("offers = %+v, want [%+v]", h.Offers, want)
	}
	one, err := m.tenant.Host(context.Background(), m.host.Address())
	if err != nil {
		t.Fatal(err)
	}
	// The host's own latest heartbeat is the one to the tenant's account.
	if one.Capacity != 99 || len(one.Offers) != 1 {
		t.Errorf("Host = %+v, want its latest heartbeat and its offer", one)
	}
	if _, err := m.tenant.Host(context.Background(), m.registry); err == nil || !strings.Contains(err.Error(), "no heartbeat") {
		t.Errorf("Host of an account that sent no heartbeat: %v", err)
	}
}

// acquire buys a fresh lease of the host's with leaseSpec.
func (m *market) acquire(t *testing.T) Acquisition {
	t.Helper()
	m.heartbeat(t, m.host, m.registry, m.hostInfo(1))
	m.offerLease(t, xrplledger.LeaseTaxon, "kigumi:lease:1?ledgers=1000&price=5000", "5000")
	h, err := m.tenant.Host(context.Background(), m.host.Address())
	if err != nil {
		t.Fatal(err)
	}
	_, src, diags := PrepareSpec("req.hcl", []byte(leaseSpec), h.Offers[0].Tenant)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	a, err := m.tenant.Acquire(context.Background(), h, h.Offers[0], src)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAcquireReply buys a lease: the request on the ledger opens with the
// host's key only and declares the lease's tenant; the host's reply,
// sealed to the tenant, is read once it comes, and replies from others
// answering the same transaction are ignored.
func TestAcquireReply(t *testing.T) {
	m := newMarket(t)
	a := m.acquire(t)
	var tx struct {
		Tx map[string]any `json:"tx_json"`
	}
	if err := m.tenant.request(&transactions.TxRequest{Transaction: a.Hash}, &tx); err != nil {
		t.Fatal(err)
	}
	mm, err := memo.Parse(tx.Tx["Memos"])
	if err != nil || mm.Format != memo.FormatSealed {
		t.Fatalf("the acquire's memo: %+v, %v; want a sealed one", mm, err)
	}
	var req memo.Acquire
	if err := memo.Decode(mm, &m.hostKey, false, &req); err != nil {
		t.Fatalf("the host cannot open the request: %v", err)
	}
	if req.TenantKey != hex.EncodeToString(m.tenant.Key().Public()) || !strings.Contains(req.Spec, `tenant "`+a.Tenant+`"`) || a.Tenant != xrplledger.TenantName(a.Lease) {
		t.Fatalf("request %+v, want the tenant's key and tenant %q", req, a.Tenant)
	}

	stranger := dial(t, m.srv, newWallet(t))
	m.srv.Fund(stranger.Address(), 1_000_000_000)
	m.reply(t, stranger, a.Hash, false, m.tenant.Key(), `{"forged":true}`)
	m.reply(t, m.host, a.Hash, true, m.tenant.Key(), `{"host":"h1","tenant":"`+a.Tenant+`","instances":["app"]}`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := m.tenant.WaitReply(ctx, m.host.Address(), a.Hash, a.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	var details struct {
		Host      string   `json:"host"`
		Instances []string `json:"instances"`
	}
	if !r.OK || r.Ref != a.Hash || json.Unmarshal(r.Details, &details) != nil || details.Host != "h1" || len(details.Instances) != 1 {
		t.Fatalf("reply = %+v, want the host's, opened", r)
	}
}

// TestReplySealedToAnotherKey: a reply whose payload the tenant's key
// does not open is refused, with an error that says so.
func TestReplySealedToAnotherKey(t *testing.T) {
	m := newMarket(t)
	a := m.acquire(t)
	other, err := memo.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	m.reply(t, m.host, a.Hash, true, other, `{"host":"h1"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := m.tenant.WaitReply(ctx, m.host.Address(), a.Hash, a.Ledger)
	if !errors.Is(err, ErrReplyRefused) || !strings.Contains(err.Error(), "not sealed to this tenant's key") || r.Details != nil {
		t.Fatalf("WaitReply = %+v, %v; want it refused", r, err)
	}
}

// TestTecReported: an acquire validated with a tec* result (the offer is
// gone) is an error naming the result, though xrpl-go reports none.
func TestTecReported(t *testing.T) {
	m := newMarket(t)
	m.heartbeat(t, m.host, m.registry, m.hostInfo(1))
	h, err := m.tenant.Host(context.Background(), m.host.Address())
	if err != nil {
		t.Fatal(err)
	}
	_, src, _ := PrepareSpec("req.hcl", []byte(leaseSpec), "l-0")
	gone := Offer{ID: strings.Repeat("AB", 32), Lease: strings.Repeat("00", 32)}
	_, err = m.tenant.Acquire(context.Background(), h, gone, src)
	var te *TxError
	if !errors.As(err, &te) || te.Result != "tecOBJECT_NOT_FOUND" || te.Type != "NFTokenAcceptOffer" || !strings.Contains(err.Error(), "validated with result tecOBJECT_NOT_FOUND") {
		t.Fatalf("Acquire of a gone offer: %v; want a TxError with tecOBJECT_NOT_FOUND", err)
	}
}

// TestWaitReplyTimeout: without a reply, WaitReply ends with its context
// and says what it waited for.
func TestWaitReplyTimeout(t *testing.T) {
	m := newMarket(t)
	a := m.acquire(t)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := m.tenant.WaitReply(ctx, m.host.Address(), a.Hash, a.Ledger)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no reply from host "+m.host.Address()) {
		t.Fatalf("WaitReply without a reply: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("WaitReply took %v past a 500ms timeout", d)
	}
}

// TestLeases: a lease bought, extended and answered shows as active with
// its expiry and replies; once the host burns it, as ended. Extend and
// terminate of a lease not held are refused before anything is sent.
func TestLeases(t *testing.T) {
	m := newMarket(t)
	a := m.acquire(t)
	m.reply(t, m.host, a.Hash, true, m.tenant.Key(), `{"host":"h1"}`)
	ext, err := m.tenant.Extend(context.Background(), a.Lease, 2)
	if err != nil {
		t.Fatal(err)
	}
	m.reply(t, m.host, ext.Hash, true, m.tenant.Key(), "")
	st, err := m.tenant.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Leases) != 1 {
		t.Fatalf("status = %+v, want one lease", st)
	}
	l := st.Leases[0]
	if l.Lease != a.Lease || l.Host != m.host.Address() || !l.Held || l.State != "active" || l.ExtendedPeriods != 2 ||
		l.ExpiresLedger != a.Ledger+3*1000 || len(l.Replies) != 2 || l.Replies[0].Ref != a.Hash || string(l.Replies[0].Details) != `{"host":"h1"}` {
		t.Fatalf("lease = %+v", l)
	}
	if m.srv.Balance(m.host.Address()) < 1_000_000_000+3*5000-1000 {
		t.Errorf("the host was not paid the price and 2 periods")
	}

	// A lease NFT bought without an acquire shows as held, not acquired.
	other, otherNFT := m.offerLease(t, xrplledger.LeaseTaxon, "kigumi:lease:1?ledgers=1000&price=5000", "5000")
	send(t, m.tenant, map[string]any{"TransactionType": "NFTokenAcceptOffer", "Account": m.tenant.Address(), "NFTokenSellOffer": other, "Flags": uint32(0)})
	st, err = m.tenant.Leases(context.Background())
	if err != nil || len(st.Leases) != 2 || st.Leases[1].Lease != otherNFT || st.Leases[1].State != "not acquired" || !st.Leases[1].Held || st.Leases[1].ExpiresLedger != 0 {
		t.Fatalf("status with a lease NFT bought without an acquire = %+v, %v", st, err)
	}

	// The host burns the NFT: the lease has ended.
	send(t, m.host, map[string]any{"TransactionType": "NFTokenBurn", "Account": m.host.Address(), "NFTokenID": a.Lease, "Owner": m.tenant.Address(), "Flags": uint32(0)})
	st, err = m.tenant.Leases(context.Background())
	if err != nil || len(st.Leases) != 2 || st.Leases[0].State != "ended" || st.Leases[0].Held {
		t.Fatalf("status after the burn = %+v, %v", st, err)
	}
	for name, f := range map[string]func() (Sent, error){
		"extend":    func() (Sent, error) { return m.tenant.Extend(context.Background(), a.Lease, 1) },
		"terminate": func() (Sent, error) { return m.tenant.Terminate(context.Background(), a.Lease) },
	} {
		if _, err := f(); err == nil || !strings.Contains(err.Error(), "you hold no lease") {
			t.Errorf("%s of a burned lease: %v", name, err)
		}
	}
	if _, err := m.tenant.Extend(context.Background(), "nonsense", 1); err == nil || !strings.Contains(err.Error(), "is not a lease ID") {
		t.Errorf("extend of a bad lease ID: %v", err)
	}
}

// TestPrepareSpec names the request's tenant after the lease and refuses,
// with diagnostics, what the host would refuse.
func TestPrepareSpec(t *testing.T) {
	_, out, diags := PrepareSpec("req.hcl", []byte(leaseSpec), "l-0123456789abcdef")
	if diags.HasErrors() || !strings.Contains(string(out), `tenant "l-0123456789abcdef" {`) || strings.Contains(string(out), "mine") {
		t.Fatalf("PrepareSpec = %s, %v", out, diags)
	}
	// Comments take memo space and go; what remains still decodes.
	commented := "# A request.\n\n" + strings.Replace(leaseSpec, `"wasm"`, `"wasm" # the runtime`+"\n    /* block */", 1) + "// end\n"
	_, out2, diags := PrepareSpec("req.hcl", []byte(commented), "l-0123456789abcdef")
	if diags.HasErrors() || string(out2) != string(out) {
		t.Fatalf("PrepareSpec of a commented spec = %q, %v; want %q", out2, diags, out)
	}
	for _, tt := range []struct {
		name, src, want string
	}{
		{"two tenants", leaseSpec + strings.ReplaceAll(leaseSpec, "mine", "other"), "exactly one tenant"},
		{"no tenant", "# nothing\n", "exactly one tenant"},
		{"bad syntax", `tenant "x" {`, "Unclosed"},
		{"too deep", "tenant \"x\" {\n a = " + strings.Repeat("[", 100_000) + "\n}\n", "nest"},
		{"too large", "# " + strings.Repeat("x", 300<<10), "limit"},
		{"unknown attribute", strings.Replace(leaseSpec, "runtime", "runtim", 1), "runtim"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, out, diags := PrepareSpec("req.hcl", []byte(tt.src), "l-0")
			if out != nil || !diags.HasErrors() || !strings.Contains(strings.ToLower(diags.Error()), strings.ToLower(tt.want)) {
				t.Fatalf("PrepareSpec = %q, %v; want an error about %q", out, diags, tt.want)
			}
		})
	}
}

// TestWallet: a new wallet file is mode 0600 and reads back; one others
// may read is refused; a bad seed is refused without quoting the file.
func TestWallet(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w")
	w, err := NewWallet(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("wallet file: %v, %v", fi.Mode(), err)
	}
	if _, err := NewWallet(path); err == nil {
		t.Fatal("NewWallet overwrote a wallet")
	}
	r, err := ReadWallet(path)
	if err != nil || r.ClassicAddress != w.ClassicAddress {
		t.Fatalf("ReadWallet = %v, %v", r.ClassicAddress, err)
	}
	k1, _ := MessageKey(w)
	k2, _ := MessageKey(r)
	if !k1.Public().Equal(k2.Public()) {
		t.Fatal("the message key is not derived from the wallet alone")
	}
	os.Chmod(path, 0o640)
	if _, err := ReadWallet(path); err == nil || !strings.Contains(err.Error(), "chmod 600") || strings.Contains(err.Error(), w.Seed) {
		t.Fatalf("ReadWallet of a group-readable file: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("sEdNOTASEEDATALL123\n"), 0o600)
	if _, err := ReadWallet(bad); err == nil || strings.Contains(err.Error(), "NOTASEED") {
		t.Fatalf("ReadWallet of a bad seed: %v", err)
	}
	if _, err := ReadWallet(dir); err == nil {
		t.Fatal("ReadWallet read a directory")
	}
}

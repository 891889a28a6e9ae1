package xrplledger

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Peersyst/xrpl-go/pkg/crypto"
	"github.com/Peersyst/xrpl-go/xrpl/transaction"
	"github.com/Peersyst/xrpl-go/xrpl/wallet"
	"github.com/hashicorp/go-hclog"

	"github.com/kigumi/kigumi/core/agent"
	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/engine/enginetest"
	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/policy"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/core/state"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/internal/fakeledger"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
)

// benchWorld is the engine's fake world (an in-memory runtime) with the
// xrpl plugin as its ledger.
type benchWorld struct {
	*enginetest.World
	ledger sdk.Ledger
}

func (w benchWorld) Ledger(context.Context, string, pluginhost.Scope) (sdk.Ledger, error) {
	return w.ledger, nil
}

// stamps records when things happened, by key, and wakes waiters.
type stamps struct {
	mu   sync.Mutex
	at   map[string]time.Time
	wake chan struct{}
}

func newStamps() *stamps { return &stamps{at: map[string]time.Time{}, wake: make(chan struct{}, 1)} }

func (s *stamps) mark(key string) {
	s.mu.Lock()
	if _, ok := s.at[key]; !ok {
		s.at[key] = time.Now()
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// wait waits for key's time.
func (s *stamps) wait(b *testing.B, key string) time.Time {
	b.Helper()
	deadline := time.After(time.Minute)
	for {
		s.mu.Lock()
		at, ok := s.at[key]
		s.mu.Unlock()
		if ok {
			return at
		}
		select {
		case <-s.wake:
		case <-time.After(5 * time.Millisecond):
		case <-deadline:
			b.Fatalf("no %s within a minute", key)
		}
	}
}

// BenchmarkLeaseLatency runs the host side whole: the fake ledger (a
// test double of rippled) closing a ledger on demand, as soon as a
// transaction is submitted; the xrpl plugin, called in process (gRPC's
// test harness logs on stderr, which would break the benchmark's output
// line; a local gRPC call costs well under a millisecond); and the agent
// with the engine on an in-memory runtime. Each iteration, a tenant
// buys the lease offered with a sealed acquire; the benchmark measures
// from the close of the ledger that validates the acquire to the lease's
// instance starting (running-ms) and to the reply's submit reaching the
// ledger (reply-ms), then terminates the lease and waits for the slot to
// be offered again. The baseline, in the same run and agent: a spec
// file's tenant written to the spec directory, to its instance starting
// (file-ms, which includes the file source's settle delay).
func BenchmarkLeaseLatency(b *testing.B) {
	replyType := strings.ToUpper(hex.EncodeToString([]byte("kigumi/1/" + memo.TypeReply)))
	closedAt, replied := newStamps(), newStamps()
	kick := make(chan struct{}, 1)
	srv, err := fakeledger.Start(
		fakeledger.OnSubmit(func(hash string, tx map[string]any) {
			if memos, _ := tx["Memos"].([]any); len(memos) > 0 {
				if mm, _ := memos[0].(map[string]any)["Memo"].(map[string]any); strings.EqualFold(fmt.Sprint(mm["MemoType"]), replyType) {
					replied.mark(fmt.Sprint(tx["Destination"]))
				}
			}
			select {
			case kick <- struct{}{}:
			default:
			}
		}),
		fakeledger.OnClose(func(_ uint32, hashes []string) {
			for _, h := range hashes {
				closedAt.mark(h)
			}
		}))
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	stop := make(chan struct{})
	defer close(stop)
	go func() { // a ledger closes as soon as something is submitted
		for {
			select {
			case <-stop:
				return
			case <-kick:
				srv.CloseLedger()
			case <-time.After(time.Second):
				srv.CloseLedger()
			}
		}
	}()

	host, registry := testWallet(b, "secp256k1", 1), testWallet(b, "secp256k1", 3)
	srv.Fund(string(host.ClassicAddress), 1_000_000_000_000)
	srv.Fund(string(registry.ClassicAddress), 1_000_000_000)
	dir := b.TempDir()
	secret := filepath.Join(dir, "host.secret")
	if err := os.WriteFile(secret, []byte(host.Seed), 0o600); err != nil {
		b.Fatal(err)
	}
	policies, err := filepath.Abs("../../../policies")
	if err != nil {
		b.Fatal(err)
	}
	hostFile, err := enginetest.WriteHost(dir, policies, 0, 1)
	if err != nil {
		b.Fatal(err)
	}
	src, err := os.ReadFile(hostFile)
	if err != nil {
		b.Fatal(err)
	}
	hostSpec := strings.NewReplacer("instances = 1\n", "instances = 64\n", `memory    = "2GiB"`, `memory    = "64GiB"`).Replace(string(src)) +
		fmt.Sprintf("ledger \"xrpl\" {\n  url = %q\n  secret_file = %q\n  registry = %q\n  price_drops = %d\n  heartbeat = \"1h\"\n  poll = \"50ms\"\n}\n",
			srv.URL(), secret, registry.ClassicAddress, testPrice)
	if err := os.WriteFile(hostFile, []byte(hostSpec), 0o644); err != nil {
		b.Fatal(err)
	}
	p := spec.NewParser()
	h, diags := p.LoadHost(hostFile)
	if diags.HasErrors() {
		b.Fatal(diags)
	}
	set, diags := policy.Load(p, h.PolicyFiles)
	if diags.HasErrors() {
		b.Fatal(diags)
	}
	if err := engine.PrepareStateDir(h); err != nil {
		b.Fatal(err)
	}
	st, err := state.Open(engine.DBPath(h))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	plugin := New(hclog.NewNullLogger())
	defer plugin.Close()
	world := enginetest.NewWorld()
	started := newStamps()
	world.OnStart = started.mark
	e := engine.New(h, st, benchWorld{world, plugin}, world)
	if diags, err := e.Configure(context.Background()); err != nil || diags.HasErrors() {
		b.Fatal(diags, err)
	}
	a := agent.New(agent.Config{Host: h, Engine: e, Store: st, Policies: set, Resync: time.Hour, Log: hclog.NewNullLogger()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			b.Error(err)
		}
	}()
	defer func() { cancel(); <-done }()

	tk, err := dial(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer tk.close()
	offer := func() string {
		deadline := time.Now().Add(time.Minute)
		for {
			if o := srv.SellOffers(string(host.ClassicAddress)); len(o) == 1 {
				return o[0]
			}
			if time.Now().After(deadline) {
				b.Fatal("no lease offered within a minute")
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	tenantKey, _ := memo.NewKey()
	var running, reply, file []time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		o := offer()
		var nft string
		for _, l := range srv.SellOfferNFTs(string(host.ClassicAddress)) {
			nft = l
		}
		tenant, err := wallet.New(crypto.ED25519())
		if err != nil {
			b.Fatal(err)
		}
		srv.Fund(string(tenant.ClassicAddress), 1_000_000)
		name := TenantName(nft)
		acq, err := memo.EncodeSealed(memo.TypeAcquire, plugin.key.Public(), &memo.Acquire{
			TenantKey: hex.EncodeToString(tenantKey.Public()),
			Spec:      fmt.Sprintf("tenant %q {\n  instance \"web\" {\n    runtime = \"wasm\"\n    module = \"app.wasm\"\n  }\n}\n", name),
		})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		hash := submitAs(b, tk, tenant, acceptOfferTx(string(tenant.ClassicAddress), o, acq))
		t0 := closedAt.wait(b, hash)
		running = append(running, started.wait(b, name+"/web").Sub(t0))
		reply = append(reply, replied.wait(b, string(tenant.ClassicAddress)).Sub(t0))
		b.StopTimer()

		// The baseline: a spec file's tenant, to running.
		fileTenant := fmt.Sprintf("file%04d", i)
		f0 := time.Now()
		if err := enginetest.WriteTenant(h.TenantDir, fileTenant, 1, "Hello"); err != nil {
			b.Fatal(err)
		}
		file = append(file, started.wait(b, fileTenant+"/app00").Sub(f0))
		if err := os.Remove(filepath.Join(h.TenantDir, fileTenant+".hcl")); err != nil {
			b.Fatal(err)
		}

		// The lease ends; its slot is offered again, with a new NFT.
		term, _ := memo.Encode(memo.TypeTerminate, &memo.Terminate{Lease: nft})
		submitAs(b, tk, tenant, paymentTx(string(tenant.ClassicAddress), string(host.ClassicAddress), 1, term))
		for slices.Contains(srv.SellOfferNFTs(string(host.ClassicAddress)), nft) || len(srv.SellOffers(string(host.ClassicAddress))) == 0 {
			time.Sleep(2 * time.Millisecond)
		}
		b.StartTimer()
	}
	b.StopTimer()
	pct := func(lat []time.Duration, p float64) float64 {
		lat = slices.Clone(lat)
		slices.Sort(lat)
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(running, 0.5), "running-p50-ms")
	b.ReportMetric(pct(running, 0.99), "running-p99-ms")
	b.ReportMetric(pct(reply, 0.5), "reply-p50-ms")
	b.ReportMetric(pct(reply, 0.99), "reply-p99-ms")
	b.ReportMetric(pct(file, 0.5), "file-p50-ms")
	b.ReportMetric(pct(file, 0.99), "file-p99-ms")
}

// submitAs signs a transaction of w's and submits it over k, without
// waiting for it to be validated; it returns its hash.
func submitAs(b *testing.B, k *conn, w wallet.Wallet, tx Tx) string {
	b.Helper()
	flat := transaction.FlatTransaction(tx)
	if err := k.c.Autofill(&flat); err != nil {
		b.Fatal(err)
	}
	blob, hash, err := w.Sign(flat)
	if err != nil {
		b.Fatal(err)
	}
	if res, err := k.c.SubmitTxBlob(blob, false); err != nil || res.EngineResult != "tesSUCCESS" {
		b.Fatalf("submit: %+v, %v", res, err)
	}
	return hash
}

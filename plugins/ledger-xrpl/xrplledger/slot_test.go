package xrplledger

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/Peersyst/xrpl-go/xrpl/queries/account"
	"github.com/Peersyst/xrpl-go/xrpl/transaction"
	"github.com/Peersyst/xrpl-go/xrpl/transaction/types"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/internal/fakeledger"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
)

// hostReply is a reply the host sent the tenant, with its amount.
type hostReply struct {
	memo.Reply
	drops uint64
}

// replies returns the replies the host sent to the tenant, oldest first.
func (m *market) replies() []hostReply {
	m.t.Helper()
	var out []hostReply
	host, tenant := string(m.host.ClassicAddress), string(m.tenant.ClassicAddress)
	err := m.tk.accountTx(context.Background(), tenant, 0, func(t ledgerTx) error {
		mm, err := memo.Parse(t.Tx["Memos"])
		if err != nil || mm.Type != memo.TypeReply || t.Tx["Account"] != host {
			return nil
		}
		var r hostReply
		if err := memo.Decode(mm, nil, true, &r.Reply); err != nil {
			m.t.Errorf("a reply that does not decode: %v", err)
		}
		r.drops, _ = strconv.ParseUint(t.Tx["Amount"].(string), 10, 64)
		out = append(out, r)
		return nil
	})
	if err != nil {
		m.t.Fatal(err)
	}
	return out
}

// tenantNFTs returns the NFTs the tenant holds.
func (m *market) tenantNFTs() []string {
	m.t.Helper()
	var res struct {
		NFTs []struct {
			ID string `json:"NFTokenID"`
		} `json:"account_nfts"`
	}
	if err := m.tk.request(&account.NFTsRequest{Account: m.tenant.ClassicAddress}, &res); err != nil {
		m.t.Fatal(err)
	}
	var out []string
	for _, n := range res.NFTs {
		out = append(out, n.ID)
	}
	return out
}

// offeredNFT returns the NFT of the host's one sell offer, "" if none.
func (m *market) offeredNFT() string {
	m.t.Helper()
	var res struct {
		Objects []struct {
			NFT string `json:"NFTokenID"`
		} `json:"account_objects"`
	}
	if err := m.tk.request(&account.ObjectsRequest{Account: types.Address(m.host.ClassicAddress), Type: account.NFTOfferObject}, &res); err != nil {
		m.t.Fatal(err)
	}
	if len(res.Objects) != 1 {
		return ""
	}
	return res.Objects[0].NFT
}

// TestSlotFreed: a lease that ends early frees its slot on the ledger:
// the NFT is burned, and a new one offered. A purchase whose acquire the
// host cannot read is refunded by the plugin itself, once, and makes no
// event; an acquire the core refuses is refunded by its error reply; a
// terminated lease is not refunded.
func TestSlotFreed(t *testing.T) {
	for _, tc := range []struct {
		name string
		// run buys the lease offered, with the tenant's key, and ends it;
		// it returns the acquire's hash.
		run    func(m *market, offer string, hostKey []byte, tenantKey memo.Key, events <-chan sdk.LeaseEvent) string
		refund bool
	}{
		{"a garbage acquire", func(m *market, offer string, _ []byte, _ memo.Key, _ <-chan sdk.LeaseEvent) string {
			garbage := memo.Memo{Type: memo.TypeAcquire, Format: memo.FormatSealed, Data: []byte("garbage, not a sealed box at all")}
			h, r := m.tenantSubmit(acceptOfferTx(string(m.tenant.ClassicAddress), offer, garbage))
			if r != "tesSUCCESS" {
				m.t.Fatalf("the purchase: %s", r)
			}
			return h
		}, true},
		{"an acquire the core refuses", func(m *market, offer string, hostKey []byte, tenantKey memo.Key, events <-chan sdk.LeaseEvent) string {
			h, r := m.tenantSubmit(acceptOfferTx(string(m.tenant.ClassicAddress), offer, sealedAcquire(m.t, hostKey, tenantKey, "denied")))
			if r != "tesSUCCESS" {
				m.t.Fatalf("the purchase: %s", r)
			}
			ev := m.next(events)
			if err := m.ledger.Reply(context.Background(), sdk.LeaseReply{EventID: ev.ID, IdempotencyKey: "k-" + ev.ID, Lease: ev.Lease,
				Message: "the request is denied by the host's policies"}); err != nil {
				m.t.Fatal(err)
			}
			return h
		}, true},
		{"a terminate", func(m *market, offer string, hostKey []byte, tenantKey memo.Key, events <-chan sdk.LeaseEvent) string {
			h, r := m.tenantSubmit(acceptOfferTx(string(m.tenant.ClassicAddress), offer, sealedAcquire(m.t, hostKey, tenantKey, "ok")))
			if r != "tesSUCCESS" {
				m.t.Fatalf("the purchase: %s", r)
			}
			ev := m.next(events)
			if err := m.ledger.Reply(context.Background(), sdk.LeaseReply{EventID: ev.ID, IdempotencyKey: "k-" + ev.ID, Lease: ev.Lease, OK: true}); err != nil {
				m.t.Fatal(err)
			}
			term, _ := memo.Encode(memo.TypeTerminate, &memo.Terminate{Lease: ev.Lease})
			th, r := m.tenantSubmit(paymentTx(string(m.tenant.ClassicAddress), string(m.host.ClassicAddress), 1, term))
			if r != "tesSUCCESS" {
				m.t.Fatalf("the terminate: %s", r)
			}
			if tev := m.next(events); tev.Kind != sdk.LeaseTerminated || tev.ID != th || tev.Lease != ev.Lease {
				m.t.Fatalf("event %+v, want the terminate %s", tev, th)
			}
			return h
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMarket(t)
			events, stop := m.events("")
			hostKey := m.hostKey()
			m.offer()
			lease := m.offeredNFT()
			tenantKey, _ := memo.NewKey()
			acq := tc.run(m, m.offer(), hostKey, tenantKey, events)

			// The NFT is burned and a new one offered.
			m.waitFor("the lease's NFT burned", func() bool { return len(m.tenantNFTs()) == 0 })
			m.waitFor("a new lease offered", func() bool { n := m.offeredNFT(); return n != "" && n != lease })

			var refunds []hostReply
			m.waitFor("the replies", func() bool {
				refunds = refunds[:0]
				for _, r := range m.replies() {
					if r.Ref == acq && !r.OK {
						refunds = append(refunds, r)
					}
				}
				return !tc.refund || len(refunds) > 0
			})
			switch {
			case !tc.refund && len(refunds) != 0:
				t.Fatalf("refunds %+v of a lease that was served", refunds)
			case tc.refund && (len(refunds) != 1 || refunds[0].drops != testPrice || refunds[0].Message == ""):
				t.Fatalf("refunds %+v, want one of %d drops with a reason", refunds, testPrice)
			}

			// A restart from the start replays the purchase: no second
			// refund, no event for a refused one.
			stop()
			m.start()
			events, _ = m.events("")
			time.Sleep(300 * time.Millisecond)
			n := 0
			for _, r := range m.replies() {
				if r.Ref == acq && !r.OK {
					n++
				}
			}
			if n != len(refunds) {
				t.Errorf("%d refunds after a restart, want %d", n, len(refunds))
			}
			if tc.name == "a garbage acquire" {
				select {
				case ev := <-events:
					t.Errorf("an event for a refused purchase: %+v", ev)
				default:
				}
			}
		})
	}
}

// TestProgress: the plugin reports the ledger's progress, once per
// validated ledger and after every event up to it; while the ledger does
// not close, it reports none.
func TestProgress(t *testing.T) {
	m := newMarketWith(t) // ledgers close only on demand
	events, _ := m.events("")
	closeFor := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			m.srv.CloseLedger()
		}
	}
	stopClosing := make(chan struct{})
	closing := make(chan struct{})
	go func() {
		defer close(closing)
		for {
			select {
			case <-stopClosing:
				return
			case <-time.After(10 * time.Millisecond):
				m.srv.CloseLedger()
			}
		}
	}()
	hostKey := m.hostKey()
	offer := m.offer()
	close(stopClosing)
	<-closing
	tenantKey, _ := memo.NewKey()
	done := make(chan string)
	go func() {
		h, _ := m.tenantSubmit(acceptOfferTx(string(m.tenant.ClassicAddress), offer, sealedAcquire(t, hostKey, tenantKey, "x")))
		done <- h
	}()
	var acq string
	for acq == "" {
		select {
		case acq = <-done:
		default:
			m.srv.CloseLedger()
			time.Sleep(10 * time.Millisecond)
		}
	}
	ev := m.next(events)
	if ev.ID != acq || ev.Ledger == 0 || ev.ExpiresLedger != ev.Ledger+1000 {
		t.Fatalf("event %+v", ev)
	}
	closeFor(200 * time.Millisecond)
	v := m.srv.ValidatedIndex()
	m.waitFor("the progress to the validated ledger", func() bool {
		p := m.progressed()
		return len(p) > 0 && p[len(p)-1].Ledger == uint64(v)
	})
	// Stalled: no progress.
	n := len(m.progressed())
	time.Sleep(500 * time.Millisecond)
	if p := m.progressed(); len(p) != n {
		t.Fatalf("progress %+v while the ledger stalled", p[n:])
	}
	// Resumed: the next ledger, with its close time.
	next := m.srv.CloseLedger()
	m.waitFor("the progress after the stall", func() bool {
		p := m.progressed()
		return p[len(p)-1].Ledger == uint64(next)
	})
	m.pmu.Lock()
	log := slices.Clone(m.log)
	m.pmu.Unlock()
	var last uint64
	for _, e := range log {
		switch {
		case e.Kind != sdk.LeaseProgress && e.Ledger <= last:
			t.Errorf("event %s of ledger %d after the progress to %d", e.ID, e.Ledger, last)
		case e.Kind == sdk.LeaseProgress && e.Ledger <= last:
			t.Errorf("progress to %d after the progress to %d", e.Ledger, last)
		case e.Kind == sdk.LeaseProgress:
			last = e.Ledger
			if want := time.Unix(rippleEpoch+800000000+4*int64(e.Ledger), 0); !e.LedgerTime.Equal(want) {
				t.Errorf("progress to %d: close time %v, want %v", e.Ledger, e.LedgerTime, want)
			}
		}
	}
}

// TestDropMidStream: the fake ledger drops the host's connection midway
// through every ledger with transactions for it; every extend still
// becomes exactly one event, in ledger order, and each adds its periods
// once.
func TestDropMidStream(t *testing.T) {
	m := newMarketWith(t, fakeledger.AutoClose(30*time.Millisecond), fakeledger.DropMidStream(1))
	events, _ := m.events("")
	hostKey := m.hostKey()
	tenantKey, _ := memo.NewKey()
	acq, r := m.tenantSubmit(acceptOfferTx(string(m.tenant.ClassicAddress), m.offer(), sealedAcquire(t, hostKey, tenantKey, "x")))
	if r != "tesSUCCESS" {
		t.Fatalf("acquire: %s", r)
	}
	ev := m.next(events)
	if ev.ID != acq {
		t.Fatalf("event %+v, want the acquire", ev)
	}
	// Extends in bursts, several in a ledger.
	var want []string
	for range 4 {
		for range 3 {
			ext, _ := memo.Encode(memo.TypeExtend, &memo.Extend{Lease: ev.Lease})
			want = append(want, m.tenantSubmitAsync(paymentTx(string(m.tenant.ClassicAddress), string(m.host.ClassicAddress), testPrice, ext)))
		}
		time.Sleep(70 * time.Millisecond)
	}
	var got []string
	expires := ev.ExpiresLedger
	for len(got) < len(want) {
		e := m.next(events)
		if e.Kind != sdk.LeaseExtended {
			t.Fatalf("event %+v, want an extend", e)
		}
		if e.ExpiresLedger != expires+1000 {
			t.Errorf("extend %s: expires at %d, want %d", e.ID, e.ExpiresLedger, expires+1000)
		}
		expires = e.ExpiresLedger
		got = append(got, e.ID)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	select {
	case e := <-events:
		t.Fatalf("an event too many: %+v", e)
	case <-time.After(500 * time.Millisecond):
	}
	if m.srv.Subscribes() < 3 {
		t.Errorf("%d subscribes: the connection was not dropped", m.srv.Subscribes())
	}
}

// tenantSubmitAsync signs and submits a transaction of the tenant's
// without waiting for it; it returns its hash.
func (m *market) tenantSubmitAsync(tx Tx) string {
	m.t.Helper()
	flat := transaction.FlatTransaction(tx)
	if err := m.tk.c.Autofill(&flat); err != nil {
		m.t.Fatal(err)
	}
	blob, hash, err := m.tenant.Sign(flat)
	if err != nil {
		m.t.Fatal(err)
	}
	res, err := m.tk.c.SubmitTxBlob(blob, false)
	if err != nil || res.EngineResult != "tesSUCCESS" {
		m.t.Fatalf("submit: %+v, %v", res, err)
	}
	return hash
}

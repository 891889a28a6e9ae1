package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/Peersyst/xrpl-go/pkg/crypto"
	"github.com/Peersyst/xrpl-go/xrpl/interfaces"
	"github.com/Peersyst/xrpl-go/xrpl/queries/account"
	"github.com/Peersyst/xrpl-go/xrpl/transaction"
	"github.com/Peersyst/xrpl-go/xrpl/transaction/types"
	"github.com/Peersyst/xrpl-go/xrpl/wallet"
	"github.com/Peersyst/xrpl-go/xrpl/websocket"
	wsinterfaces "github.com/Peersyst/xrpl-go/xrpl/websocket/interfaces"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/xrplledger"
)

// faultLedger is the fake ledger (a test double of rippled) run as a
// process with fault flags: its URL, and the lines it prints after the
// first.
type faultLedger struct {
	url   string
	lines chan string
}

func startFaultLedger(t *testing.T, accounts []string, flags ...string) *faultLedger {
	t.Helper()
	cmd := exec.Command(fakeLedger, append([]string{"-close", "300ms", "-fund", strings.Join(accounts, ",")}, flags...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatalf("the fake ledger said nothing: %v", sc.Err())
	}
	url, ok := strings.CutPrefix(sc.Text(), "fakeledger: TEST DOUBLE of rippled listening on ")
	if !ok {
		t.Fatalf("the fake ledger said %q", sc.Text())
	}
	fl := &faultLedger{url: url, lines: make(chan string, 64)}
	go func() {
		for sc.Scan() {
			fl.lines <- sc.Text()
		}
	}()
	return fl
}

// leaseMarket is a host agent with a ledger "xrpl" block on the fault
// ledger, and a tenant who speaks the ledger protocol with xrpl-go.
type leaseMarket struct {
	w                       *workspace
	ledger                  *faultLedger
	host, tenant, registry  wallet.Wallet
	tenantKey               memo.Key
	c                       *websocket.Client
	hostAddr, tenantAddr    string
	registryAddr, leaseName string
}

func newLeaseMarket(t *testing.T, flags ...string) *leaseMarket {
	t.Helper()
	newWallet := func(alg interfaces.CryptoImplementation) wallet.Wallet {
		w, err := wallet.New(alg)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	m := &leaseMarket{host: newWallet(crypto.SECP256K1()), tenant: newWallet(crypto.ED25519()), registry: newWallet(crypto.SECP256K1())}
	m.hostAddr, m.tenantAddr, m.registryAddr = string(m.host.ClassicAddress), string(m.tenant.ClassicAddress), string(m.registry.ClassicAddress)
	var err error
	if m.tenantKey, err = memo.NewKey(); err != nil {
		t.Fatal(err)
	}
	m.ledger = startFaultLedger(t, []string{m.hostAddr, m.tenantAddr, m.registryAddr}, flags...)
	m.w = newWorkspace(t, 0)
	secret := filepath.Join(m.w.dir, "host.secret")
	if err := os.WriteFile(secret, []byte(m.host.Seed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	host, err := os.ReadFile(m.w.host)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.w.host, string(host)+fmt.Sprintf(`ledger "xrpl" {
  url           = %q
  secret_file   = %q
  registry      = %q
  slots         = 1
  price_drops   = 5000
  lease_ledgers = 10000
  heartbeat     = "1h"
  poll          = "300ms"
}
`, m.ledger.url, secret, m.registryAddr))
	m.c = websocket.NewClient(websocket.NewClientConfig().WithHost(m.ledger.url))
	if err := m.c.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.c.Disconnect() })
	return m
}

// request sends req and decodes its result into out.
func (m *leaseMarket) request(t *testing.T, req wsinterfaces.Request, out any) {
	t.Helper()
	res, err := m.c.Request(req)
	if err != nil {
		t.Fatalf("%T: %v", req, err)
	}
	raw, _ := json.Marshal(res.Result)
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatal(err)
	}
}

// memos returns the Kigumi memos of type typ that from sent to addr, in
// ledger order, with their transactions' amounts.
func (m *leaseMarket) memos(t *testing.T, addr, from string, typ memo.Type) []memo.Memo {
	t.Helper()
	var res struct {
		Transactions []struct {
			Tx map[string]any `json:"tx_json"`
		} `json:"transactions"`
	}
	m.request(t, &account.TransactionsRequest{Account: types.Address(addr), LedgerIndexMin: -1, LedgerIndexMax: -1, Forward: true, Limit: 400}, &res)
	var out []memo.Memo
	for _, tx := range res.Transactions {
		if mm, err := memo.Parse(tx.Tx["Memos"]); err == nil && mm.Type == typ && tx.Tx["Account"] == from {
			out = append(out, mm)
		}
	}
	return out
}

// replies returns the host's replies to the tenant, in ledger order.
func (m *leaseMarket) replies(t *testing.T) []memo.Reply {
	t.Helper()
	var out []memo.Reply
	for _, mm := range m.memos(t, m.tenantAddr, m.hostAddr, memo.TypeReply) {
		var r memo.Reply
		if err := memo.Decode(mm, nil, true, &r); err != nil {
			t.Fatalf("a reply: %v", err)
		}
		out = append(out, r)
	}
	return out
}

// submit signs a transaction of the tenant's and submits it; with wait,
// it waits until it is validated with tesSUCCESS. It returns its hash.
func (m *leaseMarket) submit(t *testing.T, tx map[string]any, wait bool) string {
	t.Helper()
	flat := transaction.FlatTransaction(tx)
	if err := m.c.Autofill(&flat); err != nil {
		t.Fatal(err)
	}
	blob, hash, err := m.tenant.Sign(flat)
	if err != nil {
		t.Fatal(err)
	}
	if !wait {
		if res, err := m.c.SubmitTxBlob(blob, false); err != nil || res.EngineResult != "tesSUCCESS" {
			t.Fatalf("submit: %+v, %v", res, err)
		}
		return hash
	}
	res, err := m.c.SubmitTxBlobAndWait(blob, false)
	if err != nil || res.Meta.TransactionResult != "tesSUCCESS" {
		t.Fatalf("submit: %+v, %v", res, err)
	}
	return hash
}

// acquire waits for the host's heartbeat and offer, and buys the lease
// with a request for the quickstart app, sealed to the host's key. It
// returns the acquire's hash.
func (m *leaseMarket) acquire(t *testing.T) string {
	t.Helper()
	var hostKey []byte
	eventually(t, "the host's heartbeat", func() bool {
		for _, mm := range m.memos(t, m.registryAddr, m.hostAddr, memo.TypeHost) {
			var h memo.Host
			if err := memo.Decode(mm, nil, true, &h); err == nil {
				hostKey, _ = memo.PublicKey(h.Key)
			}
		}
		return hostKey != nil
	})
	var offer, nft string
	eventually(t, "the host's lease offer", func() bool {
		var res struct {
			Objects []struct {
				ID  string `json:"index"`
				NFT string `json:"NFTokenID"`
			} `json:"account_objects"`
		}
		m.request(t, &account.ObjectsRequest{Account: types.Address(m.hostAddr), Type: account.NFTOfferObject}, &res)
		if len(res.Objects) == 1 {
			offer, nft = res.Objects[0].ID, res.Objects[0].NFT
		}
		return offer != ""
	})
	m.leaseName = xrplledger.TenantName(nft)
	spec := leaseSpec(m.leaseName)
	acq, err := memo.EncodeSealed(memo.TypeAcquire, hostKey, &memo.Acquire{TenantKey: hex.EncodeToString(m.tenantKey.Public()), Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	return m.submit(t, map[string]any{
		"TransactionType": "NFTokenAcceptOffer", "Account": m.tenantAddr, "NFTokenSellOffer": offer,
		"Flags": uint32(0), "Memos": []any{acq.XRPL()},
	}, true)
}

// countRefs counts the replies by the transaction they answer.
func countRefs(rs []memo.Reply) map[string]int {
	n := map[string]int{}
	for _, r := range rs {
		n[r.Ref]++
	}
	return n
}

// TestLeaseFaults: the lease market through the real binary, on the fake
// ledger (a test double of rippled) run as a process with faults.
//
//   - The agent is killed with SIGKILL between provisioning and replying:
//     the fake ledger holds the reply's submit (never answering it), and
//     the agent is killed once it is held, with the instance running. The
//     held submit is either dropped (it never reaches a ledger) or applied
//     (only its answer is lost). The restarted agent replies exactly once,
//     and provisions nothing twice: the sandbox is the same process.
//   - The fake ledger drops the host's connection midway through every
//     ledger with transactions for it, while the tenant extends its lease
//     in bursts: every extend is answered exactly once, and each adds its
//     period once.
func TestLeaseFaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"killed with the reply's submit lost", []string{"-hold-memo", "kigumi/1/reply"}},
		{"killed with the reply's answer lost", []string{"-hold-memo", "kigumi/1/reply", "-hold-apply"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newLeaseMarket(t, tc.flags...)
			a := startAgent(t, m.w.host)
			acq := m.acquire(t)
			select {
			case line := <-m.ledger.lines:
				if !strings.HasPrefix(line, "fakeledger: held the submit of ") {
					t.Fatalf("the fake ledger said %q", line)
				}
			case <-time.After(time.Minute):
				t.Fatalf("no reply submitted\n%s", a.since(0))
			}
			pids := sandboxPids(m.leaseName, "app")
			if len(pids) == 0 {
				t.Fatalf("the reply was submitted before the instance ran\n%s", a.since(0))
			}
			a.cmd.Process.Signal(syscall.SIGKILL)
			a.cmd.Wait()
			<-a.done

			b := startAgent(t, m.w.host)
			var rs []memo.Reply
			eventually(t, "the reply", func() bool { rs = m.replies(t); return len(rs) > 0 })
			time.Sleep(2 * time.Second) // a second reply would be in a ledger by now
			rs = m.replies(t)
			if len(rs) != 1 || rs[0].Ref != acq || !rs[0].OK {
				t.Fatalf("replies %+v, want one success answering %s\n%s\n%s", rs, acq, a.since(0), b.since(0))
			}
			payload, err := m.tenantKey.Open(rs[0].Payload)
			if err != nil || !strings.Contains(string(payload), m.leaseName) {
				t.Fatalf("the reply's payload %q: %v", payload, err)
			}
			if after := sandboxPids(m.leaseName, "app"); !slices.Equal(after, pids) {
				t.Errorf("sandbox pids %v after the restart, want %v: provisioned twice\n%s\n%s", after, pids, a.since(0), b.since(0))
			}
			creates := 0
			for _, l := range strings.Split(a.since(0)+"\n"+b.since(0), "\n") {
				if strings.Contains(l, "action_done") && strings.Contains(l, m.leaseName+"/app") && strings.Contains(l, "create") {
					creates++
				}
			}
			if creates != 1 {
				t.Errorf("%d creates of the lease's instance, want 1\n%s\n%s", creates, a.since(0), b.since(0))
			}
			b.stop(t)
		})
	}

	t.Run("connections dropped mid-stream", func(t *testing.T) {
		m := newLeaseMarket(t, "-drop-mid-stream", "1")
		a := startAgent(t, m.w.host)
		acq := m.acquire(t)
		eventually(t, "the acquire's reply", func() bool { return countRefs(m.replies(t))[acq] > 0 })
		var extends []string
		for range 4 {
			for range 3 {
				ext, err := memo.Encode(memo.TypeExtend, &memo.Extend{Lease: strings.ToUpper(leaseNFT(t, m))})
				if err != nil {
					t.Fatal(err)
				}
				extends = append(extends, m.submit(t, map[string]any{
					"TransactionType": "Payment", "Account": m.tenantAddr, "Destination": m.hostAddr,
					"Amount": "5000", "Flags": uint32(0), "Memos": []any{ext.XRPL()},
				}, false))
			}
			time.Sleep(400 * time.Millisecond)
		}
		var rs []memo.Reply
		eventually(t, "a reply to every extend", func() bool {
			rs = m.replies(t)
			n := countRefs(rs)
			for _, e := range extends {
				if n[e] == 0 {
					return false
				}
			}
			return true
		})
		time.Sleep(2 * time.Second)
		rs = m.replies(t)
		n := countRefs(rs)
		for _, e := range append([]string{acq}, extends...) {
			if n[e] != 1 {
				t.Errorf("%d replies to %s, want 1", n[e], e)
			}
		}
		// Each extend added one period of 10000 ledgers, once: the last
		// reply names the acquire's ledger plus 13 periods.
		var lastLedger, firstLedger uint64
		for _, r := range rs {
			if r.Ref == extends[0] {
				fmt.Sscanf(r.Message, "extended to ledger %d", &firstLedger)
			}
			if r.Ref == extends[len(extends)-1] {
				fmt.Sscanf(r.Message, "extended to ledger %d", &lastLedger)
			}
		}
		if firstLedger == 0 || lastLedger != firstLedger+uint64(len(extends)-1)*10000 {
			t.Errorf("the extends end at ledgers %d, then %d; want %d periods of 10000 between them\n%s", firstLedger, lastLedger, len(extends)-1, a.since(0))
		}
		a.stop(t)
	})
}

// leaseNFT returns the lease NFT the tenant holds.
func leaseNFT(t *testing.T, m *leaseMarket) string {
	t.Helper()
	var res struct {
		NFTs []struct {
			ID string `json:"NFTokenID"`
		} `json:"account_nfts"`
	}
	m.request(t, &account.NFTsRequest{Account: types.Address(m.tenantAddr)}, &res)
	if len(res.NFTs) != 1 {
		t.Fatalf("the tenant holds %d NFTs", len(res.NFTs))
	}
	return res.NFTs[0].ID
}

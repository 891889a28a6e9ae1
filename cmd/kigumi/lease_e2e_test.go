package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

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

// startFakeLedger runs the fake ledger (a test double of rippled) as a
// process, funding accounts, and returns its WebSocket URL.
func startFakeLedger(t *testing.T, accounts ...string) string {
	t.Helper()
	cmd := exec.Command(fakeLedger, "-close", "500ms", "-fund", strings.Join(accounts, ","))
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
	line, err := bufio.NewReader(out).ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "fakeledger: TEST DOUBLE of rippled listening on ")
	if err != nil || !ok {
		t.Fatalf("the fake ledger said %q: %v", line, err)
	}
	return url
}

// xrplTenant is a tenant of the lease market: its wallet, its message key
// and its connection to the ledger, through xrpl-go.
type xrplTenant struct {
	w   wallet.Wallet
	key memo.Key
	c   *websocket.Client
}

// request sends req and decodes its result into out.
func (x *xrplTenant) request(req wsinterfaces.Request, out any) error {
	res, err := x.c.Request(req)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(res.Result)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, out)
}

// validatedTx is a transaction of account_tx (API version 2).
type validatedTx struct {
	Hash string         `json:"hash"`
	Tx   map[string]any `json:"tx_json"`
}

// kigumiMemos returns addr's validated transactions sent by from that
// carry a Kigumi memo of type typ.
func (x *xrplTenant) kigumiMemos(t *testing.T, addr, from string, typ memo.Type) []memo.Memo {
	t.Helper()
	var res struct {
		Transactions []validatedTx `json:"transactions"`
	}
	if err := x.request(&account.TransactionsRequest{Account: types.Address(addr), LedgerIndexMin: -1, LedgerIndexMax: -1, Forward: true, Limit: 200}, &res); err != nil {
		t.Fatalf("account_tx: %v", err)
	}
	var out []memo.Memo
	for _, tx := range res.Transactions {
		if m, err := memo.Parse(tx.Tx["Memos"]); err == nil && m.Type == typ && tx.Tx["Account"] == from {
			out = append(out, m)
		}
	}
	return out
}

// sellOffers returns the host's NFT sell offers: offer ID to NFTokenID.
func (x *xrplTenant) sellOffers(t *testing.T, host string) map[string]string {
	t.Helper()
	var res struct {
		Objects []struct {
			Type  string `json:"LedgerEntryType"`
			ID    string `json:"index"`
			NFT   string `json:"NFTokenID"`
			Flags uint32 `json:"Flags"`
		} `json:"account_objects"`
	}
	if err := x.request(&account.ObjectsRequest{Account: types.Address(host), Type: account.NFTOfferObject, Limit: 400}, &res); err != nil {
		t.Fatalf("account_objects: %v", err)
	}
	offers := map[string]string{}
	for _, o := range res.Objects {
		if o.Type == "NFTokenOffer" && o.Flags&1 != 0 {
			offers[o.ID] = o.NFT
		}
	}
	return offers
}

// submit signs tx with the tenant's wallet and waits until it is
// validated; it returns its hash and result.
func (x *xrplTenant) submit(t *testing.T, tx map[string]any) (string, string) {
	t.Helper()
	flat := transaction.FlatTransaction(tx)
	if err := x.c.Autofill(&flat); err != nil {
		t.Fatal(err)
	}
	blob, hash, err := x.w.Sign(flat)
	if err != nil {
		t.Fatal(err)
	}
	res, err := x.c.SubmitTxBlobAndWait(blob, false)
	if err != nil {
		t.Fatal(err)
	}
	return hash, res.Meta.TransactionResult
}

// TestLeaseEndToEnd runs the lease market through the real binary: the
// fake ledger (a test double of rippled) as a process, a `kigumi agent`
// whose host spec has a ledger "xrpl" block, and a tenant who speaks the
// ledger protocol with xrpl-go and the memo package. The tenant reads the
// host's key from its heartbeat, buys its lease offer with a sealed
// acquire, and reads its sealed reply; the host runs the wasm instance
// as the lease's tenant until the lease expires, then removes it all.
func TestLeaseEndToEnd(t *testing.T) {
	newWallet := func(alg interfaces.CryptoImplementation) wallet.Wallet {
		w, err := wallet.New(alg)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	// Fresh wallets: the lease's NFT, hence its tenant's name and Linux
	// user, differ at every run.
	hostW, registryW := newWallet(crypto.SECP256K1()), newWallet(crypto.SECP256K1())
	tenantKey, err := memo.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tn := &xrplTenant{w: newWallet(crypto.ED25519()), key: tenantKey}
	hostAddr, tenantAddr, registryAddr := string(hostW.ClassicAddress), string(tn.w.ClassicAddress), string(registryW.ClassicAddress)
	url := startFakeLedger(t, hostAddr, tenantAddr, registryAddr)

	w := newWorkspace(t, 0)
	secret := filepath.Join(w.dir, "host.secret")
	if err := os.WriteFile(secret, []byte(hostW.Seed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// One lease period is 4 validated ledgers, which the agent counts as
	// 16 s of wall-clock time.
	host, err := os.ReadFile(w.host)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, w.host, string(host)+fmt.Sprintf(`ledger "xrpl" {
  url           = %q
  secret_file   = %q
  registry      = %q
  slots         = 1
  price_drops   = 5000
  lease_ledgers = 4
  heartbeat     = "1h"
  poll          = "1s"
}
`, url, secret, registryAddr))
	a := startAgent(t, w.host)

	tn.c = websocket.NewClient(websocket.NewClientConfig().WithHost(url))
	if err := tn.c.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tn.c.Disconnect() })

	// The host registers with its message key and offers its slot.
	var hostKey []byte
	eventually(t, "the host's heartbeat", func() bool {
		for _, m := range tn.kigumiMemos(t, registryAddr, hostAddr, memo.TypeHost) {
			var h memo.Host
			if err := memo.Decode(m, nil, true, &h); err != nil {
				t.Fatalf("heartbeat: %v", err)
			}
			if hostKey, err = memo.PublicKey(h.Key); err != nil || h.Capacity != 1 || h.PriceDrops != "5000" {
				t.Fatalf("heartbeat %+v: %v", h, err)
			}
		}
		return hostKey != nil
	})
	var offer, lease string
	eventually(t, "the host's lease offer", func() bool {
		for o, nft := range tn.sellOffers(t, hostAddr) {
			offer, lease = o, nft
		}
		return offer != ""
	})
	name := xrplledger.TenantName(lease)

	// The tenant buys the lease with a request sealed to the host's key.
	spec := fmt.Sprintf(`tenant %q {
  instance "app" {
    runtime = "wasm"
    module  = "app.wasm"
    args    = ["--name", "lease", "--interval", "200ms"]
    resources {
      memory = "64MiB"
      cpu    = 0.2
    }
    state {
      size = "4MiB"
    }
    permissions = ["state.write", "clock"]
  }
}
`, name)
	acquire, err := memo.EncodeSealed(memo.TypeAcquire, hostKey, &memo.Acquire{TenantKey: hex.EncodeToString(tenantKey.Public()), Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(acquire.Data), "app.wasm") {
		t.Fatal("the sealed acquire shows the spec")
	}
	m := a.mark()
	acqHash, result := tn.submit(t, map[string]any{
		"TransactionType": "NFTokenAcceptOffer", "Account": tenantAddr, "NFTokenSellOffer": offer,
		"Flags": uint32(0), "Memos": []any{acquire.XRPL()},
	})
	if result != "tesSUCCESS" {
		t.Fatalf("the acquire: %s", result)
	}

	// The host provisions the instance and replies, sealed to the tenant.
	var reply memo.Reply
	eventually(t, "the host's reply", func() bool {
		for _, rm := range tn.kigumiMemos(t, tenantAddr, hostAddr, memo.TypeReply) {
			if err := memo.Decode(rm, nil, true, &reply); err != nil {
				t.Fatalf("reply: %v", err)
			}
		}
		return reply.Ref != ""
	})
	if reply.Ref != acqHash || !reply.OK {
		t.Fatalf("reply %+v, want success answering %s\n%s", reply, acqHash, a.since(m))
	}
	payload, err := tenantKey.Open(reply.Payload)
	if err != nil {
		t.Fatalf("open the reply's payload: %v", err)
	}
	var details struct {
		Host      string   `json:"host"`
		Tenant    string   `json:"tenant"`
		Instances []string `json:"instances"`
	}
	if err := json.Unmarshal(payload, &details); err != nil || details.Host != "e2e" || details.Tenant != name || !slices.Equal(details.Instances, []string{"app"}) {
		t.Fatalf("reply payload %s: %v", payload, err)
	}
	if other, err := memo.NewKey(); err != nil {
		t.Fatal(err)
	} else if _, err := other.Open(reply.Payload); !errors.Is(err, memo.ErrOpen) {
		t.Fatalf("another key opened the reply's payload: %v", err)
	}

	// The instance runs as the lease's tenant, in its own user and cgroup.
	st := status(t, w.host)
	if len(st.Tenants) != 1 {
		t.Fatalf("status: %+v", st)
	}
	ten := st.Tenants[0]
	if ten.Name != name || ten.Source != "lease:"+lease || ten.User != "kg-"+name || len(ten.Instances) != 1 || ten.Instances[0].State != "running" {
		_, logs, _ := kigumi(t, "logs", "-c", w.host, name+"/app")
		t.Fatalf("status: %+v, want %s running, owned by lease:%s\n%s", ten, name, lease, logs)
	}
	pids := sandboxPids(name, "app")
	if len(pids) == 0 {
		t.Fatalf("no sandbox in the lease's instance cgroup\n%s", a.since(m))
	}
	eventually(t, "the instance's output", func() bool {
		code, out, _ := kigumi(t, "logs", "-c", w.host, name+"/app")
		return code == 0 && strings.Contains(out, "from lease!")
	})

	// The lease expires: its tenant goes, user, cgroup, processes and all.
	a.waitLine(t, m, "action_done "+name+" destroy")
	if st := status(t, w.host); len(st.Tenants) != 0 {
		t.Fatalf("status after the lease expired: %+v", st)
	}
	if _, err := user.Lookup("kg-" + name); err == nil {
		t.Error("the expired lease's user is left")
	}
	for _, ctl := range []string{"memory", "cpu", "pids"} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", ctl, "kigumi", name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the expired lease's %s cgroup is left: %v", ctl, err)
		}
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("the expired lease's sandbox %d still runs", pid)
		}
	}

	// The slot is offered again, with a new NFT: the expired one is burned.
	eventually(t, "the slot offered again", func() bool {
		offers := tn.sellOffers(t, hostAddr)
		return len(offers) == 1 && !slices.Contains(slices.Collect(maps.Values(offers)), lease)
	})
	eventually(t, "the expired lease's NFT burned", func() bool {
		var nfts struct {
			NFTs []struct {
				ID string `json:"NFTokenID"`
			} `json:"account_nfts"`
		}
		if err := tn.request(&account.NFTsRequest{Account: types.Address(tenantAddr)}, &nfts); err != nil {
			t.Fatalf("account_nfts: %v", err)
		}
		return len(nfts.NFTs) == 0
	})
	a.stop(t)
}

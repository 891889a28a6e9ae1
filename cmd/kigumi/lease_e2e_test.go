package main

import (
	"bufio"
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

// leaseCLI runs `kigumi lease` as the tenant and decodes its --json
// output into out; it returns the exit code and stderr.
func leaseCLI(t *testing.T, out any, args ...string) (int, string) {
	t.Helper()
	code, stdout, stderr := kigumi(t, append(append([]string{"lease"}, args...), "--json")...)
	if out != nil && stdout != "" {
		if err := json.Unmarshal([]byte(stdout), out); err != nil {
			t.Fatalf("kigumi lease %s: %v\n%s\n%s", strings.Join(args, " "), err, stdout, stderr)
		}
	}
	return code, stderr
}

// leaseReplyJSON is a reply as kigumi lease prints it.
type leaseReplyJSON struct {
	Tx      string          `json:"tx"`
	Ref     string          `json:"ref"`
	OK      bool            `json:"ok"`
	Message string          `json:"message"`
	Details json.RawMessage `json:"details"`
	Error   string          `json:"error"`
}

// leaseStatusJSON is what kigumi lease status --json prints.
type leaseStatusJSON struct {
	Account string `json:"account"`
	Leases  []struct {
		Lease           string           `json:"lease"`
		Host            string           `json:"host"`
		Tenant          string           `json:"tenant"`
		Held            bool             `json:"held"`
		State           string           `json:"state"`
		ExtendedPeriods uint64           `json:"extended_periods"`
		ExpiresLedger   uint32           `json:"expires_ledger"`
		AcquiredLedger  uint32           `json:"acquired_ledger"`
		Replies         []leaseReplyJSON `json:"replies"`
	} `json:"leases"`
}

// leaseOffersJSON is what kigumi lease offers --json prints.
type leaseOffersJSON struct {
	Hosts []struct {
		Address    string `json:"address"`
		Capacity   int    `json:"capacity"`
		PriceDrops string `json:"price_drops"`
		Key        string `json:"key"`
		Offers     []struct {
			ID     string `json:"offer"`
			Lease  string `json:"lease"`
			Tenant string `json:"tenant"`
		} `json:"offers"`
	} `json:"hosts"`
}

// TestLeaseEndToEnd runs the lease market through the real binary, on
// both sides: the fake ledger (a test double of rippled) as a process, a
// `kigumi agent` whose host spec has a ledger "xrpl" block, and a tenant
// played by `kigumi lease`. The tenant lists the host's offer, buys it
// with `kigumi lease acquire` (the spec checked locally, sealed to the
// host's key) and reads the decrypted reply; the host runs the wasm
// instance as the lease's tenant until the lease expires, then removes it
// all and offers the slot again. The tenant buys that one, extends it and
// terminates it, and `kigumi lease status` follows each step.
// leaseLedgers is the end-to-end test's lease period, in ledgers of the
// fake ledger (one per 500 ms): long enough that a loaded machine checks a
// lease's tenant before it expires (at 4, one CI run found it gone).
const leaseLedgers = 16

func TestLeaseEndToEnd(t *testing.T) {
	newWallet := func(alg interfaces.CryptoImplementation) wallet.Wallet {
		w, err := wallet.New(alg)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := newWorkspace(t, 0)
	// Fresh wallets: the lease's NFT, hence its tenant's name and Linux
	// user, differ at every run. The tenant's is made by kigumi lease.
	hostW, registryW := newWallet(crypto.SECP256K1()), newWallet(crypto.SECP256K1())
	tenantWallet := filepath.Join(w.dir, "tenant.wallet")
	var made struct {
		Address string `json:"address"`
	}
	if code, stderr := leaseCLI(t, &made, "wallet", "--new", tenantWallet); code != 0 || made.Address == "" {
		t.Fatalf("kigumi lease wallet --new: exit %d: %s", code, stderr)
	}
	if seed, err := os.ReadFile(tenantWallet); err != nil || strings.Contains(made.Address, strings.TrimSpace(string(seed))) {
		t.Fatalf("wallet file: %v", err)
	}
	hostAddr, tenantAddr, registryAddr := string(hostW.ClassicAddress), made.Address, string(registryW.ClassicAddress)
	url := startFakeLedger(t, hostAddr, tenantAddr, registryAddr)
	as := func(args ...string) []string { return append(args, "--endpoint", url, "--wallet", tenantWallet) }

	secret := filepath.Join(w.dir, "host.secret")
	if err := os.WriteFile(secret, []byte(hostW.Seed+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// One lease period is leaseLedgers validated ledgers: the lease
	// expires when the ledger's progress passes its last ledger.
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
  lease_ledgers = %d
  heartbeat     = "1h"
  poll          = "1s"
}
`, url, secret, registryAddr, leaseLedgers))
	a := startAgent(t, w.host)

	// The host registers with its message key and offers its slot.
	var offers leaseOffersJSON
	eventually(t, "the host's heartbeat and offer", func() bool {
		code, _ := leaseCLI(t, &offers, "offers", "--endpoint", url, "--registry", registryAddr)
		return code == 0 && len(offers.Hosts) == 1 && len(offers.Hosts[0].Offers) == 1
	})
	h := offers.Hosts[0]
	if h.Address != hostAddr || h.Capacity != 1 || h.PriceDrops != "5000" || len(h.Key) != 64 {
		t.Fatalf("offers: %+v", h)
	}
	lease := h.Offers[0].Lease
	name := xrplledger.TenantName(lease)
	if h.Offers[0].Tenant != name {
		t.Fatalf("offer %+v, want tenant %s", h.Offers[0], name)
	}

	// The spec's tenant may be named anything: kigumi lease acquire names
	// it after the lease. A spec the host would refuse is refused before
	// anything goes on the ledger, and so is a wallet others may read.
	specFile := filepath.Join(w.dir, "request.hcl")
	writeFile(t, specFile, "# The instance wanted.\n"+leaseSpec("whoever"))
	badSpec := filepath.Join(w.dir, "bad.hcl")
	writeFile(t, badSpec, "tenant \"x\" {\n  instance \"app\" {\n    runtme = \"wasm\"\n  }\n}\n")
	if code, stderr := leaseCLI(t, nil, as("acquire", "--host", hostAddr, "--spec", badSpec)...); code != 1 || !strings.Contains(stderr, "bad.hcl:3,5") {
		t.Fatalf("acquire with a bad spec: exit %d: %s", code, stderr)
	}
	if err := os.Chmod(tenantWallet, 0o640); err != nil {
		t.Fatal(err)
	}
	if code, stderr := leaseCLI(t, nil, as("acquire", "--host", hostAddr, "--spec", specFile)...); code != 1 || !strings.Contains(stderr, "chmod 600") {
		t.Fatalf("acquire with a group-readable wallet: exit %d: %s", code, stderr)
	}
	if err := os.Chmod(tenantWallet, 0o600); err != nil {
		t.Fatal(err)
	}
	observer := &xrplTenant{c: websocket.NewClient(websocket.NewClientConfig().WithHost(url))}
	if err := observer.c.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { observer.c.Disconnect() })
	if got := observer.kigumiMemos(t, tenantAddr, tenantAddr, memo.TypeAcquire); len(got) != 0 {
		t.Fatalf("a refused acquire went on the ledger: %d", len(got))
	}

	// The tenant buys the lease; the host provisions the instance and
	// replies, sealed to the tenant.
	m := a.mark()
	var acq struct {
		Lease  string          `json:"lease"`
		Tenant string          `json:"tenant"`
		Tx     string          `json:"tx"`
		Reply  *leaseReplyJSON `json:"reply"`
		Error  string          `json:"error"`
	}
	if code, stderr := leaseCLI(t, &acq, as("acquire", "--host", hostAddr, "--spec", specFile, "--timeout", "60s")...); code != 0 {
		t.Fatalf("kigumi lease acquire: exit %d: %+v %s\n%s", code, acq, stderr, a.since(m))
	}
	if acq.Lease != lease || acq.Tenant != name || acq.Reply == nil || !acq.Reply.OK || acq.Reply.Ref != acq.Tx {
		t.Fatalf("acquire: %+v, want lease %s answered", acq, lease)
	}
	var details struct {
		Host      string   `json:"host"`
		Tenant    string   `json:"tenant"`
		Instances []string `json:"instances"`
	}
	if err := json.Unmarshal(acq.Reply.Details, &details); err != nil || details.Host != "e2e" || details.Tenant != name || !slices.Equal(details.Instances, []string{"app"}) {
		t.Fatalf("reply details %s: %v", acq.Reply.Details, err)
	}
	// On the ledger, the request is sealed: its spec cannot be read.
	for _, am := range observer.kigumiMemos(t, tenantAddr, tenantAddr, memo.TypeAcquire) {
		if am.Format != memo.FormatSealed || strings.Contains(string(am.Data), "app.wasm") {
			t.Fatalf("the acquire on the ledger is not sealed: %+v", am)
		}
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
	var ls leaseStatusJSON
	if code, stderr := leaseCLI(t, &ls, as("status", lease)...); code != 0 || len(ls.Leases) != 1 {
		t.Fatalf("kigumi lease status: exit %d: %+v %s", code, ls, stderr)
	}
	if l := ls.Leases[0]; l.Host != hostAddr || !l.Held || l.ExpiresLedger != l.AcquiredLedger+leaseLedgers || len(l.Replies) != 1 || !l.Replies[0].OK {
		t.Fatalf("lease status: %+v", l)
	}

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

	// The slot is offered again, with a new NFT: the expired one is
	// burned, and the tenant's status says the lease ended.
	eventually(t, "the slot offered again", func() bool {
		offers := observer.sellOffers(t, hostAddr)
		return len(offers) == 1 && !slices.Contains(slices.Collect(maps.Values(offers)), lease)
	})
	eventually(t, "the expired lease ended", func() bool {
		code, _ := leaseCLI(t, &ls, as("status")...)
		return code == 0 && len(ls.Leases) == 1 && ls.Leases[0].State == "ended" && !ls.Leases[0].Held
	})
	if code, stderr := leaseCLI(t, nil, as("extend", lease)...); code != 2 || !strings.Contains(stderr, "you hold no lease") {
		t.Fatalf("extend of the expired lease: exit %d: %s", code, stderr)
	}

	// The tenant buys the new lease, extends it and terminates it.
	m = a.mark()
	if code, stderr := leaseCLI(t, &acq, as("acquire", "--host", hostAddr, "--spec", specFile, "--timeout", "60s")...); code != 0 || acq.Reply == nil || !acq.Reply.OK {
		t.Fatalf("kigumi lease acquire of the new lease: exit %d: %+v %s\n%s", code, acq, stderr, a.since(m))
	}
	second := acq.Lease
	var change struct {
		Tx    string          `json:"tx"`
		Reply *leaseReplyJSON `json:"reply"`
	}
	if code, stderr := leaseCLI(t, &change, as("extend", second, "--periods", "2", "--timeout", "60s")...); code != 0 || change.Reply == nil ||
		!change.Reply.OK || change.Reply.Ref != change.Tx || !strings.Contains(change.Reply.Message, "extended to ledger ") {
		t.Fatalf("kigumi lease extend: exit %d: %+v %s", code, change.Reply, stderr)
	}
	if code, stderr := leaseCLI(t, &ls, as("status", second)...); code != 0 || ls.Leases[0].ExtendedPeriods != 2 || ls.Leases[0].State != "active" ||
		ls.Leases[0].ExpiresLedger != ls.Leases[0].AcquiredLedger+3*leaseLedgers || len(ls.Leases[0].Replies) != 2 ||
		!strings.HasPrefix(change.Reply.Message, fmt.Sprintf("extended to ledger %d ", ls.Leases[0].ExpiresLedger)) {
		t.Fatalf("status after the extend: exit %d: %+v (reply %q) %s", code, ls, change.Reply.Message, stderr)
	}
	if code, stderr := leaseCLI(t, &change, as("terminate", second, "--timeout", "60s")...); code != 0 || change.Reply == nil || !change.Reply.OK || change.Reply.Message != "terminated" {
		t.Fatalf("kigumi lease terminate: exit %d: %+v %s", code, change.Reply, stderr)
	}
	a.waitLine(t, m, "action_done "+xrplledger.TenantName(second)+" destroy")
	if st := status(t, w.host); len(st.Tenants) != 0 {
		t.Fatalf("status after the terminate: %+v", st)
	}
	a.stop(t)
}

// leaseSpec is the spec a lease test's tenant asks for: the quickstart app,
// printing every 200ms, with a small state.
func leaseSpec(tenant string) string {
	return fmt.Sprintf(`tenant %q {
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
`, tenant)
}

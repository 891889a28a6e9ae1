package main

import (
	"bufio"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/Peersyst/xrpl-go/pkg/crypto"
	"github.com/Peersyst/xrpl-go/xrpl/queries/account"
	"github.com/Peersyst/xrpl-go/xrpl/transaction/types"
	"github.com/Peersyst/xrpl-go/xrpl/wallet"
	"github.com/Peersyst/xrpl-go/xrpl/websocket"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/xrplledger"
)

// TestLeaseCLIFailures runs `kigumi lease` against the fake ledger (a
// test double of rippled) and a host played by hand that never replies:
// an offer dearer than the host's advertised price is refused unless
// --max-drops allows it, an acquire the ledger validates with a tec*
// result exits 2 and names it, an acquire without a reply gives up at --timeout, and bad arguments
// exit 1 before anything is sent.
func TestLeaseCLIFailures(t *testing.T) {
	hostW, err := wallet.New(crypto.SECP256K1())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tenantWallet := filepath.Join(dir, "tenant.wallet")
	tenantAddr := strings.TrimSpace(mustKigumi(t, "lease", "wallet", "--new", tenantWallet))
	registry := "r2aUew4uCusd2HihQP1UxdrJmtd1Tmn9x"
	// Every account gets 50,000 drops: the tenant can pay a cheap lease
	// and not a dear one.
	cmd := exec.Command(fakeLedger, "-close", "200ms", "-drops", "50000", "-fund", strings.Join([]string{string(hostW.ClassicAddress), tenantAddr, registry}, ","))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	line, _ := bufio.NewReader(out).ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "fakeledger: TEST DOUBLE of rippled listening on ")
	if !ok {
		t.Fatalf("the fake ledger said %q", line)
	}

	// The host, by hand: a heartbeat and two lease offers, one the tenant
	// can pay for.
	host := &xrplTenant{w: hostW, c: websocket.NewClient(websocket.NewClientConfig().WithHost(url))}
	if err := host.c.Connect(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { host.c.Disconnect() })
	hostAddr := string(hostW.ClassicAddress)
	hostKey, err := memo.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	beat, err := memo.Encode(memo.TypeHost, &memo.Host{Software: "by hand", Capacity: 2, Free: 2, PriceDrops: "1000", LeaseLedgers: 100, Key: hex.EncodeToString(hostKey.Public())})
	if err != nil {
		t.Fatal(err)
	}
	mustSucceed := func(tx map[string]any) {
		t.Helper()
		if _, result := host.submit(t, tx); result != "tesSUCCESS" {
			t.Fatalf("%v: %s", tx["TransactionType"], result)
		}
	}
	mustSucceed(xrplledger.PaymentTx(hostAddr, registry, 1, beat))
	offerFor := map[string]string{} // by price
	minted := map[string]bool{}
	for _, price := range []string{"1000", "1000000"} {
		mustSucceed(map[string]any{"TransactionType": "NFTokenMint", "Account": hostAddr, "NFTokenTaxon": xrplledger.LeaseTaxon, "Flags": uint32(9),
			"URI": strings.ToUpper(hex.EncodeToString([]byte("kigumi:lease:1?ledgers=100&price=" + price)))})
		var nfts struct {
			NFTs []struct {
				ID string `json:"NFTokenID"`
			} `json:"account_nfts"`
		}
		if err := host.request(&account.NFTsRequest{Account: types.Address(hostAddr)}, &nfts); err != nil {
			t.Fatal(err)
		}
		nft := ""
		for _, n := range nfts.NFTs {
			if !minted[n.ID] {
				nft = n.ID
			}
		}
		minted[nft] = true
		mustSucceed(map[string]any{"TransactionType": "NFTokenCreateOffer", "Account": hostAddr, "NFTokenID": nft, "Amount": price, "Flags": uint32(1)})
		for o, n := range host.sellOffers(t, hostAddr) {
			if n == nft {
				offerFor[price] = o
			}
		}
	}
	listing := mustKigumi(t, "lease", "offers", "--endpoint", url, "--registry", registry)
	for _, want := range []string{"host " + hostAddr, `software "by hand"`, "capacity 2", "offer " + offerFor["1000"], "offer " + offerFor["1000000"]} {
		if !strings.Contains(listing, want) {
			t.Fatalf("kigumi lease offers lacks %q:\n%s", want, listing)
		}
	}
	spec := filepath.Join(dir, "req.hcl")
	writeFile(t, spec, "tenant \"x\" {\n  instance \"app\" {\n    runtime = \"wasm\"\n    module  = \"app.wasm\"\n  }\n}\n")
	as := []string{"--endpoint", url, "--wallet", tenantWallet, "--host", hostAddr, "--spec", spec}

	code, stdout, stderr := kigumi(t, append([]string{"lease", "acquire", "--offer", offerFor["1000000"]}, as...)...)
	if code != exitInvalid || !strings.Contains(stderr, "asks 1000000 drops, more than 1000") {
		t.Fatalf("acquire of an offer dearer than the host's price: exit %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, stderr = kigumi(t, append([]string{"lease", "acquire", "--offer", offerFor["1000000"], "--max-drops", "1000000"}, as...)...)
	if code != exitFailed || !strings.Contains(stderr, "validated with result tecINSUFFICIENT_FUNDS") {
		t.Fatalf("acquire of an offer the tenant cannot pay: exit %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, stderr = kigumi(t, append([]string{"lease", "acquire", "--offer", offerFor["1000"], "--timeout", "1s"}, as...)...)
	if code != exitFailed || !strings.Contains(stdout, "acquire: ") || !strings.Contains(stderr, "no reply from host "+hostAddr) {
		t.Fatalf("acquire that gets no reply: exit %d\n%s\n%s", code, stdout, stderr)
	}

	seed, err := os.ReadFile(tenantWallet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"bad endpoint", []string{"status", "--endpoint", "http://" + strings.TrimPrefix(url, "ws://"), "--wallet", tenantWallet}, "not a WebSocket URL"},
		{"no endpoint", []string{"status", "--wallet", tenantWallet}, "--endpoint is required"},
		{"no wallet", []string{"status", "--endpoint", url}, "--wallet is required"},
		{"no spec", []string{"acquire", "--endpoint", url, "--wallet", tenantWallet, "--host", hostAddr}, "--spec are required"},
		{"no periods", []string{"extend", "--endpoint", url, "--wallet", tenantWallet, strings.Repeat("0", 64), "--periods", "0"}, "at least 1"},
		{"bad lease", []string{"terminate", "--endpoint", url, "--wallet", tenantWallet, "nonsense"}, "is not a lease ID"},
		{"unknown subcommand", []string{"buy"}, `unknown lease subcommand "buy"`},
		{"both registry and host", []string{"offers", "--endpoint", url, "--registry", registry, "--host", hostAddr}, "one of --registry"},
		{"existing wallet", []string{"wallet", "--new", tenantWallet}, "file exists"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := kigumi(t, append([]string{"lease"}, tt.args...)...)
			if code != exitInvalid || !strings.Contains(stderr, tt.want) || strings.Contains(stdout+stderr, strings.TrimSpace(string(seed))) {
				t.Fatalf("exit %d, want 1 and %q\n%s\n%s", code, tt.want, stdout, stderr)
			}
		})
	}
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/Peersyst/xrpl-go/xrpl/wallet"
	"github.com/hashicorp/hcl/v2"
	"golang.org/x/term"

	"github.com/kigumi/kigumi/core/spec"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/market"
)

// leaseArgs and leaseHelp are kigumi lease's usage.
const (
	leaseArgs = "wallet|offers|acquire|extend|terminate|status ..."
	leaseHelp = `Uses the lease market of docs/ledger-protocol.md as a tenant, with your own
wallet, over the WebSocket API of a rippled, clio or fake ledger server
(--endpoint ws://... or wss://...):

  kigumi lease wallet [--new] FILE
      print the address of the wallet in FILE (--new: make one; fund it
      out of band). The file holds the wallet's seed, mode 0600, owned by
      you; kigumi refuses it otherwise and never prints it.
  kigumi lease offers --registry ADDR | --host ADDR
      list hosts (from their heartbeats to the registry account) and their
      open lease offers.
  kigumi lease acquire --wallet FILE --host ADDR [--offer ID] --spec FILE
      [--max-drops N]
      check the tenant spec as the host will, name its tenant after the
      lease, seal it to the host's key, buy the lease with it (refusing an
      offer dearer than the host advertises, or than --max-drops), and wait
      (--timeout) for the host's reply, opened with your message key.
  kigumi lease extend --wallet FILE LEASE --periods N
  kigumi lease terminate --wallet FILE LEASE
      pay for more periods, or end the lease; both wait for the reply.
  kigumi lease status --wallet FILE [LEASE]
      your leases: held or ended, their last ledger as far as known, and
      the replies received.

Your message key, to which hosts seal their replies, is derived from the
wallet. --json prints JSON. Exit codes: 1 invalid input or a host's
refusal, 2 a transaction without effect (tec*), no reply in time, or a
failure.`
)

var cmdLease = &command{
	name:    "lease",
	args:    leaseArgs,
	summary: "Lease instances from hosts on the XRP Ledger, as a tenant",
	help:    leaseHelp,
	run:     runLease,
}

// leaseSubcommands are the subcommands of kigumi lease.
var leaseSubcommands = map[string]func(ctx context.Context, c *cli, o *leaseOpts, fs *flag.FlagSet, args []string) int{
	"wallet":    leaseWallet,
	"offers":    leaseOffers,
	"acquire":   leaseAcquire,
	"extend":    leaseExtend,
	"terminate": leaseTerminate,
	"status":    leaseStatus,
}

// leaseOpts are the options the lease subcommands share.
type leaseOpts struct {
	endpoint string
	wallet   string
	timeout  time.Duration
}

func runLease(ctx context.Context, c *cli, _ *flag.FlagSet, args []string) int {
	if len(args) == 0 || leaseSubcommands[args[0]] == nil {
		if len(args) > 0 && args[0] != "--help" && args[0] != "-h" {
			c.errorf("unknown lease subcommand %q", args[0])
		}
		fmt.Fprintf(c.stderr, "Usage: kigumi lease %s\n\n%s\n", leaseArgs, leaseHelp)
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
			return exitOK
		}
		return exitInvalid
	}
	fs := flag.NewFlagSet("kigumi lease "+args[0], flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	o := &leaseOpts{}
	if args[0] != "wallet" {
		fs.StringVar(&o.endpoint, "endpoint", "", "WebSocket URL of a rippled, clio or fake ledger server (required)")
	}
	fs.BoolVar(&c.jsonOut, "json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintf(c.stdout, "Usage: kigumi lease %s [options]\n\n%s\n\nOptions:\n", args[0], strings.TrimSpace(leaseHelp))
		fs.SetOutput(c.stdout)
		fs.PrintDefaults()
		fs.SetOutput(c.stderr)
	}
	return leaseSubcommands[args[0]](ctx, c, o, fs, args[1:])
}

// walletFlag adds --wallet; timeoutFlag --timeout.
func (o *leaseOpts) walletFlag(fs *flag.FlagSet) {
	fs.StringVar(&o.wallet, "wallet", "", "file holding your wallet's seed (mode 0600; required)")
}

func (o *leaseOpts) timeoutFlag(fs *flag.FlagSet) {
	fs.DurationVar(&o.timeout, "timeout", 2*time.Minute, "how long to wait for the host's reply")
}

// dial connects to the endpoint as the wallet's tenant; a nil client
// comes with the exit code.
func (o *leaseOpts) dial(c *cli, needWallet bool) (*market.Client, int) {
	if o.endpoint == "" {
		c.errorf("--endpoint is required: the WebSocket URL of a rippled, clio or fake ledger server")
		return nil, exitInvalid
	}
	var w wallet.Wallet
	if needWallet || o.wallet != "" {
		if o.wallet == "" {
			c.errorf("--wallet is required: the file holding your wallet's seed (kigumi lease wallet --new FILE makes one)")
			return nil, exitInvalid
		}
		var err error
		if w, err = market.ReadWallet(o.wallet); err != nil {
			c.errorf("%v", err)
			return nil, exitInvalid
		}
	}
	mc, err := market.Dial(o.endpoint, w)
	if errors.Is(err, market.ErrBadURL) {
		c.errorf("--endpoint: %v", err)
		return nil, exitInvalid
	} else if err != nil {
		c.errorf("%v", err)
		return nil, exitFailed
	}
	return mc, exitOK
}

// leaseFailed reports err and returns its exit code: a tec* result, a timeout,
// a refused reply and connection trouble are failures (2).
func (c *cli) leaseFailed(err error) int {
	c.errorf("%v", err)
	return exitFailed
}

func leaseWallet(_ context.Context, c *cli, _ *leaseOpts, fs *flag.FlagSet, args []string) int {
	create := fs.Bool("new", false, "make a new wallet (ed25519) in FILE, which must not exist")
	if code, done := c.parse(fs, args, 1, 1); done {
		return code
	}
	var w wallet.Wallet
	var err error
	if *create {
		w, err = market.NewWallet(fs.Arg(0))
	} else {
		w, err = market.ReadWallet(fs.Arg(0))
	}
	if err != nil {
		c.errorf("%v", err)
		return exitInvalid
	}
	if c.jsonOut {
		return c.printJSON(map[string]string{"address": string(w.ClassicAddress)})
	}
	fmt.Fprintln(c.stdout, w.ClassicAddress)
	return exitOK
}

func leaseOffers(ctx context.Context, c *cli, o *leaseOpts, fs *flag.FlagSet, args []string) int {
	registry := fs.String("registry", "", "registry account: list the hosts registered with it")
	host := fs.String("host", "", "host account: list this host alone")
	o.walletFlag(fs)
	if code, done := c.parse(fs, args, 0, 0); done {
		return code
	}
	if (*registry == "") == (*host == "") {
		c.errorf("give one of --registry ADDR and --host ADDR")
		return exitInvalid
	}
	mc, code := o.dial(c, false)
	if mc == nil {
		return code
	}
	defer mc.Close()
	var hosts []market.Host
	var err error
	if *registry != "" {
		hosts, err = mc.Hosts(ctx, *registry)
	} else {
		var h market.Host
		h, err = mc.Host(ctx, *host)
		hosts = []market.Host{h}
	}
	if err != nil {
		return c.leaseFailed(err)
	}
	if c.jsonOut {
		return c.printJSON(map[string]any{"hosts": hosts})
	}
	if len(hosts) == 0 {
		fmt.Fprintf(c.stdout, "No host has registered with %s.\n", *registry)
	}
	for _, h := range hosts {
		fmt.Fprintf(c.stdout, "host %s  software %q  capacity %d  free %d  price %s drops per %d ledgers  (heartbeat at ledger %d)\n  key %s\n",
			h.Address, h.Software, h.Capacity, h.Free, h.PriceDrops, h.LeaseLedgers, h.HeartbeatLedger, h.Key)
		if len(h.Offers) == 0 {
			fmt.Fprintln(c.stdout, "  no open offers")
		}
		for _, of := range h.Offers {
			fmt.Fprintf(c.stdout, "  offer %s  lease %s  tenant %s  %d drops per %d ledgers\n", of.ID, of.Lease, of.Tenant, of.PriceDrops, of.LeaseLedgers)
		}
	}
	return exitOK
}

// acquireResult is what kigumi lease acquire prints with --json.
type acquireResult struct {
	market.Acquisition
	Reply *market.Reply `json:"reply,omitempty"`
	Error string        `json:"error,omitempty"`
}

func leaseAcquire(ctx context.Context, c *cli, o *leaseOpts, fs *flag.FlagSet, args []string) int {
	host := fs.String("host", "", "host account to lease from (required)")
	offerID := fs.String("offer", "", "the host's offer to accept (default: its first open one)")
	specFile := fs.String("spec", "", "tenant spec (HCL) of the instances wanted (required)")
	maxDrops := fs.Uint64("max-drops", 0, "the most the lease may cost, in drops (default: the price of the host's heartbeat)")
	o.walletFlag(fs)
	o.timeoutFlag(fs)
	if code, done := c.parse(fs, args, 0, 0); done {
		return code
	}
	if *host == "" || *specFile == "" {
		c.errorf("--host and --spec are required")
		return exitInvalid
	}
	src, err := spec.ReadFile(*specFile)
	if err != nil {
		c.errorf("read the spec: %v", err)
		return exitInvalid
	}
	// Checked before anything goes on the ledger, and again once the
	// lease names the tenant.
	if p, _, diags := market.PrepareSpec(*specFile, src, "l-0000000000000000"); diags.HasErrors() {
		c.leaseDiags(p, diags)
		return exitInvalid
	}
	mc, code := o.dial(c, true)
	if mc == nil {
		return code
	}
	defer mc.Close()
	h, err := mc.Host(ctx, *host)
	if err != nil {
		return c.leaseFailed(err)
	}
	limit := *maxDrops
	if limit == 0 {
		limit, _ = strconv.ParseUint(h.PriceDrops, 10, 64)
	}
	var offer *market.Offer
	for i, of := range h.Offers {
		if *offerID == "" && of.PriceDrops <= limit || strings.EqualFold(of.ID, *offerID) {
			offer = &h.Offers[i]
			break
		}
	}
	switch {
	case offer == nil && *offerID != "":
		c.errorf("host %s has no open lease offer %s", *host, *offerID)
		return exitFailed
	case offer == nil:
		c.errorf("host %s has no open lease offer at %d drops or less (%d open; %d of %d slots free at its last heartbeat)",
			*host, limit, len(h.Offers), h.Free, h.Capacity)
		return exitFailed
	case offer.PriceDrops > limit:
		c.errorf("offer %s asks %d drops, more than %d (the host's advertised price, or --max-drops)", offer.ID, offer.PriceDrops, limit)
		return exitInvalid
	}
	p, req, diags := market.PrepareSpec(*specFile, src, offer.Tenant)
	if diags.HasErrors() {
		c.leaseDiags(p, diags)
		return exitInvalid
	}
	if !c.jsonOut {
		fmt.Fprintf(c.stdout, "Accepting offer %s of host %s (%d drops per %d ledgers) for tenant %s...\n",
			offer.ID, h.Address, offer.PriceDrops, offer.LeaseLedgers, offer.Tenant)
	}
	a, err := mc.Acquire(ctx, h, *offer, req)
	if err != nil {
		return c.leaseFailed(err)
	}
	out := acquireResult{Acquisition: a}
	if !c.jsonOut {
		fmt.Fprintf(c.stdout, "lease:   %s\ntenant:  %s\nacquire: %s (ledger %d)\nWaiting up to %v for the host's reply...\n", a.Lease, a.Tenant, a.Hash, a.Ledger, o.timeout)
	}
	return c.leaseReply(ctx, mc, o, a.Host, a.Sent, func(r *market.Reply, err error) any {
		out.Reply = r
		if err != nil {
			out.Error = err.Error()
		}
		return out
	})
}

// leaseReply waits for the host's reply to sent and prints it; result
// makes what --json prints of it.
func (c *cli) leaseReply(ctx context.Context, mc *market.Client, o *leaseOpts, host string, sent market.Sent, result func(*market.Reply, error) any) int {
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	r, err := mc.WaitReply(wctx, host, sent.Hash, sent.Ledger)
	code := exitOK
	var rp *market.Reply
	switch {
	case errors.Is(err, market.ErrReplyRefused):
		rp, code = &r, exitFailed
	case err != nil:
		code = exitFailed
	case !r.OK:
		rp, code = &r, exitInvalid
	default:
		rp = &r
	}
	if c.jsonOut {
		if pc := c.printJSON(result(rp, err)); pc != exitOK {
			return pc
		}
		return code
	}
	if err != nil {
		c.errorf("%v", err)
		return code
	}
	verdict := "ok"
	if !r.OK {
		verdict = "refused"
	}
	fmt.Fprintf(c.stdout, "reply:   %s, %q (tx %s, ledger %d, %d drops)\n", verdict, r.Message, r.Tx, r.Ledger, r.AmountDrops)
	if len(r.Details) > 0 {
		fmt.Fprintf(c.stdout, "details: %s\n", r.Details)
	}
	if !r.OK {
		c.errorf("the host refused: %q", r.Message)
	}
	return code
}

// leaseDiags prints a spec's diagnostics.
func (c *cli) leaseDiags(p *spec.Parser, diags hcl.Diagnostics) {
	color := false
	if f, ok := c.stderr.(*os.File); ok {
		color = term.IsTerminal(int(f.Fd()))
	}
	_ = spec.WriteDiagnostics(c.stderr, p.Files(), diags, color)
}

// changeResult is what kigumi lease extend and terminate print with
// --json.
type changeResult struct {
	Lease string `json:"lease"`
	market.Sent
	Reply *market.Reply `json:"reply,omitempty"`
	Error string        `json:"error,omitempty"`
}

func leaseChange(ctx context.Context, c *cli, o *leaseOpts, fs *flag.FlagSet, args []string, periods *uint64) int {
	o.walletFlag(fs)
	o.timeoutFlag(fs)
	if code, done := c.parse(fs, args, 1, 1); done {
		return code
	}
	if periods != nil && *periods < 1 {
		c.errorf("--periods must be at least 1")
		return exitInvalid
	}
	lease := strings.ToUpper(fs.Arg(0))
	host, err := market.LeaseHost(lease)
	if err != nil {
		c.errorf("%v", err)
		return exitInvalid
	}
	mc, code := o.dial(c, true)
	if mc == nil {
		return code
	}
	defer mc.Close()
	var sent market.Sent
	if periods != nil {
		sent, err = mc.Extend(ctx, lease, *periods)
	} else {
		sent, err = mc.Terminate(ctx, lease)
	}
	if err != nil {
		return c.leaseFailed(err)
	}
	if !c.jsonOut {
		fmt.Fprintf(c.stdout, "lease:   %s\nsent:    %s (ledger %d)\nWaiting up to %v for the host's reply...\n", lease, sent.Hash, sent.Ledger, o.timeout)
	}
	return c.leaseReply(ctx, mc, o, host, sent, func(r *market.Reply, err error) any {
		out := changeResult{Lease: lease, Sent: sent, Reply: r}
		if err != nil {
			out.Error = err.Error()
		}
		return out
	})
}

func leaseExtend(ctx context.Context, c *cli, o *leaseOpts, fs *flag.FlagSet, args []string) int {
	periods := fs.Uint64("periods", 1, "periods to pay for (each at the lease's price)")
	return leaseChange(ctx, c, o, fs, args, periods)
}

func leaseTerminate(ctx context.Context, c *cli, o *leaseOpts, fs *flag.FlagSet, args []string) int {
	return leaseChange(ctx, c, o, fs, args, nil)
}

func leaseStatus(ctx context.Context, c *cli, o *leaseOpts, fs *flag.FlagSet, args []string) int {
	o.walletFlag(fs)
	if code, done := c.parse(fs, args, 0, 1); done {
		return code
	}
	mc, code := o.dial(c, true)
	if mc == nil {
		return code
	}
	defer mc.Close()
	st, err := mc.Leases(ctx)
	if err != nil {
		return c.leaseFailed(err)
	}
	if want := strings.ToUpper(fs.Arg(0)); want != "" {
		kept := st.Leases[:0]
		for _, l := range st.Leases {
			if l.Lease == want {
				kept = append(kept, l)
			}
		}
		st.Leases = kept
		if len(kept) == 0 {
			c.errorf("%s never acquired lease %s", st.Account, want)
			return exitInvalid
		}
	}
	if c.jsonOut {
		return c.printJSON(st)
	}
	fmt.Fprintf(c.stdout, "account %s, validated ledger %d: %d lease(s)\n", st.Account, st.ValidatedLedger, len(st.Leases))
	for _, l := range st.Leases {
		expires := "unknown"
		if l.ExpiresLedger != 0 {
			expires = fmt.Sprintf("after ledger %d", l.ExpiresLedger)
		}
		fmt.Fprintf(c.stdout, "\nlease %s\n  host %s  tenant %s  %s\n  acquired at ledger %d (tx %s), %d period(s) extended, ends %s\n",
			l.Lease, l.Host, l.Tenant, l.State, l.AcquiredLedger, l.Acquire, l.ExtendedPeriods, expires)
		for _, r := range l.Replies {
			switch {
			case r.Error != "":
				fmt.Fprintf(c.stdout, "  reply %s: refused: %s\n", r.Tx, r.Error)
			default:
				fmt.Fprintf(c.stdout, "  reply %s to %s: ok=%v %q\n", r.Tx, r.Ref, r.OK, r.Message)
				if len(r.Details) > 0 {
					fmt.Fprintf(c.stdout, "    details: %s\n", r.Details)
				}
			}
		}
	}
	return exitOK
}

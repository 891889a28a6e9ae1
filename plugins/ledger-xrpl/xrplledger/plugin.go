package xrplledger

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/Peersyst/xrpl-go/xrpl/wallet"
	"github.com/hashicorp/go-hclog"
	"go.etcd.io/bbolt"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
)

// Version is the plugin's version.
const Version = "0.1.0"

// maxSecretFile bounds the wallet secret file.
const maxSecretFile = 4096

// messageKeyLabel separates the host's message key, derived from its
// wallet secret, from any other use of that secret.
const messageKeyLabel = "kigumi.ledger.v1 host message key"

// config is the decoded `ledger "xrpl" { ... }` block.
type config struct {
	url            string
	registry       string
	slots          int
	priceDrops     uint64
	leaseLedgers   uint32
	heartbeat      time.Duration
	poll           time.Duration
	allowPlaintext bool
}

// Plugin is the ledger-xrpl plugin: an sdk.Ledger.
type Plugin struct {
	logger hclog.Logger

	mu     sync.Mutex
	cfg    config
	wallet wallet.Wallet
	key    memo.Key
	db     *bbolt.DB
	// submitMu serializes submissions: each takes the account's next
	// sequence.
	submitMu sync.Mutex
	conn     *conn
	// kick wakes the host loop (kickHost).
	kick chan struct{}
}

var _ sdk.Ledger = (*Plugin)(nil)

// New returns an unconfigured plugin that logs to logger.
func New(logger hclog.Logger) *Plugin {
	return &Plugin{logger: logger, kick: make(chan struct{}, 1)}
}

// Info describes the plugin and its settings.
func (p *Plugin) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{
		Name:    "xrpl",
		Kind:    sdk.KindLedger,
		Version: Version,
		Schema: sdk.Schema{Attributes: []sdk.Attribute{
			{Name: "url", Type: sdk.TypeString, Required: true, Description: "WebSocket URL of a rippled or clio server (wss://...; ws:// on loopback only)"},
			{Name: "secret_file", Type: sdk.TypeString, Required: true, Description: "file holding the host wallet's secret (seed): owned by root, mode 0600 or stricter"},
			{Name: "registry", Type: sdk.TypeString, Description: "account the host registers and sends heartbeats to; none: no registration"},
			{Name: "slots", Type: sdk.TypeNumber, Description: "leases offered at once (default 1)"},
			{Name: "price_drops", Type: sdk.TypeNumber, Description: "price of one lease period, in drops (default 1000000)"},
			{Name: "lease_ledgers", Type: sdk.TypeNumber, Description: "validated ledgers one period lasts (default 900, about an hour)"},
			{Name: "heartbeat", Type: sdk.TypeString, Description: "interval of heartbeats, jittered (default 10m)"},
			{Name: "poll", Type: sdk.TypeString, Description: "interval of the check that the subscription still delivers (default 10s)"},
			{Name: "allow_plaintext", Type: sdk.TypeBool, Description: "accept instance requests not sealed to the host's key (default false)"},
		}},
		Capabilities: sdk.Capabilities{Scope: sdk.ScopeHost, Features: []string{sdk.FeatureEncryptedReplies}},
	}, nil
}

// Configure checks the settings, reads the wallet secret and opens the
// plugin's store in req.DataDir.
func (p *Plugin) Configure(_ context.Context, req sdk.ConfigureRequest) error {
	cfg, secretFile, err := parseConfig(req.Settings)
	if err != nil {
		return err
	}
	seed, err := readSecret(secretFile)
	if err != nil {
		return sdk.InvalidAttribute("secret_file", "%v", err)
	}
	w, err := wallet.FromSeed(seed, "")
	if err != nil {
		// The error may quote the seed: say nothing of it.
		return sdk.InvalidAttribute("secret_file", "%s holds no valid XRP Ledger seed", secretFile)
	}
	priv, err := hex.DecodeString(w.PrivateKey)
	if err != nil {
		return sdk.Errorf(sdk.CodeInternal, "wallet key: %v", err)
	}
	// A plugin configured again (the agent configures its plugins once
	// more as it starts) keeps the store it has open: bbolt's lock is per
	// open file, so opening it twice would wait for itself.
	path := filepath.Join(req.DataDir, "xrpl.db")
	p.mu.Lock()
	defer p.mu.Unlock()
	db := p.db
	if db == nil || db.Path() != path {
		if db, err = openStore(path); err != nil {
			return err
		}
		if p.db != nil {
			p.db.Close()
		}
	}
	p.cfg, p.wallet, p.db = cfg, w, db
	p.key = memo.DeriveKey(messageKeyLabel, priv)
	p.logger.Info("configured", "account", string(w.ClassicAddress), "url", cfg.url, "slots", cfg.slots,
		"message_key", hex.EncodeToString(p.key.Public()))
	return nil
}

// openStore opens the plugin's store at path, creating its buckets.
func openStore(path string) (*bbolt.DB, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, sdk.Errorf(sdk.CodeUnavailable, "open the plugin's store: %v", err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, sdk.Errorf(sdk.CodeInternal, "init the plugin's store: %v", err)
	}
	return db, nil
}

func parseConfig(s sdk.Config) (config, string, error) {
	cfg := config{slots: 1, priceDrops: 1_000_000, leaseLedgers: 900, heartbeat: 10 * time.Minute, poll: 10 * time.Second}
	cfg.url, _ = s["url"].(string)
	switch {
	case strings.HasPrefix(cfg.url, "wss://"):
	case strings.HasPrefix(cfg.url, "ws://127.0.0.1") || strings.HasPrefix(cfg.url, "ws://localhost") || strings.HasPrefix(cfg.url, "ws://[::1]"):
	default:
		return cfg, "", sdk.InvalidAttribute("url", "want wss://..., or ws:// to a loopback address, not %q", cfg.url)
	}
	secretFile, _ := s["secret_file"].(string)
	if !filepath.IsAbs(secretFile) {
		return cfg, "", sdk.InvalidAttribute("secret_file", "want an absolute path, not %q", secretFile)
	}
	cfg.registry, _ = s["registry"].(string)
	if n, ok := s["slots"].(float64); ok {
		if n < 1 || n > 256 || n != float64(int(n)) {
			return cfg, "", sdk.InvalidAttribute("slots", "want a whole number from 1 to 256, not %v", n)
		}
		cfg.slots = int(n)
	}
	if n, ok := s["price_drops"].(float64); ok {
		if n < 1 || n > 1e17 || n != float64(uint64(n)) {
			return cfg, "", sdk.InvalidAttribute("price_drops", "want a whole number of drops, not %v", n)
		}
		cfg.priceDrops = uint64(n)
	}
	if n, ok := s["lease_ledgers"].(float64); ok {
		if n < 1 || n > 1e7 || n != float64(uint32(n)) {
			return cfg, "", sdk.InvalidAttribute("lease_ledgers", "want a whole number from 1 to 10000000, not %v", n)
		}
		cfg.leaseLedgers = uint32(n)
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"heartbeat", &cfg.heartbeat}, {"poll", &cfg.poll}} {
		if v, ok := s[d.name].(string); ok {
			dur, err := time.ParseDuration(v)
			if err != nil || dur < time.Millisecond {
				return cfg, "", sdk.InvalidAttribute(d.name, "want a duration such as \"10s\", not %q", v)
			}
			*d.dst = dur
		}
	}
	cfg.allowPlaintext, _ = s["allow_plaintext"].(bool)
	return cfg, secretFile, nil
}

// readSecret reads the wallet seed from a regular file that only root can
// read: owned by root, no permission for group or others. It never puts
// the file's content in an error.
func readSecret(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("open the secret file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("stat the secret file: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return "", fmt.Errorf("%s is not a regular file", path)
	case !ok || st.Uid != 0:
		return "", fmt.Errorf("%s must be owned by root", path)
	case fi.Mode().Perm()&0o077 != 0:
		return "", fmt.Errorf("%s is readable or writable by others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	case fi.Size() > maxSecretFile:
		return "", fmt.Errorf("%s is larger than %d bytes", path, maxSecretFile)
	}
	buf := make([]byte, maxSecretFile+1)
	n, err := f.Read(buf)
	if err != nil {
		return "", fmt.Errorf("read the secret file: %w", err)
	}
	seed := strings.TrimSpace(string(buf[:n]))
	clear(buf)
	if seed == "" {
		return "", errors.New("the secret file is empty")
	}
	return seed, nil
}

// configured returns the configuration, or an error before Configure.
func (p *Plugin) configured() (config, *bbolt.DB, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.db == nil {
		return config{}, nil, sdk.Errorf(sdk.CodeUnavailable, "the xrpl ledger plugin is not configured")
	}
	return p.cfg, p.db, nil
}

// Close closes the plugin's store and connection.
func (p *Plugin) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		p.conn.close()
		p.conn = nil
	}
	if p.db != nil {
		err := p.db.Close()
		p.db = nil
		return err
	}
	return nil
}

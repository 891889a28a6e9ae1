package market

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/Peersyst/xrpl-go/pkg/crypto"
	"github.com/Peersyst/xrpl-go/xrpl/wallet"

	"github.com/kigumi/kigumi/plugins/ledger-xrpl/memo"
)

// maxWalletFile bounds a wallet file.
const maxWalletFile = 4096

// messageKeyLabel separates the tenant's message key, derived from its
// wallet secret, from any other use of that secret (the host's is derived
// under its own label).
const messageKeyLabel = "kigumi.ledger.v1 tenant message key"

// NewWallet makes a new ed25519 wallet and writes its seed to path, which
// must not exist, with mode 0600.
func NewWallet(path string) (wallet.Wallet, error) {
	w, err := wallet.New(crypto.ED25519())
	if err != nil {
		return wallet.Wallet{}, fmt.Errorf("new wallet: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return wallet.Wallet{}, fmt.Errorf("create the wallet file: %w", err)
	}
	_, err = f.WriteString(w.Seed + "\n")
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		os.Remove(path)
		return wallet.Wallet{}, fmt.Errorf("write the wallet file %s: %w", path, err)
	}
	return w, nil
}

// ReadWallet reads a wallet's seed from path: a regular file owned by the
// user running, which neither group nor others may read or write. No
// error quotes the file's content.
func ReadWallet(path string) (wallet.Wallet, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return wallet.Wallet{}, fmt.Errorf("open the wallet file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return wallet.Wallet{}, fmt.Errorf("stat the wallet file: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return wallet.Wallet{}, fmt.Errorf("the wallet file %s is not a regular file", path)
	case !ok || st.Uid != uint32(os.Getuid()):
		return wallet.Wallet{}, fmt.Errorf("the wallet file %s must be owned by you (uid %d)", path, os.Getuid())
	case fi.Mode().Perm()&0o077 != 0:
		return wallet.Wallet{}, fmt.Errorf("the wallet file %s is readable or writable by others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	case fi.Size() > maxWalletFile:
		return wallet.Wallet{}, fmt.Errorf("the wallet file %s is larger than %d bytes", path, maxWalletFile)
	}
	buf := make([]byte, maxWalletFile+1)
	n, err := f.Read(buf)
	if err != nil {
		return wallet.Wallet{}, fmt.Errorf("read the wallet file %s: %w", path, err)
	}
	seed := strings.TrimSpace(string(buf[:n]))
	clear(buf)
	w, err := wallet.FromSeed(seed, "")
	if err != nil {
		// The error may quote the seed: say nothing of it.
		return wallet.Wallet{}, fmt.Errorf("the wallet file %s holds no valid XRP Ledger seed", path)
	}
	return w, nil
}

// MessageKey is the tenant's message key of wallet w: derived from its
// private key, so that the wallet file is the only secret to keep, and
// replies sealed to it open again later (kigumi lease status).
func MessageKey(w wallet.Wallet) (memo.Key, error) {
	priv, err := hex.DecodeString(w.PrivateKey)
	if err != nil {
		return memo.Key{}, errors.New("the wallet's private key is not hex")
	}
	return memo.DeriveKey(messageKeyLabel, priv), nil
}

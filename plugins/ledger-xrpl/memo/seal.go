package memo

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"

	"filippo.io/edwards25519"
	"golang.org/x/crypto/nacl/box"
)

// ErrOpen is the error of a sealed box that does not open: it was sealed
// to another key, or altered.
var ErrOpen = errors.New("memo: sealed box does not open with this key")

// SealOverhead is how many bytes sealing adds to a message: the sender's
// ephemeral X25519 public key (32) and the Poly1305 tag (16).
const SealOverhead = box.AnonymousOverhead

// Key is a message key: an ed25519 key pair, whose public half a party
// publishes (the host in its heartbeat, the tenant in its acquire) and to
// which others seal messages.
type Key struct {
	priv ed25519.PrivateKey
}

// NewKey returns a random message key.
func NewKey() (Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("memo: new key: %w", err)
	}
	return Key{priv: priv}, nil
}

// KeyFromSeed returns the message key of a 32-byte ed25519 seed.
func KeyFromSeed(seed []byte) (Key, error) {
	if len(seed) != ed25519.SeedSize {
		return Key{}, fmt.Errorf("memo: a key seed is %d bytes, not %d", ed25519.SeedSize, len(seed))
	}
	return Key{priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// DeriveKey derives a message key from a secret, such as a wallet's
// private key, under a domain-separation label: the seed is the first 32
// bytes of SHA-512(label || 0x00 || secret).
func DeriveKey(label string, secret []byte) Key {
	h := sha512.New()
	h.Write([]byte(label))
	h.Write([]byte{0})
	h.Write(secret)
	k, _ := KeyFromSeed(h.Sum(nil)[:ed25519.SeedSize])
	return k
}

// Public returns the key's ed25519 public key.
func (k Key) Public() ed25519.PublicKey { return k.priv.Public().(ed25519.PublicKey) }

// Seed returns the key's 32-byte seed, for storing it.
func (k Key) Seed() []byte { return k.priv.Seed() }

// Open opens a box sealed to k's public key.
func (k Key) Open(sealed []byte) ([]byte, error) {
	pub, err := montgomery(k.Public())
	if err != nil {
		return nil, err
	}
	priv := k.x25519Private()
	msg, ok := box.OpenAnonymous(nil, sealed, pub, &priv)
	if !ok {
		return nil, ErrOpen
	}
	return msg, nil
}

// x25519Private converts the ed25519 private key to its X25519 scalar, as
// libsodium's crypto_sign_ed25519_sk_to_curve25519 does: the first half of
// SHA-512 of the seed (box clamps it).
func (k Key) x25519Private() [32]byte {
	h := sha512.Sum512(k.priv.Seed())
	var out [32]byte
	copy(out[:], h[:32])
	return out
}

// Seal seals msg to the ed25519 public key to: an anonymous sealed box
// (crypto_box_seal) to the key's X25519 form, which only the holder of
// to's private key opens.
func Seal(to ed25519.PublicKey, msg []byte) ([]byte, error) {
	pub, err := montgomery(to)
	if err != nil {
		return nil, err
	}
	out, err := box.SealAnonymous(nil, msg, pub, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("memo: seal: %w", err)
	}
	return out, nil
}

// montgomery converts an ed25519 public key to X25519, as libsodium's
// crypto_sign_ed25519_pk_to_curve25519 does. It refuses a key that is not
// a point of the curve.
func montgomery(pub ed25519.PublicKey) (*[32]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("memo: an ed25519 public key is %d bytes, not %d", ed25519.PublicKeySize, len(pub))
	}
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return nil, fmt.Errorf("memo: bad ed25519 public key: %w", err)
	}
	var out [32]byte
	copy(out[:], p.BytesMontgomery())
	return &out, nil
}

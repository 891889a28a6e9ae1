// Package memo holds Kigumi's ledger protocol: the memos that hosts and
// tenants write on XRP Ledger transactions (docs/ledger-protocol.md), and
// the sealed boxes that carry their private parts.
package memo

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Version is the protocol version this package writes and reads.
const Version = 1

// typePrefix starts the MemoType of every Kigumi memo; the version follows.
const typePrefix = "kigumi/"

// MaxData is the largest MemoData, in bytes after hex decoding, that this
// protocol writes or reads. rippled refuses transactions whose memos
// serialize to more than 1 KiB; MaxData leaves room for the type and
// format.
const MaxData = 900

// maxField bounds the decoded MemoType and MemoFormat.
const maxField = 64

// Type is the kind of a Kigumi memo.
type Type string

// The memo types of version 1.
const (
	// TypeHost: a host's registration and heartbeat (Host), on a Payment to
	// the registry account.
	TypeHost Type = "host"
	// TypeAcquire: a tenant's instance request (Acquire), on the
	// NFTokenAcceptOffer that buys a lease; sealed to the host's key.
	TypeAcquire Type = "acquire"
	// TypeReply: the host's answer to an acquire, extend or terminate
	// (Reply), on a Payment to the tenant.
	TypeReply Type = "reply"
	// TypeExtend: a tenant extends a lease (Extend), on a Payment of the
	// price to the host.
	TypeExtend Type = "extend"
	// TypeTerminate: a tenant ends a lease early (Terminate), on a Payment
	// to the host.
	TypeTerminate Type = "terminate"
)

var knownTypes = map[Type]bool{TypeHost: true, TypeAcquire: true, TypeReply: true, TypeExtend: true, TypeTerminate: true}

// The memo formats.
const (
	// FormatJSON: MemoData is a JSON object.
	FormatJSON = "application/json"
	// FormatSealed: MemoData is a sealed box (Seal) of a JSON object.
	FormatSealed = "application/x-kigumi-sealed"
)

// Errors of Parse and Decode. Callers ignore ErrNotKigumi silently, log
// ErrUnknownType and ignore the memo, and reject the others.
var (
	// ErrNotKigumi: the transaction carries no Kigumi memo.
	ErrNotKigumi = errors.New("memo: no kigumi memo")
	// ErrUnknownType: a Kigumi memo of another version or an unknown type.
	ErrUnknownType = errors.New("memo: unknown kigumi memo type")
	// ErrTooLarge: a memo larger than MaxData.
	ErrTooLarge = errors.New("memo: too large")
	// ErrMalformed: a memo that does not decode.
	ErrMalformed = errors.New("memo: malformed")
	// ErrPlaintext: a plaintext memo where a sealed one is required.
	ErrPlaintext = errors.New("memo: plaintext where a sealed memo is required")
)

// Memo is one decoded Kigumi memo.
type Memo struct {
	Type   Type
	Format string
	Data   []byte
}

// Host is a host's registration and heartbeat.
type Host struct {
	// Software is the host's Kigumi version.
	Software string `json:"software"`
	// Capacity is how many leases the host offers in all.
	Capacity int `json:"capacity"`
	// Free is how many are not leased.
	Free int `json:"free"`
	// PriceDrops is the price of one lease period, in drops.
	PriceDrops string `json:"price_drops"`
	// LeaseLedgers is how many validated ledgers a period lasts.
	LeaseLedgers uint32 `json:"lease_ledgers"`
	// Key is the host's message key (ed25519, hex): acquires are sealed
	// to it.
	Key string `json:"key"`
}

// Acquire is a tenant's instance request.
type Acquire struct {
	// TenantKey is the tenant's message key (ed25519, hex): replies are
	// sealed to it.
	TenantKey string `json:"tenant_key"`
	// Spec is the tenant spec (HCL) of the instance requested.
	Spec string `json:"spec"`
}

// Reply answers a tenant's acquire, extend or terminate.
type Reply struct {
	// Ref is the hash of the transaction answered.
	Ref string `json:"ref"`
	OK  bool   `json:"ok"`
	// Message is public: it holds no secrets.
	Message string `json:"message,omitempty"`
	// Payload is sealed to the tenant's key.
	Payload []byte `json:"payload,omitempty"`
}

// Extend extends a lease by the periods paid.
type Extend struct {
	// Lease is the lease's NFTokenID (hex).
	Lease string `json:"lease"`
}

// Terminate ends a lease.
type Terminate struct {
	// Lease is the lease's NFTokenID (hex).
	Lease string `json:"lease"`
}

// Encode returns the JSON memo of type t holding v.
func Encode(t Type, v any) (Memo, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return Memo{}, fmt.Errorf("memo: encode %s: %w", t, err)
	}
	return checkSize(Memo{Type: t, Format: FormatJSON, Data: data})
}

// EncodeSealed returns the memo of type t holding v, sealed to the key to.
func EncodeSealed(t Type, to ed25519.PublicKey, v any) (Memo, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return Memo{}, fmt.Errorf("memo: encode %s: %w", t, err)
	}
	if len(data)+SealOverhead > MaxData {
		return Memo{}, fmt.Errorf("%w: %s memo of %d bytes sealed, limit %d", ErrTooLarge, t, len(data)+SealOverhead, MaxData)
	}
	sealed, err := Seal(to, data)
	if err != nil {
		return Memo{}, err
	}
	return checkSize(Memo{Type: t, Format: FormatSealed, Data: sealed})
}

func checkSize(m Memo) (Memo, error) {
	if len(m.Data) > MaxData {
		return Memo{}, fmt.Errorf("%w: %s memo of %d bytes, limit %d", ErrTooLarge, m.Type, len(m.Data), MaxData)
	}
	return m, nil
}

// XRPL returns the memo as an element of a transaction's Memos field, its
// fields hex-encoded (upper case, as rippled writes them).
func (m Memo) XRPL() map[string]any {
	return map[string]any{"Memo": map[string]any{
		"MemoType":   strings.ToUpper(hex.EncodeToString([]byte(typePrefix + fmt.Sprint(Version) + "/" + string(m.Type)))),
		"MemoFormat": strings.ToUpper(hex.EncodeToString([]byte(m.Format))),
		"MemoData":   strings.ToUpper(hex.EncodeToString(m.Data)),
	}}
}

var kigumiType = regexp.MustCompile(`^kigumi/([0-9]{1,4})/([a-z-]{1,32})$`)

// Parse finds the Kigumi memo among a transaction's Memos, as its JSON
// decodes into Go (a list of {"Memo": {"MemoType": hex, ...}}). It
// returns ErrNotKigumi when there is none, ErrUnknownType for a Kigumi
// memo of another version or type, ErrTooLarge and ErrMalformed for
// memos it refuses; it decodes no more than MaxData bytes.
func Parse(memos any) (Memo, error) {
	list, ok := memos.([]any)
	if memos == nil {
		return Memo{}, ErrNotKigumi
	}
	if !ok {
		return Memo{}, fmt.Errorf("%w: Memos is not a list", ErrMalformed)
	}
	for _, e := range list {
		wrap, _ := e.(map[string]any)
		fields, _ := wrap["Memo"].(map[string]any)
		if fields == nil {
			continue
		}
		typ, err := hexField(fields["MemoType"], maxField)
		if err != nil || !strings.HasPrefix(string(typ), typePrefix) {
			continue
		}
		match := kigumiType.FindStringSubmatch(string(typ))
		if match == nil {
			return Memo{}, fmt.Errorf("%w: type %q", ErrMalformed, typ)
		}
		if match[1] != fmt.Sprint(Version) || !knownTypes[Type(match[2])] {
			return Memo{}, fmt.Errorf("%w: %q", ErrUnknownType, typ)
		}
		format, err := hexField(fields["MemoFormat"], maxField)
		if err != nil {
			return Memo{}, fmt.Errorf("%w: MemoFormat: %w", ErrMalformed, err)
		}
		if string(format) != FormatJSON && string(format) != FormatSealed {
			return Memo{}, fmt.Errorf("%w: format %q", ErrMalformed, format)
		}
		data, err := hexField(fields["MemoData"], MaxData)
		if err != nil {
			return Memo{}, fmt.Errorf("MemoData: %w", err)
		}
		return Memo{Type: Type(match[2]), Format: string(format), Data: data}, nil
	}
	return Memo{}, ErrNotKigumi
}

// hexField decodes a hex memo field of at most limit bytes.
func hexField(v any, limit int) ([]byte, error) {
	s, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("%w: not a hex string", ErrMalformed)
	}
	if len(s) > 2*limit {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(s)/2, limit)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return b, nil
}

// Decode decodes m's data into v. A sealed memo is opened with key (nil:
// refused); a plaintext memo is refused with ErrPlaintext unless plain.
func Decode(m Memo, key *Key, plain bool, v any) error {
	data := m.Data
	switch m.Format {
	case FormatSealed:
		if key == nil {
			return fmt.Errorf("%w: a sealed %s memo and no key", ErrMalformed, m.Type)
		}
		var err error
		if data, err = key.Open(data); err != nil {
			return err
		}
	case FormatJSON:
		if !plain {
			return fmt.Errorf("%w: %s", ErrPlaintext, m.Type)
		}
	default:
		return fmt.Errorf("%w: format %q", ErrMalformed, m.Format)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMalformed, m.Type, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: %s: trailing data", ErrMalformed, m.Type)
	}
	return nil
}

// PublicKey decodes a hex message key.
func PublicKey(s string) (ed25519.PublicKey, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: message key %.80q is not %d hex bytes", ErrMalformed, s, ed25519.PublicKeySize)
	}
	if _, err := montgomery(b); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return b, nil
}

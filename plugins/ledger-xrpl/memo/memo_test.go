package memo

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// roundTrip encodes m as a transaction's Memos field, through JSON, and
// parses it back.
func roundTrip(t *testing.T, m Memo) (Memo, error) {
	t.Helper()
	raw, err := json.Marshal([]any{map[string]any{"Memo": map[string]any{"MemoType": "74657874", "MemoData": "6869"}}, m.XRPL()})
	if err != nil {
		t.Fatal(err)
	}
	var memos any
	if err := json.Unmarshal(raw, &memos); err != nil {
		t.Fatal(err)
	}
	return Parse(memos)
}

func TestRoundTrip(t *testing.T) {
	host, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		typ    Type
		sealed bool
		in     any
		out    any
	}{
		{"host", TypeHost, false, &Host{Software: "v1", Capacity: 4, Free: 2, PriceDrops: "1000", LeaseLedgers: 100, Key: hex.EncodeToString(host.Public())}, &Host{}},
		{"acquire sealed", TypeAcquire, true, &Acquire{TenantKey: "ab", Spec: `instance "a" {}`}, &Acquire{}},
		{"reply", TypeReply, false, &Reply{Ref: "AB", OK: true, Message: "running", Payload: []byte{1, 2}}, &Reply{}},
		{"extend", TypeExtend, false, &Extend{Lease: "00"}, &Extend{}},
		{"terminate", TypeTerminate, false, &Terminate{Lease: "00"}, &Terminate{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m Memo
			if tt.sealed {
				m, err = EncodeSealed(tt.typ, host.Public(), tt.in)
			} else {
				m, err = Encode(tt.typ, tt.in)
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := roundTrip(t, m)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tt.typ {
				t.Fatalf("type %q, want %q", got.Type, tt.typ)
			}
			if err := Decode(got, &host, !tt.sealed, tt.out); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(tt.in, tt.out) {
				t.Fatalf("decoded %+v, want %+v", tt.out, tt.in)
			}
		})
	}
}

func TestSealedToAnotherKey(t *testing.T) {
	host, _ := NewKey()
	other, _ := NewKey()
	m, err := EncodeSealed(TypeAcquire, host.Public(), &Acquire{Spec: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := Decode(m, &other, false, &Acquire{}); !errors.Is(err, ErrOpen) {
		t.Fatalf("opened with another key: %v", err)
	}
	m.Data[len(m.Data)-1] ^= 1
	if err := Decode(m, &host, false, &Acquire{}); !errors.Is(err, ErrOpen) {
		t.Fatalf("opened an altered box: %v", err)
	}
}

func TestDeriveKeyIsStableAndSeparated(t *testing.T) {
	a := DeriveKey("kigumi host", []byte("secret"))
	b := DeriveKey("kigumi host", []byte("secret"))
	c := DeriveKey("kigumi tenant", []byte("secret"))
	if !a.Public().Equal(b.Public()) {
		t.Fatal("the same secret and label derive different keys")
	}
	if a.Public().Equal(c.Public()) {
		t.Fatal("two labels derive the same key")
	}
}

func hexMemo(typ, format, data string) any {
	return []any{map[string]any{"Memo": map[string]any{
		"MemoType":   hex.EncodeToString([]byte(typ)),
		"MemoFormat": hex.EncodeToString([]byte(format)),
		"MemoData":   data,
	}}}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name  string
		memos any
		want  error
	}{
		{"no memos", nil, ErrNotKigumi},
		{"other memos", []any{map[string]any{"Memo": map[string]any{"MemoType": "6869"}}}, ErrNotKigumi},
		{"not a list", map[string]any{}, ErrMalformed},
		{"garbage entries", []any{1, "x", nil, map[string]any{"Memo": 3}}, ErrNotKigumi},
		{"bad type syntax", hexMemo("kigumi/1/Acq uire", FormatJSON, "7b7d"), ErrMalformed},
		{"unknown type", hexMemo("kigumi/1/gossip", FormatJSON, "7b7d"), ErrUnknownType},
		{"future version", hexMemo("kigumi/2/acquire", FormatJSON, "7b7d"), ErrUnknownType},
		{"bad format", hexMemo("kigumi/1/acquire", "text/html", "7b7d"), ErrMalformed},
		{"data not hex", hexMemo("kigumi/1/acquire", FormatJSON, "zz"), ErrMalformed},
		{"data not a string", []any{map[string]any{"Memo": map[string]any{
			"MemoType": hex.EncodeToString([]byte("kigumi/1/acquire")), "MemoFormat": hex.EncodeToString([]byte(FormatJSON)), "MemoData": 7}}}, ErrMalformed},
		{"oversized data", hexMemo("kigumi/1/acquire", FormatJSON, strings.Repeat("41", MaxData+1)), ErrTooLarge},
		{"oversized type", []any{map[string]any{"Memo": map[string]any{"MemoType": hex.EncodeToString([]byte("kigumi/" + strings.Repeat("a", 100)))}}}, ErrNotKigumi},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.memos)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	key, _ := NewKey()
	tests := []struct {
		name  string
		m     Memo
		plain bool
		want  error
	}{
		{"plaintext refused", Memo{Type: TypeAcquire, Format: FormatJSON, Data: []byte(`{}`)}, false, ErrPlaintext},
		{"not json", Memo{Type: TypeAcquire, Format: FormatJSON, Data: []byte(`{`)}, true, ErrMalformed},
		{"trailing data", Memo{Type: TypeAcquire, Format: FormatJSON, Data: []byte(`{} {}`)}, true, ErrMalformed},
		{"wrong field type", Memo{Type: TypeAcquire, Format: FormatJSON, Data: []byte(`{"spec": 3}`)}, true, ErrMalformed},
		{"garbage box", Memo{Type: TypeAcquire, Format: FormatSealed, Data: []byte("short")}, false, ErrOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Decode(tt.m, &key, tt.plain, &Acquire{}); !errors.Is(err, tt.want) {
				t.Fatalf("Decode: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestEncodeRefusesOversized(t *testing.T) {
	key, _ := NewKey()
	big := &Acquire{Spec: strings.Repeat("x", MaxData)}
	if _, err := Encode(TypeAcquire, big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Encode: %v", err)
	}
	if _, err := EncodeSealed(TypeAcquire, key.Public(), big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("EncodeSealed: %v", err)
	}
	// The largest sealed payload that fits is accepted.
	fits := &Acquire{Spec: strings.Repeat("x", MaxData-SealOverhead-len(`{"tenant_key":"","spec":""}`))}
	if _, err := EncodeSealed(TypeAcquire, key.Public(), fits); err != nil {
		t.Fatalf("EncodeSealed at the limit: %v", err)
	}
}

func TestPublicKeyRejects(t *testing.T) {
	for _, s := range []string{"", "zz", strings.Repeat("ab", 31), "02" + strings.Repeat("00", 31)} { // the last is no curve point {
		if _, err := PublicKey(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("PublicKey(%q): %v", s, err)
		}
	}
}

// FuzzParseDecode feeds arbitrary memo fields through Parse and Decode:
// nothing may panic, and what parses stays within MaxData.
func FuzzParseDecode(f *testing.F) {
	key := DeriveKey("fuzz", []byte("fuzz"))
	f.Add("kigumi/1/acquire", FormatSealed, []byte("x"))
	f.Add("kigumi/1/host", FormatJSON, []byte(`{"capacity":1}`))
	f.Fuzz(func(t *testing.T, typ, format string, data []byte) {
		m, err := Parse(hexMemo(typ, format, hex.EncodeToString(data)))
		if err != nil {
			return
		}
		if len(m.Data) > MaxData {
			t.Fatalf("parsed %d bytes", len(m.Data))
		}
		_ = Decode(m, &key, true, &Acquire{})
	})
}

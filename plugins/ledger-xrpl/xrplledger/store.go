package xrplledger

import (
	"encoding/binary"
	"encoding/json"

	"go.etcd.io/bbolt"
)

// The plugin's store: a bbolt file in its data directory.
var (
	// bucketMeta holds keyLastLedger.
	bucketMeta = []byte("meta")
	// bucketLeases holds a lease by its NFTokenID.
	bucketLeases = []byte("leases")
	// bucketReplies holds a reply by its idempotency key.
	bucketReplies = []byte("replies")
	allBuckets    = [][]byte{bucketMeta, bucketLeases, bucketReplies}

	// keyLastLedger: the last ledger whose transactions Events processed.
	keyLastLedger = []byte("last_ledger")
)

// lease is a lease sold: the NFT, and the tenant who bought it.
type lease struct {
	NFT string `json:"nft"`
	// Account is the tenant's account: replies go there.
	Account string `json:"account"`
	// TenantKey is the tenant's message key (hex): replies are sealed to it.
	TenantKey string `json:"tenant_key"`
	// Acquire is the hash of the acquiring transaction.
	Acquire string `json:"acquire"`
	// Ledger is the ledger of the acquire; Expires the last ledger of the
	// lease.
	Ledger  uint32 `json:"ledger"`
	Expires uint32 `json:"expires"`
	// Paid is the price the tenant paid, in drops: what a refund returns.
	Paid uint64 `json:"paid,omitempty"`
	// Changed is the position of the last extend or terminate applied: one
	// at or before it is a replay, applied already.
	Changed string `json:"changed,omitempty"`
	// Ended is set when the lease ended before its last ledger: its
	// acquire was refused (and refunded), or it was terminated. Its NFT is
	// burned and its slot offered again, as at expiry.
	Ended bool `json:"ended,omitempty"`
	// Refund, when set, is why the plugin itself refused the acquire (its
	// memo is garbage, missing, or sealed to another key): the host loop
	// answers it with an error reply that refunds Paid.
	Refund string `json:"refund,omitempty"`
	// Burned is set once the host burned the NFT of the ended lease.
	Burned bool `json:"burned,omitempty"`
}

// over reports whether the lease is over at validated ledger v: ended,
// or expired (v is past its last ledger).
func (l lease) over(v uint32) bool { return l.Ended || l.Expires < v }

// reply is a reply made, by idempotency key: its signed blob is stored
// before it is submitted, so that a retry submits the same transaction.
type reply struct {
	Blob       string `json:"blob"`
	Hash       string `json:"hash"`
	LastLedger uint32 `json:"last_ledger"`
	// Result is the validated result, once known.
	Result string `json:"result,omitempty"`
}

func getJSON(db *bbolt.DB, bucket, key []byte, v any) (bool, error) {
	var raw []byte
	err := db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucket).Get(key); b != nil {
			raw = append(raw, b...)
		}
		return nil
	})
	if err != nil || raw == nil {
		return false, err
	}
	return true, json.Unmarshal(raw, v)
}

func putJSON(db *bbolt.DB, bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return db.Update(func(tx *bbolt.Tx) error { return tx.Bucket(bucket).Put(key, raw) })
}

// updateLease changes the lease of nft in one transaction: fn gets the
// stored lease (found false: none) and says whether to store it changed.
func updateLease(db *bbolt.DB, nft string, fn func(l *lease, found bool) bool) error {
	return db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		var l lease
		raw := b.Get([]byte(nft))
		if raw != nil {
			if err := json.Unmarshal(raw, &l); err != nil {
				return err
			}
		}
		if !fn(&l, raw != nil) {
			return nil
		}
		out, err := json.Marshal(l)
		if err != nil {
			return err
		}
		return b.Put([]byte(nft), out)
	})
}

func putLastLedger(db *bbolt.DB, l uint32) error {
	return db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyLastLedger, binary.BigEndian.AppendUint32(nil, l))
	})
}

func getLastLedger(db *bbolt.DB) (l uint32) {
	_ = db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(bucketMeta).Get(keyLastLedger); len(b) == 4 {
			l = binary.BigEndian.Uint32(b)
		}
		return nil
	})
	return l
}

// leases returns every lease sold.
func leases(db *bbolt.DB) ([]lease, error) {
	var out []lease
	err := db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketLeases).ForEach(func(_, v []byte) error {
			var l lease
			if err := json.Unmarshal(v, &l); err != nil {
				return err
			}
			out = append(out, l)
			return nil
		})
	})
	return out, err
}

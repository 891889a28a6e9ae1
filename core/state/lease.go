package state

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	// bucketSources holds each desired-state source's cursor, by source
	// name ("lease:xrpl").
	bucketSources = []byte("sources")
	// bucketLeases holds the leases a ledger source has accepted, by
	// lease ID.
	bucketLeases = []byte("leases")
)

// Lease is the record of a lease a ledger source accepted: what the tenant
// asked for, until when, and the reply it was given. The tenant it made is
// owned by "lease:" and the lease's ID.
type Lease struct {
	// ID identifies the lease (for xrpl, the NFT's ID).
	ID string
	// Ledger is the ledger plugin's name.
	Ledger string
	// Tenant is the tenant name the ledger derived from the lease.
	Tenant string
	// Event is the ID of the acquire event.
	Event string
	// Spec is the tenant spec (HCL) of the acquire.
	Spec      []byte
	ExpiresAt time.Time
	// ExpiresLedger, when not 0, is the lease's last ledger in its
	// ledger's own clock: the lease expires when the ledger's progress
	// passes it, and ExpiresAt is only an estimate.
	ExpiresLedger uint64 `json:",omitempty"`
	// Reply is the answer to the acquire, recorded before it is sent,
	// so that a retry sends the same answer; nil before it is decided.
	Reply *LeaseReply `json:",omitempty"`
	// Ended is set once the lease was terminated or expired: its tenant
	// is destroyed, and the record is deleted once it is gone.
	Ended bool `json:",omitempty"`
}

// LeaseReply is a recorded answer to a lease event.
type LeaseReply struct {
	OK      bool
	Message string
	Payload []byte `json:",omitempty"`
}

// Cursor returns the stored cursor of a source, "" when none is stored.
func (s *Store) Cursor(source string) (string, error) {
	var c string
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketSources); b != nil {
			c = string(b.Get([]byte(source)))
		}
		return nil
	})
	return c, err
}

// PutCursor stores the cursor of a source, durably.
func (s *Store) PutCursor(source, cursor string) error {
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketSources).Put([]byte(source), []byte(cursor))
	}); err != nil {
		return fmt.Errorf("store the cursor of %s: %w", source, err)
	}
	return nil
}

// Leases returns the lease records.
func (s *Store) Leases() ([]Lease, error) {
	var out []Lease
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, data []byte) error {
			var l Lease
			if err := json.Unmarshal(data, &l); err != nil {
				return fmt.Errorf("decode %s %s: %w", bucketLeases, k, err)
			}
			out = append(out, l)
			return nil
		})
	})
	return out, err
}

// Lease returns the record of lease id; ok is false when there is none.
func (s *Store) Lease(id string) (l Lease, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLeases)
		if b == nil {
			return nil
		}
		data := b.Get([]byte(id))
		if data == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(data, &l)
	})
	if err != nil {
		err = fmt.Errorf("read lease %s: %w", id, err)
	}
	return l, ok, err
}

// PutLease writes a lease record, durably.
func (s *Store) PutLease(l Lease) error {
	data, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("encode lease %s: %w", l.ID, err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLeases).Put([]byte(l.ID), data)
	}); err != nil {
		return fmt.Errorf("store lease %s: %w", l.ID, err)
	}
	return nil
}

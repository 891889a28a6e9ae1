// Package state records what Kigumi has made on a host: tenants, instances,
// the plugins' opaque handles, and a journal of every apply step. It lives in
// one bbolt file. Every apply step is written down before and after it runs,
// so an interrupted apply can be resumed without duplicates.
package state

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// SchemaVersion is the version of the records' layout. Version 2 added
// each tenant's Source and each instance's run history; a version 1
// database is upgraded when opened for writing.
const SchemaVersion = 2

var (
	bucketMeta      = []byte("meta")
	bucketTenants   = []byte("tenants")
	bucketInstances = []byte("instances")
	bucketJournal   = []byte("journal")
	keySchema       = []byte("schema")
	// keyRetired holds RetiredIDs: uid (4 bytes), then subordinate id (8
	// bytes), big-endian.
	keyRetired = []byte("retired-ids")
)

// ErrLocked is returned by Open when another process holds the database.
var ErrLocked = errors.New("state database is in use by another kigumi process")

// Phase is where a tenant or instance is in its life.
type Phase string

// The phases. Anything but PhaseReady means an apply was interrupted while
// working on the record.
const (
	PhaseCreating   Phase = "creating"
	PhaseUpdating   Phase = "updating"
	PhaseReady      Phase = "ready"
	PhaseDestroying Phase = "destroying"
)

// Tenant is the record of a tenant.
type Tenant struct {
	Name  string
	Phase Phase
	// Source names the desired-state source that owns the tenant, as
	// "KIND:ID": "file:tenants/alice.hcl" (relative to the host spec's
	// directory) or "lease:ID". Only that kind of source plans over it.
	Source string
	// User is the tenant's Linux identity; zero UID when tenant users are off.
	User   sdk.User
	Cgroup sdk.Cgroup
	// Limits are the tenant's cgroup limits: the sums over its instances.
	Limits sdk.Resources
	// RuntimeHandles are the handles that runtimes returned from
	// PrepareTenant, by runtime name.
	RuntimeHandles map[string]sdk.Handle `json:",omitempty"`
	UpdatedAt      time.Time
}

// InstanceSpec is the canonical form of an instance's desired spec, with
// defaults applied. Two specs are equal when their Hash is.
type InstanceSpec struct {
	Runtime string
	Module  string
	// ModuleDigest is the sha256 of the module's content, so a rebuilt module
	// is a change.
	ModuleDigest string
	Image        string
	// Archive is the path of an OCI image-layout tar.
	Archive     string `json:",omitempty"`
	Digest      string
	Args        []string
	Env         map[string]string
	Resources   sdk.Resources
	StateBytes  int64
	Permissions sdk.Permissions
	// Settings are the runtime-specific settings; absent when none.
	Settings sdk.Config `json:",omitempty"`
	// Restart is the restart policy: "never", "on-failure" or "always".
	Restart string `json:",omitempty"`
	// Mounts are the read-only directories of the artifacts directory the
	// workload sees, Source at Target, in spec order; absent when none.
	Mounts []sdk.Mount `json:",omitempty"`
	// Stdin is the file the workload reads as stdin; absent for none.
	Stdin string `json:",omitempty"`
	// StateGuest is where the workload sees its state; absent in records
	// written before it existed, whose state was at sdk.StateTarget.
	StateGuest string `json:",omitempty"`
	// StateSeed is the directory or tar archive that filled the state
	// when it was made; absent for none.
	StateSeed string `json:",omitempty"`
}

// Instance is the record of an instance.
type Instance struct {
	Tenant string
	Name   string
	Phase  Phase
	// Spec is the spec being applied (Phase creating or updating) or applied.
	Spec     InstanceSpec
	SpecHash string
	// RuntimeHandle and StateHandle are the plugins' handles; nil until made.
	RuntimeHandle *sdk.Handle
	// RuntimeSpecHash is the SpecHash the recorded workload was started
	// with: a workload is adopted only if it runs the spec being applied.
	RuntimeSpecHash string
	StateHandle     *sdk.Handle
	// StateMount is the mount the StateFS returned; zero without state.
	StateMount sdk.Mount
	// SeedPending is set when the state was provisioned under a spec
	// with a seed that has not filled it yet; it is cleared once the seed
	// has, so that no state is seeded twice.
	SeedPending bool `json:",omitempty"`
	RunDir      string
	Cgroup      sdk.Cgroup
	// Run is the workload's run history, which survives agent restarts so
	// that a crash loop keeps its backoff.
	Run RunHistory
	// Held is set while an operator has stopped the instance: it is not
	// restarted until started again.
	Held      bool `json:",omitempty"`
	UpdatedAt time.Time
}

// RunHistory is what happened to an instance's workloads.
type RunHistory struct {
	// StartedAt is when the current (or last) workload started.
	StartedAt time.Time `json:",omitzero"`
	// Restarts counts restarts by the restart policy since the instance
	// was created or its spec last changed.
	Restarts int `json:",omitempty"`
	// Failures counts consecutive failed runs, for the restart backoff; a
	// run that lasts long enough resets it.
	Failures int `json:",omitempty"`
	// LastExit is how the last workload ended, if one did.
	LastExit *Exit `json:",omitempty"`
	// OOMKills is the instance cgroup's OOM kill count when the current
	// workload started: a higher count at its end means it was OOM-killed.
	OOMKills int `json:",omitempty"`
}

// Exit is how a workload ended.
type Exit struct {
	Code int
	// Cause is the runtime's sdk.Cause ("exit", "signal", "oom",
	// "limit", "trap", "killed"), or "lost" when the runtime no longer
	// knows the workload.
	Cause   string
	Message string    `json:",omitempty"`
	At      time.Time `json:",omitzero"`
}

// Exit causes.
const (
	CauseExit   = "exit"
	CauseSignal = "signal"
	CauseOOM    = "oom"
	CauseLimit  = "limit"
)

// SourceKind returns the kind of a source name: "file" of
// "file:tenants/alice.hcl". A record without a source belongs to "file".
func SourceKind(source string) string {
	if source == "" {
		return SourceFile
	}
	kind, _, _ := strings.Cut(source, ":")
	return kind
}

// The source kinds.
const (
	SourceFile  = "file"
	SourceLease = "lease"
)

// Key returns "tenant/name".
func (i Instance) Key() string { return i.Tenant + "/" + i.Name }

// Event is what happened to a step.
type Event string

// The journal events.
const (
	EventBegin  Event = "begin"
	EventDone   Event = "done"
	EventFailed Event = "failed"
)

// Entry is one journal entry.
type Entry struct {
	Seq    uint64
	Time   time.Time
	Target string
	Step   string
	Event  Event
	Error  string `json:",omitempty"`
}

// Store is the state database. It is safe for concurrent use: concurrent
// writers are merged into one transaction (a group commit), and a record
// written again unchanged is not rewritten.
type Store struct {
	db *bolt.DB
	mu sync.Mutex
	// written maps bucket/key to the digest of the record last written or
	// read, without its UpdatedAt.
	written map[string][sha256.Size]byte
	group   groupCommit
}

// Option configures Open.
type Option func(*options)

type options struct {
	readOnly bool
	timeout  time.Duration
}

// WithReadOnly opens the database for reading only, sharing it with other
// readers.
func WithReadOnly() Option { return func(o *options) { o.readOnly = true } }

// WithLockTimeout sets how long Open waits for another process to release
// the database (default 2s).
func WithLockTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// Open opens or creates the database at path.
func Open(path string, opts ...Option) (*Store, error) {
	o := options{timeout: 2 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if o.readOnly {
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open state %s: nothing has been applied on this host yet: %w", path, err)
		}
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.timeout, ReadOnly: o.readOnly})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open state %s: %w", path, ErrLocked)
		}
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	s := &Store{db: db, written: map[string][sha256.Size]byte{}}
	if !o.readOnly {
		if err := s.init(); err != nil {
			db.Close()
			return nil, err
		}
	} else if err := s.checkSchema(); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) init() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketTenants, bucketInstances, bucketJournal, bucketSources, bucketLeases} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("create bucket %s: %w", b, err)
			}
		}
		meta := tx.Bucket(bucketMeta)
		v := meta.Get(keySchema)
		if v == nil {
			return meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, SchemaVersion))
		}
		if len(v) == 4 && binary.BigEndian.Uint32(v) < SchemaVersion {
			return upgrade(tx, binary.BigEndian.Uint32(v))
		}
		return checkVersion(v)
	})
}

// upgrade brings a database of schema from up to SchemaVersion, inside tx.
func upgrade(tx *bolt.Tx, from uint32) error {
	if from < 1 {
		return fmt.Errorf("state database has schema %d, this kigumi upgrades from schema 1", from)
	}
	if from < 2 {
		// Version 1 had one source, the spec directory: its tenants are
		// adopted by the file source; the next file apply names the file.
		b := tx.Bucket(bucketTenants)
		var keys, values [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var t map[string]any
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("upgrade tenant %s: %w", k, err)
			}
			if src, _ := t["Source"].(string); src == "" {
				t["Source"] = SourceFile + ":"
			}
			nv, err := json.Marshal(t)
			keys, values = append(keys, slices.Clone(k)), append(values, nv)
			return err
		})
		if err != nil {
			return err
		}
		for i := range keys {
			if err := b.Put(keys[i], values[i]); err != nil {
				return err
			}
		}
	}
	return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint32(nil, SchemaVersion))
}

func (s *Store) checkSchema() error {
	return s.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("state database is empty")
		}
		// Reading needs no upgrade: a version 1 record reads as one
		// with no source, which belongs to the file source.
		if v := meta.Get(keySchema); len(v) == 4 && binary.BigEndian.Uint32(v) == 1 {
			return nil
		}
		return checkVersion(meta.Get(keySchema))
	})
}

func checkVersion(v []byte) error {
	if len(v) != 4 || binary.BigEndian.Uint32(v) != SchemaVersion {
		return fmt.Errorf("state database has schema %x, this kigumi reads schema %d", v, SchemaVersion)
	}
	return nil
}

// ReadOnly reports whether the database was opened for reading only.
func (s *Store) ReadOnly() bool { return s.db.IsReadOnly() }

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Tenants returns every tenant record, sorted by name.
func (s *Store) Tenants() ([]Tenant, error) { return list[Tenant](s.db, bucketTenants) }

// Tenant returns the record of a tenant; ok is false when there is none.
func (s *Store) Tenant(name string) (t Tenant, ok bool, err error) {
	return get[Tenant](s.db, bucketTenants, name)
}

// PutTenant writes a tenant record, unless it is unchanged.
func (s *Store) PutTenant(t Tenant) error {
	op, err := PutTenantOp(t)
	if err != nil {
		return err
	}
	return s.Commit(op)
}

// DeleteTenant removes a tenant record. A tenant with its own user (a
// subordinate id range) retires its ids in the same transaction: see
// RetiredIDs.
func (s *Store) DeleteTenant(name string) error {
	s.forget(string(bucketTenants) + "/" + name)
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTenants)
		data := b.Get([]byte(name))
		if data == nil {
			return nil
		}
		var t Tenant
		if err := json.Unmarshal(data, &t); err != nil {
			return err
		}
		if t.User.Count > 0 {
			meta := tx.Bucket(bucketMeta)
			r, err := retired(meta)
			if err != nil {
				return err
			}
			r.UID = max(r.UID, t.User.UID+1)
			r.SubID = max(r.SubID, uint64(t.User.SubUID)+uint64(t.User.Count), uint64(t.User.SubGID)+uint64(t.User.Count))
			v := binary.BigEndian.AppendUint32(nil, r.UID)
			if err := meta.Put(keyRetired, binary.BigEndian.AppendUint64(v, r.SubID)); err != nil {
				return err
			}
		}
		return b.Delete([]byte(name))
	})
	if err != nil {
		return fmt.Errorf("delete %s %s: %w", bucketTenants, name, err)
	}
	return nil
}

// RetiredIDs are the ids a new tenant must not get. A destroyed tenant's
// files may still exist (in backups, or on a volume whose removal failed),
// so its uid and subordinate ids are never handed out again: a new tenant
// gets a uid at or above UID and subordinate ids at or above SubID. Both are
// high-water marks over every tenant with its own user that was ever
// deleted from this database.
type RetiredIDs struct {
	UID   uint32
	SubID uint64
}

// RetiredIDs returns the ids no new tenant may get.
func (s *Store) RetiredIDs() (RetiredIDs, error) {
	var r RetiredIDs
	err := s.db.View(func(tx *bolt.Tx) (err error) {
		r, err = retired(tx.Bucket(bucketMeta))
		return err
	})
	return r, err
}

func retired(meta *bolt.Bucket) (RetiredIDs, error) {
	v := meta.Get(keyRetired)
	if v == nil {
		return RetiredIDs{}, nil
	}
	if len(v) != 12 {
		return RetiredIDs{}, fmt.Errorf("retired ids: %d bytes, want 12", len(v))
	}
	return RetiredIDs{UID: binary.BigEndian.Uint32(v), SubID: binary.BigEndian.Uint64(v[4:])}, nil
}

// Instances returns every instance record, sorted by tenant and name.
func (s *Store) Instances() ([]Instance, error) { return list[Instance](s.db, bucketInstances) }

// TenantInstances returns the instance records of one tenant, sorted by
// name. It reads only those records.
func (s *Store) TenantInstances(tenant string) ([]Instance, error) {
	var out []Instance
	prefix := []byte(tenant + "/")
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketInstances).Cursor()
		for k, data := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, data = c.Next() {
			var v Instance
			if err := json.Unmarshal(data, &v); err != nil {
				return fmt.Errorf("decode %s %s: %w", bucketInstances, k, err)
			}
			out = append(out, v)
		}
		return nil
	})
	return out, err
}

// Instance returns the record of an instance; ok is false when there is none.
func (s *Store) Instance(tenant, name string) (i Instance, ok bool, err error) {
	return get[Instance](s.db, bucketInstances, tenant+"/"+name)
}

// PutInstance writes an instance record, unless it is unchanged.
func (s *Store) PutInstance(i Instance) error {
	op, err := PutInstanceOp(i)
	if err != nil {
		return err
	}
	return s.Commit(op)
}

// DeleteInstance removes an instance record.
func (s *Store) DeleteInstance(tenant, name string) error {
	return s.Commit(DeleteInstanceOp(tenant, name))
}

// Record appends a journal entry for step of target. A non-nil stepErr is
// recorded as the entry's error.
func (s *Store) Record(target, step string, ev Event, stepErr error) error {
	return s.Commit(RecordOp(target, step, ev, stepErr))
}

// Op is one write of a Commit: a record written or deleted, or a journal
// entry appended.
type Op struct {
	bucket []byte
	key    string
	// data is the record, stamped; sum the digest of the record without
	// its stamp, to skip a write of an unchanged record.
	data []byte
	sum  [sha256.Size]byte
	del  bool
	// entry is the journal entry to append, when not nil.
	entry *Entry
}

// PutTenantOp is the write of a tenant record, skipped if unchanged.
func PutTenantOp(t Tenant) (Op, error) {
	t.UpdatedAt = time.Time{}
	return putOp(bucketTenants, t.Name, t, func(at time.Time) any { t.UpdatedAt = at; return t })
}

// PutInstanceOp is the write of an instance record, skipped if unchanged.
func PutInstanceOp(i Instance) (Op, error) {
	i.UpdatedAt = time.Time{}
	return putOp(bucketInstances, i.Key(), i, func(at time.Time) any { i.UpdatedAt = at; return i })
}

// DeleteInstanceOp is the removal of an instance record.
func DeleteInstanceOp(tenant, name string) Op {
	return Op{bucket: bucketInstances, key: tenant + "/" + name, del: true}
}

// RecordOp is a journal entry for step of target. A non-nil stepErr is
// recorded as the entry's error.
func RecordOp(target, step string, ev Event, stepErr error) Op {
	e := &Entry{Time: time.Now().UTC(), Target: target, Step: step, Event: ev}
	if stepErr != nil {
		e.Error = stepErr.Error()
	}
	return Op{bucket: bucketJournal, entry: e}
}

// putOp encodes v (with a zero UpdatedAt) for key, stamped by stamp.
func putOp(bucket []byte, key string, v any, stamp func(time.Time) any) (Op, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return Op{}, fmt.Errorf("encode %s %s: %w", bucket, key, err)
	}
	data, err := json.Marshal(stamp(time.Now().UTC()))
	if err != nil {
		return Op{}, fmt.Errorf("encode %s %s: %w", bucket, key, err)
	}
	return Op{bucket: bucket, key: key, data: data, sum: sha256.Sum256(plain)}, nil
}

// Commit writes ops, in order, in one transaction: all of them are on disk
// when it returns nil, and none of them when the transaction fails. A
// record written unchanged is left alone. Concurrent commits are merged
// into one transaction (groupCommit): each caller still returns only once
// its writes are on disk.
func (s *Store) Commit(ops ...Op) error {
	s.mu.Lock()
	todo := make([]Op, 0, len(ops))
	for _, op := range ops {
		id := string(op.bucket) + "/" + op.key
		switch {
		case op.entry != nil:
		case op.del:
			delete(s.written, id)
		case s.written[id] == op.sum:
			continue
		default:
			// A later write of the key in the same commit wins.
			delete(s.written, id)
		}
		todo = append(todo, op)
	}
	s.mu.Unlock()
	if len(todo) == 0 {
		return nil
	}
	if err := s.group.commit(s.db, todo); err != nil {
		return err
	}
	s.mu.Lock()
	for _, op := range todo {
		switch id := string(op.bucket) + "/" + op.key; {
		case op.entry != nil:
		case op.del:
			delete(s.written, id)
		default:
			s.written[id] = op.sum
		}
	}
	s.mu.Unlock()
	return nil
}

// groupCommit merges concurrent commits into one transaction, as bbolt's
// Batch does, but without its timer: a commit starts at once when none is
// running, and the commits that arrive while one runs go together in the
// next. A lone writer waits for nothing but its own fsync; many writers
// share each one.
type groupCommit struct {
	mu      sync.Mutex
	waiting []*commitCall
	running bool
}

type commitCall struct {
	ops  []Op
	done chan error
}

// commit writes ops in a transaction, perhaps shared with other commits,
// and returns once they are on disk.
func (g *groupCommit) commit(db *bolt.DB, ops []Op) error {
	c := &commitCall{ops: ops, done: make(chan error, 1)}
	g.mu.Lock()
	g.waiting = append(g.waiting, c)
	if g.running {
		g.mu.Unlock()
		return <-c.done
	}
	g.running = true
	for len(g.waiting) > 0 {
		calls := g.waiting
		g.waiting = nil
		g.mu.Unlock()
		err := db.Update(func(tx *bolt.Tx) error {
			for _, c := range calls {
				if err := writeOps(tx, c.ops); err != nil {
					return err
				}
			}
			return nil
		})
		for _, c := range calls {
			if err != nil && len(calls) > 1 {
				// One commit's failure is not the others': each goes
				// again on its own. A failed transaction wrote nothing.
				c.done <- db.Update(func(tx *bolt.Tx) error { return writeOps(tx, c.ops) })
				continue
			}
			c.done <- err
		}
		g.mu.Lock()
	}
	g.running = false
	g.mu.Unlock()
	return <-c.done
}

// writeOps applies ops in tx.
func writeOps(tx *bolt.Tx, ops []Op) error {
	for _, op := range ops {
		b := tx.Bucket(op.bucket)
		var err error
		switch {
		case op.entry != nil:
			err = appendEntry(b, *op.entry)
		case op.del:
			err = b.Delete([]byte(op.key))
		default:
			err = b.Put([]byte(op.key), op.data)
		}
		if err != nil {
			return fmt.Errorf("write %s %s: %w", op.bucket, op.key, err)
		}
	}
	return nil
}

// appendEntry appends e to the journal b, dropping the oldest entry beyond
// JournalKeep.
func appendEntry(b *bolt.Bucket, e Entry) error {
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	e.Seq = seq
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if seq > JournalKeep {
		if err := b.Delete(binary.BigEndian.AppendUint64(nil, seq-JournalKeep)); err != nil {
			return err
		}
	}
	return b.Put(binary.BigEndian.AppendUint64(nil, seq), v)
}

// JournalKeep is how many journal entries the store keeps; older ones are
// dropped as new ones arrive.
const JournalKeep = 10000

// Journal returns the last n journal entries, oldest first (all when n <= 0).
func (s *Store) Journal(n int) ([]Entry, error) {
	var out []Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketJournal).Cursor()
		for k, v := c.Last(); k != nil && (n <= 0 || len(out) < n); k, v = c.Prev() {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decode journal entry: %w", err)
			}
			out = append(out, e)
		}
		return nil
	})
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, err
}

func (s *Store) forget(id string) {
	s.mu.Lock()
	delete(s.written, id)
	s.mu.Unlock()
}

func get[T any](db *bolt.DB, bucket []byte, key string) (v T, ok bool, err error) {
	err = db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucket).Get([]byte(key))
		if data == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(data, &v)
	})
	if err != nil {
		err = fmt.Errorf("read %s %s: %w", bucket, key, err)
	}
	return v, ok, err
}

func list[T any](db *bolt.DB, bucket []byte) ([]T, error) {
	var out []T
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, data []byte) error {
			var v T
			if err := json.Unmarshal(data, &v); err != nil {
				return fmt.Errorf("decode %s %s: %w", bucket, k, err)
			}
			out = append(out, v)
			return nil
		})
	})
	return out, err
}

// Stats are figures about the database.
type Stats struct {
	// JournalEntries is how many journal entries are kept.
	JournalEntries int
	// SizeBytes is the size of the database file.
	SizeBytes int64
}

// Stats returns figures about the database.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	err := s.db.View(func(tx *bolt.Tx) error {
		st.SizeBytes = tx.Size()
		if b := tx.Bucket(bucketJournal); b != nil {
			st.JournalEntries = b.Stats().KeyN
		}
		return nil
	})
	return st, err
}

package state

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kigumi.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestRecords(t *testing.T) {
	s, _ := openTemp(t)
	h := &sdk.Handle{Version: 1, Data: []byte(`{"pid":42}`)}
	for _, i := range []Instance{
		{Tenant: "bob", Name: "a", Phase: PhaseReady},
		{Tenant: "alice", Name: "web", Phase: PhaseCreating, RuntimeHandle: h, Spec: InstanceSpec{Env: map[string]string{"A": "1"}}},
	} {
		if err := s.PutInstance(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutTenant(Tenant{Name: "alice", User: sdk.User{Name: "kg-alice", UID: 61000}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Instances()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Key() != "alice/web" || got[1].Key() != "bob/a" {
		t.Fatalf("Instances() = %+v", got)
	}
	if string(got[0].RuntimeHandle.Data) != `{"pid":42}` || got[0].RuntimeHandle.Version != 1 || got[0].Spec.Env["A"] != "1" {
		t.Errorf("round trip lost data: %+v", got[0])
	}
	tests := []struct {
		tenant, name string
		ok           bool
	}{{"alice", "web", true}, {"alice", "nope", false}}
	for _, tt := range tests {
		if _, ok, err := s.Instance(tt.tenant, tt.name); err != nil || ok != tt.ok {
			t.Errorf("Instance(%s/%s) = %v, %v", tt.tenant, tt.name, ok, err)
		}
	}
	if ten, ok, err := s.Tenant("alice"); err != nil || !ok || ten.User.UID != 61000 {
		t.Errorf("Tenant(alice) = %+v %v %v", ten, ok, err)
	}
	if err := s.DeleteInstance("alice", "web"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTenant("alice"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Instance("alice", "web"); ok {
		t.Error("instance still there after delete")
	}
	if _, ok, _ := s.Tenant("alice"); ok {
		t.Error("tenant still there after delete")
	}
}

func TestJournal(t *testing.T) {
	s, _ := openTemp(t)
	steps := []struct {
		step string
		ev   Event
		err  error
	}{{"runtime.start", EventBegin, nil}, {"runtime.start", EventFailed, errors.New("boom")}, {"rollback", EventDone, nil}}
	for _, st := range steps {
		if err := s.Record("instance a/b", st.step, st.ev, st.err); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.Journal(0)
	if err != nil || len(all) != 3 {
		t.Fatalf("Journal(0) = %d entries, %v", len(all), err)
	}
	if all[0].Seq >= all[1].Seq || all[1].Error != "boom" || all[2].Step != "rollback" {
		t.Errorf("journal order or content wrong: %+v", all)
	}
	if st, err := s.Stats(); err != nil || st.JournalEntries != 3 || st.SizeBytes <= 0 {
		t.Errorf("Stats() = %+v, %v", st, err)
	}
	for range JournalKeep {
		if err := s.Record("instance a/b", "filler", EventDone, nil); err != nil {
			t.Fatal(err)
		}
	}
	if kept, _ := s.Journal(0); len(kept) != JournalKeep || kept[0].Seq != 4 {
		t.Fatalf("journal keeps %d entries from seq %d, want %d from 4", len(kept), kept[0].Seq, JournalKeep)
	}
	if st, err := s.Stats(); err != nil || st.JournalEntries != JournalKeep {
		t.Errorf("Stats() = %+v, %v; want %d journal entries", st, err, JournalKeep)
	}
	if err := s.Record("instance a/b", "rollback", EventDone, nil); err != nil {
		t.Fatal(err)
	}
	last, _ := s.Journal(1)
	if len(last) != 1 || last[0].Step != "rollback" {
		t.Errorf("Journal(1) = %+v", last)
	}
}

func TestOpen(t *testing.T) {
	s, path := openTemp(t)
	tests := []struct {
		name string
		path string
		opts []Option
		want error
	}{
		{"second writer is locked out", path, []Option{WithLockTimeout(50 * time.Millisecond)}, ErrLocked},
		{"read-only of nothing", filepath.Join(t.TempDir(), "none.db"), []Option{WithReadOnly()}, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(tt.path, tt.opts...)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	s.Close()
	ro, err := Open(path, WithReadOnly())
	if err != nil {
		t.Fatalf("read-only open after close: %v", err)
	}
	ro.Close()
}

func TestHash(t *testing.T) {
	a := InstanceSpec{Runtime: "wasm", Env: map[string]string{"A": "1", "B": "2"}}
	b := InstanceSpec{Runtime: "wasm", Env: map[string]string{"B": "2", "A": "1"}}
	c := InstanceSpec{Runtime: "wasm", Env: map[string]string{"A": "1"}}
	if a.Hash() != b.Hash() {
		t.Error("equal specs hash differently")
	}
	if a.Hash() == c.Hash() {
		t.Error("different specs hash equally")
	}
}

// TestUpgradeFromSchema1 opens a database written by schema 1: its tenants
// have no source, and are adopted by the file source.
func TestUpgradeFromSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kigumi.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketTenants, bucketInstances, bucketJournal} {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint32(nil, 1)); err != nil {
			return err
		}
		return tx.Bucket(bucketTenants).Put([]byte("alice"),
			[]byte(`{"Name":"alice","Phase":"ready","User":{"Name":"kg-alice","UID":61000},"Limits":{"MemoryBytes":1}}`))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	// Read-only opening reads schema 1 as it is.
	ro, err := Open(path, WithReadOnly())
	if err != nil {
		t.Fatal(err)
	}
	if ten, _, _ := ro.Tenant("alice"); SourceKind(ten.Source) != SourceFile {
		t.Errorf("read-only: source %q is not the file source", ten.Source)
	}
	ro.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ten, ok, err := s.Tenant("alice")
	if err != nil || !ok || ten.Source != "file:" || ten.User.UID != 61000 || ten.Limits.MemoryBytes != 1 {
		t.Fatalf("upgraded tenant = %+v, %v, %v", ten, ok, err)
	}
	if err := s.db.View(func(tx *bolt.Tx) error { return checkVersion(tx.Bucket(bucketMeta).Get(keySchema)) }); err != nil {
		t.Fatal(err)
	}
}

func TestSourceKind(t *testing.T) {
	for _, tt := range []struct{ source, kind string }{
		{"", SourceFile}, {"file:", SourceFile}, {"file:tenants/a.hcl", SourceFile}, {"lease:42", SourceLease}, {"lease", SourceLease},
	} {
		if got := SourceKind(tt.source); got != tt.kind {
			t.Errorf("SourceKind(%q) = %q, want %q", tt.source, got, tt.kind)
		}
	}
}

// TestPutSkipsUnchanged writes a record twice unchanged: the second write
// leaves it (and its UpdatedAt) alone; a change is written.
func TestPutSkipsUnchanged(t *testing.T) {
	s, _ := openTemp(t)
	rec := Tenant{Name: "alice", Phase: PhaseReady}
	if err := s.PutTenant(rec); err != nil {
		t.Fatal(err)
	}
	first, _, _ := s.Tenant("alice")
	if err := s.PutTenant(rec); err != nil {
		t.Fatal(err)
	}
	if again, _, _ := s.Tenant("alice"); !again.UpdatedAt.Equal(first.UpdatedAt) {
		t.Error("an unchanged record was rewritten")
	}
	rec.Phase = PhaseDestroying
	if err := s.PutTenant(rec); err != nil {
		t.Fatal(err)
	}
	if changed, _, _ := s.Tenant("alice"); changed.Phase != PhaseDestroying {
		t.Error("a changed record was not written")
	}
	// Deleting forgets it: writing it again writes.
	if err := s.DeleteTenant("alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTenant(rec); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Tenant("alice"); !ok {
		t.Error("a record written after its delete is missing")
	}
}

// golden is a spec whose hash must never change: a changed hash makes
// every instance on every host plan an update after an upgrade.
var golden = InstanceSpec{
	Runtime:      "wasm",
	Module:       "/srv/app.wasm",
	ModuleDigest: "sha256:" + strings.Repeat("ab", 32),
	Args:         []string{"--port", "8080"},
	Env:          map[string]string{"MODE": "prod", "LEVEL": "2"},
	Resources:    sdk.Resources{MemoryBytes: 64 << 20, MilliCPU: 250, DiskBytes: 64 << 20, Pids: 32},
	StateBytes:   16 << 20,
	Permissions:  sdk.Permissions{{Name: sdk.PermStateWrite}, {Name: sdk.PermClock}},
}

const goldenHash = "0c65a8bf02674460a326b29ee4af6eec22333fca5f99d12cf489f98f0860b024"

func TestHashGolden(t *testing.T) {
	if got := golden.Hash(); got != goldenHash {
		t.Errorf("golden spec hash = %s, want %s", got, goldenHash)
	}
}

func TestHashIgnoresDefaults(t *testing.T) {
	// A new field at its default leaves every hash as it was, wherever
	// it goes in the list.
	for _, extra := range []specField{
		{"restart", "never", "never"},
		{"a_list", []string{}, []string(nil)},
		{"z_limit", int64(5), int64(5)},
		{"m_map", map[string]string{}, map[string]string(nil)},
	} {
		for _, s := range []InstanceSpec{golden, {}, {Runtime: "wasm"}} {
			fields := append(s.fields(), extra)
			if got := hashFields(fields); got != s.Hash() {
				t.Errorf("spec %+v with %s at its default hashes to %s, want %s", s, extra.name, got, s.Hash())
			}
			set := extra
			set.value = "set"
			if hashFields(append(s.fields(), set)) == s.Hash() {
				t.Errorf("spec %+v with %s set hashes as without it", s, extra.name)
			}
		}
	}
	// A record written before restart policies existed has the default.
	if (InstanceSpec{Runtime: "wasm", Restart: DefaultRestart}).Hash() != (InstanceSpec{Runtime: "wasm"}).Hash() {
		t.Error("the default restart policy changes the hash")
	}
	if (InstanceSpec{Runtime: "wasm", Restart: "always"}).Hash() == (InstanceSpec{Runtime: "wasm"}).Hash() {
		t.Error("a restart policy other than the default does not change the hash")
	}
	// Empty and nil collections are the same spec, as after a JSON round trip.
	a := InstanceSpec{Runtime: "wasm", Args: []string{}, Env: map[string]string{}, Permissions: sdk.Permissions{}, Settings: sdk.Config{}}
	if a.Hash() != (InstanceSpec{Runtime: "wasm"}).Hash() {
		t.Error("empty and nil collections hash differently")
	}
}

func TestHashDistinguishes(t *testing.T) {
	variants := []InstanceSpec{
		{}, {Runtime: "wasm"}, {Module: "wasm"}, {Args: []string{"a", "b"}}, {Args: []string{"ab"}},
		{Args: []string{"b", "a"}}, {Env: map[string]string{"a": "b"}}, {Env: map[string]string{"ab": ""}},
		{StateBytes: 1}, {Resources: sdk.Resources{Pids: 1}}, {Resources: sdk.Resources{DiskBytes: 1}},
		{Permissions: sdk.Permissions{{Name: sdk.PermClock}}},
		{Permissions: sdk.Permissions{{Name: "net", Params: map[string]string{"host": "a"}}}},
		{Permissions: sdk.Permissions{{Name: "net", Params: map[string]string{"host": "b"}}}},
		{Settings: sdk.Config{"ports": []string{"80"}}},
		{Settings: sdk.Config{"ports": []string{"8080"}}},
		{Settings: sdk.Config{"user": sdk.Config{"uid": 1.0}}},
	}
	seen := map[string]int{}
	for i, v := range variants {
		if j, dup := seen[v.Hash()]; dup {
			t.Errorf("specs %d and %d hash equally: %+v, %+v", j, i, variants[j], v)
		}
		seen[v.Hash()] = i
	}
	perm := golden
	perm.Permissions = sdk.Permissions{{Name: sdk.PermClock}, {Name: sdk.PermStateWrite}}
	if perm.Hash() != golden.Hash() {
		t.Error("the order of permissions changes the hash")
	}
}

func TestRetiredIDs(t *testing.T) {
	user := func(uid, sub, count uint32) sdk.User {
		return sdk.User{UID: uid, GID: uid, SubUID: sub, SubGID: sub, Count: count}
	}
	tests := []struct {
		name string
		// deleted are the tenants' users, deleted in order.
		deleted []sdk.User
		want    RetiredIDs
	}{
		{name: "none", want: RetiredIDs{}},
		{name: "one", deleted: []sdk.User{user(61000, 1<<30, 65536)}, want: RetiredIDs{61001, 1<<30 + 65536}},
		{
			name:    "the highest stays",
			deleted: []sdk.User{user(61005, 1<<30+5*65536, 65536), user(61000, 1<<30, 65536)},
			want:    RetiredIDs{61006, 1<<30 + 6*65536},
		},
		{name: "the last range of the id space", deleted: []sdk.User{user(61000, 1<<32-65536, 65536)}, want: RetiredIDs{61001, 1 << 32}},
		{name: "a shared user is not the tenant's to retire", deleted: []sdk.User{user(65534, 0, 0)}, want: RetiredIDs{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, path := openTemp(t)
			for i, u := range tt.deleted {
				name := string(rune('a' + i))
				if err := s.PutTenant(Tenant{Name: name, User: u}); err != nil {
					t.Fatal(err)
				}
				if err := s.DeleteTenant(name); err != nil {
					t.Fatal(err)
				}
			}
			// Deleting a tenant that is not there changes nothing.
			if err := s.DeleteTenant("ghost"); err != nil {
				t.Fatal(err)
			}
			if got, err := s.RetiredIDs(); err != nil || got != tt.want {
				t.Errorf("RetiredIDs() = %+v, %v; want %+v", got, err, tt.want)
			}
			// They survive reopening the database.
			s.Close()
			s2, err := Open(path, WithReadOnly())
			if err != nil {
				t.Fatal(err)
			}
			defer s2.Close()
			if got, err := s2.RetiredIDs(); err != nil || got != tt.want {
				t.Errorf("after reopening, RetiredIDs() = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// TestCommit: a commit's writes land together and in order, a record
// deleted and written again in one commit is written again later, and
// concurrent commits are all on disk, each journal entry with its own
// sequence.
func TestCommit(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "kigumi.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec := Instance{Tenant: "cm", Name: "web", Phase: PhaseReady}
	put, err := PutInstanceOp(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(put, DeleteInstanceOp("cm", "web"), RecordOp("instance cm/web", "x", EventDone, nil)); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Instance("cm", "web"); ok {
		t.Fatal("the delete after the put in one commit did not win")
	}
	// The same record again is written: the delete forgot its digest.
	if err := s.PutInstance(rec); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Instance("cm", "web"); !ok {
		t.Fatal("a record written again after its delete is missing")
	}
	const writers = 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, err := PutInstanceOp(Instance{Tenant: "cm", Name: fmt.Sprintf("i%02d", i)})
			if err == nil {
				err = s.Commit(RecordOp("instance", "step", EventBegin, nil), op)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	is, err := s.TenantInstances("cm")
	if err != nil || len(is) != writers+1 {
		t.Fatalf("instances of cm: %d, %v; want %d", len(is), err, writers+1)
	}
	j, err := s.Journal(0)
	if err != nil || len(j) != writers+1 {
		t.Fatalf("journal: %d entries, %v; want %d", len(j), err, writers+1)
	}
	for i, e := range j {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has sequence %d", i, e.Seq)
		}
	}
}

// TestLeasesAndCursors: a source's cursor and the lease records survive a
// reopen.
func TestLeasesAndCursors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kigumi.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := s.Cursor("ledger:x"); err != nil || c != "" {
		t.Fatalf("cursor %q, %v; want none", c, err)
	}
	l := Lease{ID: "N1", Ledger: "x", Tenant: "l-1", Event: "E1", Spec: []byte("tenant"), Reply: &LeaseReply{OK: true, Message: "ok"}}
	if err := s.PutLease(l); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCursor("ledger:x", "7.1"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if c, err := s.Cursor("ledger:x"); err != nil || c != "7.1" {
		t.Errorf("cursor %q, %v; want 7.1", c, err)
	}
	got, ok, err := s.Lease("N1")
	if err != nil || !ok || got.Tenant != "l-1" || got.Reply == nil || !got.Reply.OK {
		t.Errorf("lease %+v, %v, %v", got, ok, err)
	}
	if ls, err := s.Leases(); err != nil || len(ls) != 1 {
		t.Errorf("leases %+v, %v; want one", ls, err)
	}
}

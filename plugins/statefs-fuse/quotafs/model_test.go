package quotafs

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/plugins/statefs-fuse/merkle"
)

// The randomised model test applies one random sequence of operations to a
// quotafs mount and to a plain directory (the reference model), comparing
// every result, and the whole trees at checkpoints and at the end.
// KIGUMI_MODEL_SEED reproduces a run; KIGUMI_MODEL_OPS sets the number of
// operations (modelOps by default) for a longer run.
const (
	envModelSeed = "KIGUMI_MODEL_SEED"
	envModelOps  = "KIGUMI_MODEL_OPS"
	modelOps     = 20000
	// The quotas are small, so that the sequence keeps hitting them.
	modelMaxBytes   = 1 << 20
	modelMaxEntries = 60
	// modelWriters write their own files at once in the concurrent phase.
	modelWriters = 4
)

// modelTrace (KIGUMI_MODEL_TRACE set) logs every operation and compares
// the trees after each, to find the first that goes wrong.
var modelTrace = os.Getenv("KIGUMI_MODEL_TRACE") != ""

// model is the pair of trees under test: the quotafs mount and the
// reference directory.
type model struct {
	t       *testing.T
	m       mounted
	ref     string
	rng     *rand.Rand
	op      int
	enospcs int
}

// outcome is what an operation returned: an errno name ("ok"), and a count
// or data when it has them.
type outcome struct {
	errno string
	n     int
	data  []byte
}

func (o outcome) String() string {
	if o.data != nil {
		return fmt.Sprintf("%s n=%d data=%d bytes %x", o.errno, o.n, len(o.data), o.data[:min(len(o.data), 16)])
	}
	return fmt.Sprintf("%s n=%d", o.errno, o.n)
}

func errOutcome(err error) outcome { return outcome{errno: result(err)} }

// The namespace is small, so that operations collide: five parents and a
// few leaf names, some of them also used as directories.
var (
	modelParents = []string{"", "a", "b", "a/c", "b/d"}
	modelLeaves  = []string{"f0", "f1", "f2", "f3", "a", "b", "c", "d", "l0"}
	modelModes   = []uint32{0o644, 0o600, 0o755, 0o700, 0o4755, 0o2755, 0o444, 0o1777}
)

func (md *model) path() string {
	p := modelParents[md.rng.IntN(len(modelParents))]
	return filepath.Join(p, modelLeaves[md.rng.IntN(len(modelLeaves))])
}

// payload returns n deterministic pseudo-random bytes.
func (md *model) payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(md.rng.Uint32())
	}
	return b
}

// usageOf counts a tree as quotafs accounts it: the bytes each inode is
// charged, once per inode, and every name below the top.
func usageOf(root string) (bytes, entries int64, err error) {
	seen := map[uint64]bool{}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		entries++
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if !seen[st.Ino] {
			seen[st.Ino] = true
			bytes += charge(&st)
		}
		return nil
	})
	return bytes, entries, err
}

func (md *model) usage() (int64, int64) {
	b, e, err := usageOf(md.ref)
	if err != nil {
		md.t.Fatal(err)
	}
	return b, e
}

// contentOf returns the content of the regular file open as fd.
func contentOf(fd int) []byte {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	b := make([]byte, st.Size)
	n, _ := unix.Pread(fd, b, 0)
	return b[:max(n, 0)]
}

// restore puts back the content and size of the file open as fd, keeping
// its inode (and so its hard links).
func restore(fd int, content []byte) error {
	if err := unix.Ftruncate(fd, int64(len(content))); err != nil {
		return err
	}
	_, err := unix.Pwrite(fd, content, 0)
	return err
}

// same fails the test unless both outcomes are equal.
func (md *model) same(what string, got, want outcome) {
	md.t.Helper()
	if modelTrace {
		md.t.Logf("op %d %s: %v", md.op, what, got)
	}
	if got.errno != want.errno || got.n != want.n || !bytes.Equal(got.data, want.data) {
		md.t.Fatalf("op %d %s: quotafs %v, model %v", md.op, what, got, want)
	}
}

// both runs do on the mount and on the reference and compares.
func (md *model) both(what string, do func(root string) outcome) {
	md.t.Helper()
	md.same(what, do(md.m.mnt), do(md.ref))
}

// step does one random operation.
func (md *model) step() {
	md.t.Helper()
	p := md.path()
	switch k := md.rng.IntN(100); {
	case k < 25:
		md.write(p)
	case k < 40:
		size, off := md.rngFixed(256<<10), int64(md.rngFixed(512<<10))
		md.both(fmt.Sprintf("read %s at %d, %d bytes", p, off, size), func(root string) outcome {
			f, err := os.Open(filepath.Join(root, p))
			if err != nil {
				return errOutcome(err)
			}
			defer f.Close()
			buf := make([]byte, size)
			n, err := unix.Pread(int(f.Fd()), buf, off)
			if err != nil {
				return errOutcome(err)
			}
			return outcome{errno: "ok", n: n, data: buf[:n]}
		})
	case k < 48:
		md.resize("truncate", p, 0, int64(md.rng.IntN(400<<10)))
	case k < 53:
		md.resize("fallocate", p, int64(md.rng.IntN(300<<10)), int64(1+md.rng.IntN(200<<10)))
	case k < 60:
		q := md.path()
		flags := uint(0)
		if md.rng.IntN(8) == 0 {
			flags = unix.RENAME_EXCHANGE
		}
		md.both(fmt.Sprintf("rename %s %s %d", p, q, flags), func(root string) outcome {
			return errOutcome(unix.Renameat2(unix.AT_FDCWD, filepath.Join(root, p), unix.AT_FDCWD, filepath.Join(root, q), flags))
		})
	case k < 66:
		md.both("unlink "+p, func(root string) outcome { return errOutcome(unix.Unlink(filepath.Join(root, p))) })
	case k < 70:
		md.both("rmdir "+p, func(root string) outcome { return errOutcome(unix.Rmdir(filepath.Join(root, p))) })
	case k < 78:
		md.grow("mkdir "+p, p, func(root string) error { return unix.Mkdir(filepath.Join(root, p), 0o755) })
	case k < 83:
		q := md.path()
		md.grow("link "+p+" "+q, q, func(root string) error { return unix.Link(filepath.Join(root, p), filepath.Join(root, q)) })
	case k < 88:
		// Targets stay in the link's directory: no ".." and no "/".
		target := modelLeaves[md.rng.IntN(len(modelLeaves))] + md.tail()
		md.grow("symlink "+target+" "+p, p, func(root string) error {
			return unix.Symlink(target, filepath.Join(root, p))
		})
	case k < 91:
		md.both("readlink "+p, func(root string) outcome {
			buf := make([]byte, 4096)
			n, err := unix.Readlink(filepath.Join(root, p), buf)
			if err != nil {
				return errOutcome(err)
			}
			return outcome{errno: "ok", n: n, data: buf[:n]}
		})
	case k < 95:
		mode := modelModes[md.rng.IntN(len(modelModes))]
		md.both(fmt.Sprintf("chmod %s %o", p, mode), func(root string) outcome { return errOutcome(unix.Chmod(filepath.Join(root, p), mode)) })
	case k < 98:
		md.both("stat "+p, func(root string) outcome {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(root, p), &st); err != nil {
				return errOutcome(err)
			}
			return outcome{errno: "ok", n: int(st.Size), data: []byte(fmt.Sprintf("%o %d", st.Mode, st.Nlink))}
		})
	default:
		md.both("readdir "+p, func(root string) outcome {
			es, err := os.ReadDir(filepath.Join(root, p))
			if err != nil {
				return errOutcome(err)
			}
			var names []byte
			for _, e := range es {
				names = fmt.Appendf(names, "%s/%v ", e.Name(), e.Type())
			}
			return outcome{errno: "ok", n: len(es), data: names}
		})
	}
}

// tail makes some symlink targets long, to weigh on the byte quota.
func (md *model) tail() string {
	if md.rng.IntN(4) == 0 {
		return string(bytes.Repeat([]byte{'x'}, md.rng.IntN(200)))
	}
	return ""
}

// rngFixed returns a size below n, often a round one.
func (md *model) rngFixed(n int) int {
	if md.rng.IntN(2) == 0 {
		return md.rng.IntN(n/4096+1) * 4096
	}
	return md.rng.IntN(n)
}

// grow does an operation that may make a name (p, or, for a create
// through a dangling symlink, its target) on both trees. Where it made a
// new name and the reference then holds more than the quotas allow,
// quotafs must have refused with ENOSPC, and the reference undoes it.
func (md *model) grow(what, p string, do func(root string) error) {
	md.t.Helper()
	before := md.names()
	got := errOutcome(do(md.m.mnt))
	want := errOutcome(do(md.ref))
	if bytes1, entries1 := md.usage(); want.errno == "ok" && entries1 > int64(len(before)) && (entries1 > modelMaxEntries || bytes1 > modelMaxBytes) {
		for name := range md.names() {
			if before[name] {
				continue
			}
			full := filepath.Join(md.ref, name)
			var st unix.Stat_t
			if err := unix.Lstat(full, &st); err != nil {
				md.t.Fatal(err)
			}
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				if err := unix.Rmdir(full); err != nil {
					md.t.Fatal(err)
				}
			} else if err := unix.Unlink(full); err != nil {
				md.t.Fatal(err)
			}
		}
		want = outcome{errno: "ENOSPC"}
		md.enospcs++
	}
	got = afterRelease(got, want, func() outcome { return errOutcome(do(md.m.mnt)) })
	md.same(what, got, want)
}

// afterRelease redoes, for up to 2 s, an operation that quotafs refused
// whole (ENOSPC, nothing done) where the model let it through. The kernel
// sends RELEASE after close has returned, so a file unlinked right after
// its last close may still count for a moment: the same operation must go
// through once that release has arrived (a lasting leak still fails).
func afterRelease(got, want outcome, redo func() outcome) outcome {
	for deadline := time.Now().Add(2 * time.Second); got.errno == "ENOSPC" && got.n == 0 && want.errno == "ok" && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		got = redo()
	}
	return got
}

// names returns the paths below the reference's top.
func (md *model) names() map[string]bool {
	out := map[string]bool{}
	err := filepath.WalkDir(md.ref, func(p string, _ fs.DirEntry, err error) error {
		if err == nil && p != md.ref {
			rel, _ := filepath.Rel(md.ref, p)
			out[rel] = true
		}
		return err
	})
	if err != nil {
		md.t.Fatal(err)
	}
	return out
}

// write opens p (creating it, an entry) and writes to it at a random
// offset: quotafs cuts a write that only partly fits short, and refuses
// one that does not fit at all.
func (md *model) write(p string) {
	md.t.Helper()
	off := int64(md.rngFixed(600 << 10))
	data := md.payload(md.rngFixed(300 << 10))
	fds := [2]int{-1, -1}
	md.grow("create "+p, p, func(root string) error {
		fd, err := unix.Open(filepath.Join(root, p), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err == nil {
			if root == md.m.mnt {
				fds[0] = fd
			} else {
				fds[1] = fd
			}
		}
		return err
	})
	if fds[1] >= 0 && fds[0] < 0 {
		// The reference undid the create (ENOSPC) after opening it.
		unix.Close(fds[1])
		fds[1] = -1
	}
	defer func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	if fds[0] < 0 {
		return
	}
	before := contentOf(fds[1])
	used, _ := md.usage()
	n, err := unix.Pwrite(fds[0], data, off)
	got := outcome{errno: result(err), n: max(n, 0)}
	m, werr := unix.Pwrite(fds[1], data, off)
	want := outcome{errno: result(werr), n: max(m, 0)}
	if werr == nil && len(data) > 0 {
		cur := int64(len(before))
		end := off + int64(len(data))
		if avail := max(modelMaxBytes-used, 0); end > cur && end-cur > avail {
			// quotafs lets the file reach cur+avail bytes.
			if err := restore(fds[1], before); err != nil {
				md.t.Fatal(err)
			}
			want = outcome{errno: "ENOSPC"}
			if fit := cur + avail - off; fit > 0 {
				k, err := unix.Pwrite(fds[1], data[:fit], off)
				if err != nil {
					md.t.Fatal(err)
				}
				want = outcome{errno: "ok", n: k}
			}
			md.enospcs++
		}
	}
	got = afterRelease(got, want, func() outcome {
		n, err := unix.Pwrite(fds[0], data, off)
		return outcome{errno: result(err), n: max(n, 0)}
	})
	// Cut shorter than the model's for the same reason (a released file's
	// bytes not given back yet): the rest of what the model wrote fits
	// once the release has arrived.
	for deadline := time.Now().Add(2 * time.Second); got.errno == "ok" && want.errno == "ok" && got.n < want.n && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		if k, err := unix.Pwrite(fds[0], data[got.n:want.n], off+int64(got.n)); err == nil {
			got.n += k
		}
	}
	md.same(fmt.Sprintf("write %s at %d, %d bytes (file of %d, %d of %d bytes used)", p, off, len(data), len(before), used, modelMaxBytes), got, want)
}

// resize truncates p to size (op "truncate") or allocates [off, off+size)
// (op "fallocate"), on both trees; past the byte quota, quotafs refuses
// with ENOSPC and the reference undoes it.
func (md *model) resize(op, p string, off, size int64) {
	md.t.Helper()
	// The file itself, through symlinks, to undo what quotafs refused.
	fd, err := unix.Open(filepath.Join(md.ref, p), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err == nil {
		defer unix.Close(fd)
	}
	before := contentOf(fd)
	used, _ := md.usage()
	do := func(root string) outcome {
		name := filepath.Join(root, p)
		if op == "truncate" {
			return errOutcome(unix.Truncate(name, size))
		}
		fd, err := unix.Open(name, unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
		if err != nil {
			return errOutcome(err)
		}
		defer unix.Close(fd)
		return errOutcome(unix.Fallocate(fd, 0, off, size))
	}
	got, want := do(md.m.mnt), do(md.ref)
	if want.errno == "ok" {
		cur, end := int64(len(before)), off+size
		if end > cur && end-cur > modelMaxBytes-used {
			if err := restore(fd, before); err != nil {
				md.t.Fatal(err)
			}
			want = outcome{errno: "ENOSPC"}
			md.enospcs++
		}
	}
	got = afterRelease(got, want, func() outcome { return do(md.m.mnt) })
	md.same(fmt.Sprintf("%s %s %d %d", op, p, off, size), got, want)
}

// compareTrees fails unless the mount and the reference hold the same
// names, types, permission bits, link counts, sizes, contents and symlink
// targets.
func (md *model) compareTrees(when string) {
	md.t.Helper()
	walk := func(root string) map[string]string {
		out := map[string]string{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return err
			}
			desc := fmt.Sprintf("%o", st.Mode)
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				desc += fmt.Sprintf(" %d links %d bytes %x", st.Nlink, st.Size, sha256.Sum256(b))
			case unix.S_IFLNK:
				target, err := os.Readlink(p)
				if err != nil {
					return err
				}
				desc += " -> " + target
			}
			out[rel] = desc
			return nil
		})
		if err != nil {
			md.t.Fatalf("%s: walk %s: %v", when, root, err)
		}
		return out
	}
	got, want := walk(md.m.mnt), walk(md.ref)
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range want {
			if !yield(k) {
				return
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok && !yield(k) {
				return
			}
		}
	}) {
		if got[k] != want[k] {
			md.t.Errorf("%s: %s: quotafs %q, model %q", when, k, got[k], want[k])
		}
	}
	if md.t.Failed() {
		md.t.FailNow()
	}
}

// checkRoots checks that the mount's incremental Merkle root equals a fresh
// scan of its backing directory and of the reference, and that its usage
// is what the reference holds.
func (md *model) checkRoots(when string) {
	md.t.Helper()
	root, err := md.m.fs.Root()
	if err != nil {
		md.t.Fatal(err)
	}
	backing, err := merkle.Scan(md.m.backing)
	if err != nil {
		md.t.Fatal(err)
	}
	ref, err := merkle.Scan(md.ref)
	if err != nil {
		md.t.Fatal(err)
	}
	if root != backing || root != ref {
		md.t.Fatalf("%s: incremental root %x, scan of the backing %x, of the reference %x", when, root, backing, ref)
	}
	b, e := md.usage()
	if u := md.m.fs.Usage(); u.Bytes != b || u.Entries != e {
		md.t.Fatalf("%s: quotafs accounts %d bytes, %d entries; the reference holds %d, %d", when, u.Bytes, u.Entries, b, e)
	}
}

// modelRef returns the reference directory, with the mode of the backing
// directory's top.
func modelRef(t *testing.T) string {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestModel is the randomised test against the reference model: a seeded
// sequence of reads, writes, truncates, fallocates, renames (and
// exchanges), unlinks, mkdirs, rmdirs, hard links, symlinks, chmods, stats
// and listings, under quotas small enough to be hit all the time; then
// writers on their own files at once. Every result is compared, the trees
// every 500 operations, and the Merkle root with a fresh scan.
func TestModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(envModelSeed); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s: %v", envModelSeed, err)
		}
	}
	ops := modelOps
	if s := os.Getenv(envModelOps); s != "" {
		var err error
		if ops, err = strconv.Atoi(s); err != nil {
			t.Fatalf("%s: %v", envModelOps, err)
		}
	}
	t.Logf("seed %d (%s=%d reproduces this run), %d operations", seed, envModelSeed, seed, ops)
	md := &model{
		t:   t,
		m:   mountWith(t, Config{UIDs: []uint32{tenant}, MaxBytes: modelMaxBytes, MaxEntries: modelMaxEntries}, nil),
		ref: modelRef(t),
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
	start := time.Now()
	for md.op = 1; md.op <= ops; md.op++ {
		md.step()
		if md.op%500 == 0 || modelTrace {
			md.compareTrees(fmt.Sprintf("after op %d", md.op))
			md.checkRoots(fmt.Sprintf("after op %d", md.op))
		}
	}
	md.compareTrees("at the end")
	md.checkRoots("at the end")
	t.Logf("%d operations in %v, %d of them past a quota", ops, time.Since(start).Round(time.Millisecond), md.enospcs)
	md.concurrent(seed, max(ops/10, 100))
	md.compareTrees("after the concurrent writers")
	md.checkRoots("after the concurrent writers")
}

// concurrent has modelWriters goroutines write, truncate and read files of
// their own directory at once, n operations each, on both trees. Which
// write meets the byte quota depends on how they interleave, so the
// reference does what quotafs did (a short write is written short), and
// reads check that no writer's data was lost or mixed with another's.
func (md *model) concurrent(seed uint64, n int) {
	t := md.t
	// Room for the writers: empty the tree first.
	for _, name := range []string{"a", "b", "f0", "f1", "f2", "f3", "c", "d", "l0"} {
		for _, root := range []string{md.m.mnt, md.ref} {
			if err := os.RemoveAll(filepath.Join(root, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, modelWriters)
	for w := range modelWriters {
		dir := fmt.Sprintf("w%d", w)
		for _, root := range []string{md.m.mnt, md.ref} {
			if err := os.Mkdir(filepath.Join(root, dir), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed+uint64(w)+1, seed))
			for i := range n {
				name := filepath.Join(dir, fmt.Sprintf("f%d", rng.IntN(3)))
				if err := concurrentStep(rng, md.m.mnt, md.ref, name); err != nil {
					errs <- fmt.Errorf("writer %d op %d: %w", w, i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	if u := md.m.fs.Usage(); u.Bytes > modelMaxBytes {
		t.Fatalf("the writers took %d bytes, over the quota of %d", u.Bytes, modelMaxBytes)
	}
}

// concurrentStep does one write, truncate or read of name on mnt, then
// what it did on ref, and compares reads.
func concurrentStep(rng *rand.Rand, mnt, ref, name string) error {
	off := int64(rng.IntN(200 << 10))
	switch k := rng.IntN(10); {
	case k < 6:
		data := make([]byte, rng.IntN(64<<10)+1)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		var n [2]int
		for i, root := range []string{mnt, ref} {
			f, err := os.OpenFile(filepath.Join(root, name), os.O_WRONLY|os.O_CREATE, 0o644)
			if err != nil {
				return err
			}
			if i == 1 {
				data = data[:n[0]]
			}
			n[i], err = unix.Pwrite(int(f.Fd()), data, off)
			n[i] = max(n[i], 0)
			f.Close()
			if err != nil && (i == 1 || !errors.Is(err, syscall.ENOSPC)) {
				return fmt.Errorf("write %s: %w", name, err)
			}
		}
		if n[0] != n[1] {
			return fmt.Errorf("write %s: quotafs wrote %d, the model %d", name, n[0], n[1])
		}
	case k < 8:
		size := int64(rng.IntN(200 << 10))
		err := unix.Truncate(filepath.Join(mnt, name), size)
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("truncate %s: %w", name, err)
		}
		return unix.Truncate(filepath.Join(ref, name), size)
	default:
		a, aerr := os.ReadFile(filepath.Join(mnt, name))
		b, berr := os.ReadFile(filepath.Join(ref, name))
		if result(aerr) != result(berr) || !bytes.Equal(a, b) {
			return fmt.Errorf("read %s: quotafs %d bytes (%v), the model %d (%v)", name, len(a), aerr, len(b), berr)
		}
	}
	return nil
}

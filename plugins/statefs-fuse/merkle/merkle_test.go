package merkle

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/plugins/statefs-fuse/dirwalk/dirwalktest"
)

// entry is one entry of a test tree: a regular file (content), a directory
// (dir), a symlink (link), a FIFO or a hard link to another entry.
type entry struct {
	path    string
	content []byte
	dir     bool
	link    string
	fifo    bool
	hard    string
	perm    os.FileMode
}

// oddTree holds names with odd bytes (invalid UTF-8, control bytes,
// spaces), symlink loops and a symlink out of the tree, a FIFO, a hard link,
// an empty file and directory, and a file of several blocks.
func oddTree() []entry {
	big := bytes.Repeat([]byte("0123456789abcdef"), 3*BlockSize/16+100)
	return []entry{
		{path: "a", content: []byte("hello"), perm: 0o644},
		{path: "big", content: big, perm: 0o600},
		{path: "empty", perm: 0o400},
		{path: "d", dir: true, perm: 0o755},
		{path: "d/e", dir: true, perm: 0o700},
		{path: "d/e/deep", content: []byte("deep"), perm: 0o640},
		{path: "void", dir: true, perm: 0o1777},
		{path: "\xff\xfe\x01", content: []byte("odd"), perm: 0o644},
		{path: "new\nline\ttab and space", content: []byte("ws"), perm: 0o644},
		{path: "caf\xc3\xa9", content: []byte("nfc"), perm: 0o644},
		{path: "cafe\xcc\x81", content: []byte("nfd"), perm: 0o644},
		{path: "-", content: []byte("dash"), perm: 0o4755},
		{path: "loop1", link: "loop2"},
		{path: "loop2", link: "loop1"},
		{path: "self", link: "self"},
		{path: "d/up", link: "../d"},
		{path: "out", link: "/etc/passwd"},
		{path: "pipe", fifo: true, perm: 0o600},
		{path: "d/hard", hard: "a"},
	}
}

// build makes the entries below a new directory, in order or reversed
// (which gives other inode numbers and directory orders), owned by uid, with
// timestamps at mtime.
func build(t *testing.T, entries []entry, reverse bool, uid int, mtime time.Time) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// Directories first, so that reversing changes the order within them.
	var dirs, rest []entry
	for _, e := range entries {
		if e.dir {
			dirs = append(dirs, e)
		} else {
			rest = append(rest, e)
		}
	}
	if reverse {
		slices.Reverse(rest)
		// A hard link's target must exist first.
		slices.SortStableFunc(rest, func(a, b entry) int {
			return btoi(a.hard != "") - btoi(b.hard != "")
		})
	}
	for _, e := range append(dirs, rest...) {
		p := filepath.Join(dir, e.path)
		var err error
		switch {
		case e.dir:
			err = os.Mkdir(p, 0o700)
		case e.link != "":
			err = os.Symlink(e.link, p)
		case e.fifo:
			err = unix.Mkfifo(p, 0o600)
		case e.hard != "":
			err = os.Link(filepath.Join(dir, e.hard), p)
		default:
			err = os.WriteFile(p, e.content, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
		if e.link == "" && e.hard == "" {
			if err := os.Chmod(p, e.perm|modeBits(e.perm)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Timestamps last, deepest first, so that no later change moves them.
	for _, e := range slices.Backward(append(dirs, rest...)) {
		ts := []unix.Timespec{unix.NsecToTimespec(mtime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, e.path), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// modeBits maps the setuid, setgid and sticky bits of a unix permission to
// os.FileMode's.
func modeBits(perm os.FileMode) os.FileMode {
	var m os.FileMode
	if perm&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if perm&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if perm&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

func scan(t *testing.T, dir string) Digest {
	t.Helper()
	d, err := Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestScanIgnoresHostDetails builds the same content twice, with other
// owners, timestamps, inode numbers and creation orders, and gets one root.
func TestScanIgnoresHostDetails(t *testing.T) {
	one := build(t, oddTree(), false, 0, time.Unix(0, 0))
	two := build(t, oddTree(), true, 65534, time.Now().Add(time.Hour))
	var a, b unix.Stat_t
	if err := unix.Lstat(filepath.Join(one, "a"), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(two, "a"), &b); err != nil {
		t.Fatal(err)
	}
	if a.Ino == b.Ino || a.Uid == b.Uid || a.Mtim == b.Mtim {
		t.Fatalf("the two trees share inode, owner or mtime: %+v %+v", a, b)
	}
	if r1, r2 := scan(t, one), scan(t, two); r1 != r2 {
		t.Errorf("roots differ: %x and %x", r1, r2)
	}
}

// TestScanCoversContent changes one thing at a time, each of which must
// change the root, and undoes it, which must restore it.
func TestScanCoversContent(t *testing.T) {
	dir := build(t, oddTree(), false, 0, time.Unix(0, 0))
	base := scan(t, dir)
	p := func(name string) string { return filepath.Join(dir, name) }
	flip := func(name string, off int64) func() {
		return func() {
			f, err := os.OpenFile(p(name), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := make([]byte, 1)
			if _, err := f.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 1
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}
	}
	chmod := func(name string, mode os.FileMode) func() {
		return func() {
			if err := os.Chmod(p(name), mode); err != nil {
				t.Fatal(err)
			}
		}
	}
	rename := func(from, to string) func() {
		return func() {
			if err := os.Rename(p(from), p(to)); err != nil {
				t.Fatal(err)
			}
		}
	}
	relink := func(name, target string) func() {
		return func() {
			if err := os.Remove(p(name)); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, p(name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name     string
		do, undo func()
	}{
		{"one byte of a small file", flip("a", 0), flip("a", 0)},
		{"one byte in the third block", flip("big", 2*BlockSize+7), flip("big", 2*BlockSize+7)},
		{"one byte of an odd name's file", flip("\xff\xfe\x01", 2), flip("\xff\xfe\x01", 2)},
		{"one mode bit of a file", chmod("a", 0o645), chmod("a", 0o644)},
		{"the setuid bit", chmod("-", 0o755), chmod("-", 0o755|os.ModeSetuid)},
		{"one mode bit of a directory", chmod("d/e", 0o701), chmod("d/e", 0o700)},
		{"the sticky bit of a directory", chmod("void", 0o777), chmod("void", 0o777|os.ModeSticky)},
		{"one mode bit of the top", chmod(".", 0o701), chmod(".", 0o700)},
		{"a name", rename("a", "b"), rename("b", "a")},
		{"one byte of an odd name", rename("\xff\xfe\x01", "\xff\xfe\x02"), rename("\xff\xfe\x02", "\xff\xfe\x01")},
		{"a move to another directory", rename("d/e/deep", "deep"), rename("deep", "d/e/deep")},
		{"a symlink's target", relink("loop1", "loop3"), relink("loop1", "loop2")},
		{"a file's size", func() { os.Truncate(p("empty"), 1) }, func() { os.Truncate(p("empty"), 0) }},
		{"a new empty file", func() { os.WriteFile(p("d/new"), nil, 0o644) }, func() { os.Remove(p("d/new")) }},
		{"a type, same name and mode", func() {
			os.Remove(p("pipe"))
			os.WriteFile(p("pipe"), nil, 0o600)
		}, func() {
			os.Remove(p("pipe"))
			unix.Mkfifo(p("pipe"), 0o600)
		}},
	}
	seen := map[Digest]string{base: "base"}
	for _, tt := range tests {
		tt.do()
		got := scan(t, dir)
		if prev, ok := seen[got]; ok {
			t.Errorf("%s: root %x, the same as after %s", tt.name, got, prev)
		}
		seen[got] = tt.name
		tt.undo()
		if got := scan(t, dir); got != base {
			t.Fatalf("%s undone: root %x, want %x", tt.name, got, base)
		}
	}
	// Owners and timestamps are not covered.
	if err := os.Lchown(p("a"), 1234, 1234); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p("d"), time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := scan(t, dir); got != base {
		t.Errorf("root after chown and touch = %x, want %x", got, base)
	}
}

// TestScanCanonicalForm computes a small tree's root straight from the
// package documentation and compares.
func TestScanCanonicalForm(t *testing.T) {
	dir := build(t, []entry{
		{path: "b", content: []byte("hi"), perm: 0o644},
		{path: "a", link: "b"},
		{path: "s", dir: true, perm: 0o755},
		{path: "s/p", fifo: true, perm: 0o600},
	}, false, 0, time.Unix(0, 0))
	sum := func(parts ...[]byte) []byte {
		h := sha256.Sum256(bytes.Join(parts, nil))
		return h[:]
	}
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	name := func(n string) []byte { return append(u64(uint64(len(n))), n...) }
	file := sum([]byte("file\x00"), u32(0o644), u64(2), sum([]byte("hi")))
	link := sum([]byte("symlink\x00"), []byte("b"))
	fifo := sum([]byte("fifo\x00"), u32(0o600))
	sub := sum([]byte("dir\x00"), u32(0o755), name("p"), fifo)
	// Names in ascending byte order: a, b, s.
	want := sum([]byte("dir\x00"), u32(0o700), name("a"), link, name("b"), file, name("s"), sub)
	if got := scan(t, dir); !bytes.Equal(got[:], want) {
		t.Errorf("root = %x, want %x from the documented form", got, want)
	}
}

// TestIncrementalCutAndRegrow: a file hashed, cut short twice and grown
// again past its old end before the next Root has zeros where its cut
// blocks were; the incremental root must see them (the model test found
// a root that kept their old digests).
func TestIncrementalCutAndRegrow(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cuts      []int64
		off, size int64
	}{
		{"cut twice, grown past the old end", []int64{BlockSize + BlockSize/2, BlockSize / 3}, 6 * BlockSize, 1000},
		{"cut, grown back to the same size", []int64{BlockSize / 2}, 5*BlockSize - 10, 10},
		{"cut to zero, grown inside the old end", []int64{0}, 2 * BlockSize, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "f")
			if err := os.WriteFile(p, bytes.Repeat([]byte{0xaa}, 5*BlockSize), 0o644); err != nil {
				t.Fatal(err)
			}
			dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(dfd)
			tree := New(dfd)
			if _, err := tree.Root(); err != nil {
				t.Fatal(err)
			}
			var st unix.Stat_t
			if err := unix.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			for _, c := range tc.cuts {
				if err := os.Truncate(p, c); err != nil {
					t.Fatal(err)
				}
				tree.Resized(st.Ino, c)
			}
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(bytes.Repeat([]byte{0x55}, int(tc.size)), tc.off); err != nil {
				t.Fatal(err)
			}
			f.Close()
			tree.Written(st.Ino, tc.off, tc.size)
			got, err := tree.Root()
			if err != nil {
				t.Fatal(err)
			}
			want, err := Scan(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("incremental root %x, scan %x", got, want)
			}
		})
	}
}

// canon computes digests straight from the documented canonical form.
type canon struct{}

func (canon) sum(parts ...[]byte) Digest { return sha256.Sum256(bytes.Join(parts, nil)) }
func (canon) u32(v uint32) []byte        { return binary.BigEndian.AppendUint32(nil, v) }
func (canon) u64(v uint64) []byte        { return binary.BigEndian.AppendUint64(nil, v) }

// file is the digest of a file of fewer than BlockSize bytes.
func (c canon) file(perm uint32, content []byte) Digest {
	b := sha256.Sum256(content)
	return c.sum([]byte("file\x00"), c.u32(perm), c.u64(uint64(len(content))), b[:])
}

// dir is the digest of a directory whose entries are given in byte order.
func (c canon) dir(perm uint32, names []string, digests []Digest) Digest {
	parts := [][]byte{[]byte("dir\x00"), c.u32(perm)}
	for i, n := range names {
		parts = append(parts, c.u64(uint64(len(n))), []byte(n), digests[i][:])
	}
	return c.sum(parts...)
}

// TestScanDeep hashes a chain of 70,000 directories (deeper than the
// helper's RLIMIT_NOFILE) under a limit of 1024, compares with the root
// computed from the canonical form, then changes its bottom and compares
// the incremental root with a new scan and the canonical form.
func TestScanDeep(t *testing.T) {
	dirwalktest.UnderNofile(t, 1024, func(t *testing.T) {
		const depth = 70000
		bottom := -1
		start := time.Now()
		dir := dirwalktest.Chain(t, depth, func(level, fd int) {
			must(t, unix.Fchmod(fd, 0o755))
			if level%1000 == 0 {
				must(t, unix.Symlinkat("t", fd, "s"))
			}
			if level == depth {
				f, err := unix.Openat(fd, "f", unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
				must(t, err)
				_, err = unix.Write(f, []byte("deep"))
				must(t, err)
				unix.Close(f)
				bottom, err = unix.Dup(fd)
				must(t, err)
			}
		})
		defer unix.Close(bottom)
		t.Logf("built in %v", time.Since(start))
		var c canon
		want := func(content string, extra bool) Digest {
			names, ds := []string{"f"}, []Digest{c.file(0o600, []byte(content))}
			if extra {
				names, ds = append(names, "g"), append(ds, c.dir(0o755, nil, nil))
			}
			if depth%1000 == 0 {
				names, ds = append(names, "s"), append(ds, c.sum([]byte("symlink\x00t")))
			}
			d := c.dir(0o755, names, ds)
			for level := depth - 1; level >= 0; level-- {
				names, ds := []string{"d"}, []Digest{d}
				if level%1000 == 0 {
					names, ds = append(names, "s"), append(ds, c.sum([]byte("symlink\x00t")))
				}
				d = c.dir(0o755, names, ds)
			}
			return d
		}
		start = time.Now()
		got := scan(t, dir)
		t.Logf("scanned %d levels in %v", depth, time.Since(start))
		if w := want("deep", false); got != w {
			t.Fatalf("root %x, want %x from the canonical form", got, w)
		}

		top, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		must(t, err)
		defer unix.Close(top)
		tree := New(top)
		if r, err := tree.Root(); err != nil || r != got {
			t.Fatalf("tree root %x, %v; want %x", r, err, got)
		}
		f, err := unix.Openat(bottom, "f", unix.O_WRONLY|unix.O_CLOEXEC, 0)
		must(t, err)
		_, err = unix.Pwrite(f, []byte("D"), 0)
		must(t, err)
		var st unix.Stat_t
		must(t, unix.Fstat(f, &st))
		unix.Close(f)
		tree.Written(st.Ino, 0, 1)
		must(t, unix.Mkdirat(bottom, "g", 0o755))
		must(t, unix.Fstat(bottom, &st))
		tree.Changed(st.Ino)
		start = time.Now()
		inc, err := tree.Root()
		must(t, err)
		t.Logf("incremental root after a change at the bottom in %v", time.Since(start))
		if w := want("Deep", true); inc != w || scan(t, dir) != w {
			t.Errorf("incremental root %x, want %x like a new scan", inc, w)
		}
	})
}

// TestMetaKeepsBlocks: after Meta only the file's permission bits are read
// again, not its content. The content is replaced behind the Tree's back,
// so the root after a chmod and Meta must have the new mode but still the
// old content's digest; Written then brings in the new content.
func TestMetaKeepsBlocks(t *testing.T) {
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o755))
	p := filepath.Join(dir, "f")
	must(t, os.WriteFile(p, []byte("old"), 0o644))
	must(t, os.Chmod(p, 0o644))
	top, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(top)
	tree := New(top)
	var c canon
	root := func(perm uint32, content string) Digest {
		return c.dir(0o755, []string{"f"}, []Digest{c.file(perm, []byte(content))})
	}
	for i, step := range []struct {
		name string
		do   func(ino uint64)
		want Digest
	}{
		{"first root", func(uint64) {}, root(0o644, "old")},
		{"content replaced unreported, chmod and Meta", func(ino uint64) {
			must(t, os.WriteFile(p, []byte("new"), 0))
			must(t, os.Chmod(p, 0o600))
			tree.Meta(ino)
		}, root(0o600, "old")},
		{"Written", func(ino uint64) { tree.Written(ino, 0, 3) }, root(0o600, "new")},
	} {
		var st unix.Stat_t
		must(t, unix.Stat(p, &st))
		step.do(st.Ino)
		if got, err := tree.Root(); err != nil || got != step.want {
			t.Fatalf("step %d (%s): root %x, %v; want %x", i, step.name, got, err, step.want)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Package merkle computes the Merkle root of a directory tree, and keeps it
// up to date incrementally as the tree changes.
//
// # Canonical form
//
// Every digest is SHA-256. Integers are big-endian; permission bits are
// the mode's 07777 bits as 4 bytes.
//
//   - A regular file's content is cut in blocks of BlockSize bytes (the last
//     one shorter); each block's digest is SHA-256 of its bytes. The file's
//     digest is SHA-256("file\x00" ‖ perm ‖ size (8 bytes) ‖ the block
//     digests in order).
//   - A symlink's digest is SHA-256("symlink\x00" ‖ target). Symlinks are
//     never followed, so loops and targets outside the tree do not matter.
//   - A FIFO, socket or device: SHA-256(kind ‖ "\x00" ‖ perm), kind being
//     "fifo", "socket", "chardev" or "blockdev" (device numbers are not
//     covered).
//   - A directory's digest is SHA-256("dir\x00" ‖ perm ‖ for each entry, in
//     ascending byte order of names: len(name) (8 bytes) ‖ name ‖ the
//     entry's digest). Names are raw bytes: any byte but '/' and NUL.
//   - The root is the digest of the top directory.
//
// Timestamps, inode numbers, link counts and owners are not covered: they
// differ between hosts holding the same content. Hard links are hashed as
// the files they are, once per name.
//
// # Incremental upkeep
//
// Tree caches the digest of every file (with its block digests) and
// directory it hashed, keyed by inode number, and the directories each
// inode was seen in. A change reports the inodes it touched (Changed,
// Written, Resized, or Meta for a chmod, which keeps a file's block
// digests); they and every directory above them lose their cached digest,
// and only those are hashed again: an update costs work proportional to
// the blocks and directories it touched, not to the size of the tree. The
// walk holds a bounded number of descriptors (package dirwalk), so a tree
// deeper than RLIMIT_NOFILE hashes too. A directory's digest does not
// depend on its own name, so moving a subtree rehashes only the
// directories it left and entered.
//
// A Tree starts empty; the first Root hashes everything, which is how a
// restarted server recomputes the root of a tree it did not watch.
package merkle

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/plugins/statefs-fuse/dirwalk"
)

// BlockSize is the size of the blocks a file's content is hashed in.
const BlockSize = 64 << 10

// Digest is a SHA-256 digest.
type Digest = [sha256.Size]byte

// fileEntry is the cache of a regular file's digest.
type fileEntry struct {
	blocks []Digest
	// dirty blocks are to be hashed again.
	dirty map[int]struct{}
	size  int64
	// low is the lowest size the file had since it was last hashed: the
	// blocks past it were cut off, and are zeros or new data if it grew
	// again.
	low  int64
	perm uint32
	// digest is valid when ok.
	digest Digest
	ok     bool
}

// Tree keeps the Merkle root of the tree below a directory. Its methods
// are safe for concurrent use, but the caller must keep the tree from
// changing while Root runs, and report each change it makes.
type Tree struct {
	mu    sync.Mutex
	root  int // fd of the top directory
	files map[uint64]*fileEntry
	dirs  map[uint64]Digest
	// parents maps an inode to the directories it was seen in.
	parents map[uint64]map[uint64]struct{}
}

// New returns a Tree of the directory open as fd (which the Tree does not
// own or close).
func New(fd int) *Tree {
	return &Tree{root: fd, files: map[uint64]*fileEntry{}, dirs: map[uint64]Digest{}, parents: map[uint64]map[uint64]struct{}{}}
}

// Changed reports that the inode ino changed in a way other than by its
// content (its names, type, permission bits, or, for a directory, its
// entries). A removed entry is reported through its directory's inode.
func (t *Tree) Changed(ino uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.files, ino)
	t.invalidate(ino)
}

// Meta reports that the permission bits, owner or times of the inode ino
// changed, and nothing else: a file keeps its block digests, and only its
// own digest and those of the directories above it are computed again
// (the permission bits are read again when hashing).
func (t *Tree) Meta(ino uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.invalidate(ino)
}

// Written reports that the bytes [off, off+n) of the regular file ino were
// written. Its size may have changed too.
func (t *Tree) Written(ino uint64, off, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.files[ino]; f != nil && n > 0 {
		for b := off / BlockSize; b <= (off+n-1)/BlockSize; b++ {
			f.dirty[int(b)] = struct{}{}
		}
		f.ok = false
	}
	t.invalidate(ino)
}

// Resized reports that the regular file ino was truncated or extended to
// size bytes.
func (t *Tree) Resized(ino uint64, size int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := t.files[ino]; f != nil {
		// The block that now ends the file, and those past the old end,
		// change; blocks are recounted from the size when hashed.
		f.dirty[int(min(size, f.size)/BlockSize)] = struct{}{}
		f.low = min(f.low, size)
		f.ok = false
	}
	t.invalidate(ino)
}

// invalidate drops the digests of ino and the directories above it. A
// directory whose digest is not cached has no cached ancestor either,
// which ends the walk up. It loops rather than recurses: the tree may be
// deeper than a goroutine's stack allows.
func (t *Tree) invalidate(ino uint64) {
	if f := t.files[ino]; f != nil {
		f.ok = false
	}
	delete(t.dirs, ino)
	todo := []uint64{ino}
	for len(todo) > 0 {
		i := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		for p := range t.parents[i] {
			if _, ok := t.dirs[p]; ok {
				delete(t.dirs, p)
				todo = append(todo, p)
			}
		}
	}
}

// Root returns the Merkle root of the tree, hashing what changed since the
// last call.
func (t *Tree) Root() (Digest, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var st unix.Stat_t
	if err := unix.Fstat(t.root, &st); err != nil {
		return Digest{}, err
	}
	if d, ok := t.dirs[st.Ino]; ok {
		return d, nil
	}
	// digests[n] holds the digests of the entries of the directory the
	// walk is in at depth n; a directory's slot is filled when it is left.
	var digests [][]Digest
	var root Digest
	enter := func(d *dirwalk.Dir, fd int) error {
		ds := make([]Digest, len(d.Entries))
		for i := range d.Entries {
			e := &d.Entries[i]
			ps := t.parents[e.Ino]
			if ps == nil {
				ps = map[uint64]struct{}{}
				t.parents[e.Ino] = ps
			}
			ps[d.Ino] = struct{}{}
			if e.Mode&unix.S_IFMT == unix.S_IFDIR {
				if c, ok := t.dirs[e.Ino]; ok {
					ds[i] = c
				} else {
					e.Descend = true
				}
				continue
			}
			c, err := t.entry(fd, e)
			if err != nil {
				return fmt.Errorf("%q: %w", e.Name, err)
			}
			ds[i] = c
		}
		digests = append(digests[:d.Depth], ds)
		return nil
	}
	leave := func(d *dirwalk.Dir) error {
		ds := digests[d.Depth]
		h := sha256.New()
		h.Write([]byte("dir\x00"))
		h.Write(binary.BigEndian.AppendUint32(nil, d.Mode&07777))
		for i, e := range d.Entries {
			h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(e.Name))))
			h.Write([]byte(e.Name))
			h.Write(ds[i][:])
		}
		var c Digest
		h.Sum(c[:0])
		t.dirs[d.Ino] = c
		if d.Depth == 0 {
			root = c
		} else {
			digests[d.Depth-1][d.Index] = c
		}
		digests = digests[:d.Depth]
		return nil
	}
	if err := dirwalk.Walk(t.root, enter, leave); err != nil {
		return Digest{}, err
	}
	return root, nil
}

// entry returns the digest of the entry e (not a directory) of the
// directory dirfd.
func (t *Tree) entry(dirfd int, e *dirwalk.Entry) (Digest, error) {
	perm := binary.BigEndian.AppendUint32(nil, e.Mode&07777)
	switch e.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return t.file(dirfd, e)
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax+1)
		n, err := unix.Readlinkat(dirfd, e.Name, buf)
		if err != nil {
			return Digest{}, err
		}
		return sha256.Sum256(append([]byte("symlink\x00"), buf[:n]...)), nil
	case unix.S_IFIFO:
		return sha256.Sum256(append([]byte("fifo\x00"), perm...)), nil
	case unix.S_IFSOCK:
		return sha256.Sum256(append([]byte("socket\x00"), perm...)), nil
	case unix.S_IFCHR:
		return sha256.Sum256(append([]byte("chardev\x00"), perm...)), nil
	default:
		return sha256.Sum256(append([]byte("blockdev\x00"), perm...)), nil
	}
}

// file returns the digest of the regular file name of dirfd, hashing
// again only its dirty blocks when it is cached.
func (t *Tree) file(dirfd int, e *dirwalk.Entry) (Digest, error) {
	f := t.files[e.Ino]
	if f != nil && f.ok && f.size == e.Size && f.perm == e.Mode&07777 {
		return f.digest, nil
	}
	fd, err := unix.Openat(dirfd, e.Name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return Digest{}, err
	}
	defer unix.Close(fd)
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return Digest{}, err
	}
	if fst.Ino != e.Ino || fst.Mode&unix.S_IFMT != unix.S_IFREG {
		return Digest{}, errors.New("changed while hashing")
	}
	n := int((fst.Size + BlockSize - 1) / BlockSize)
	if f == nil {
		f = &fileEntry{dirty: map[int]struct{}{}}
		t.files[e.Ino] = f
		for i := range n {
			f.dirty[i] = struct{}{}
		}
	} else if f.size != fst.Size || f.low < f.size {
		// Blocks past the old end, or past the lowest end since (a
		// file cut short and grown again), are new; the old last
		// block may have grown or shrunk.
		for i := int(min(f.size, f.low) / BlockSize); i < n; i++ {
			f.dirty[i] = struct{}{}
		}
	}
	f.blocks = slices.Grow(f.blocks[:min(len(f.blocks), n)], n)[:n]
	buf := make([]byte, BlockSize)
	for i := range f.dirty {
		if i >= n {
			continue
		}
		m, err := unix.Pread(fd, buf, int64(i)*BlockSize)
		if err != nil {
			return Digest{}, err
		}
		if want := int(min(BlockSize, fst.Size-int64(i)*BlockSize)); m != want {
			return Digest{}, fmt.Errorf("block %d: read %d bytes, want %d: %w", i, m, want, io.ErrUnexpectedEOF)
		}
		f.blocks[i] = sha256.Sum256(buf[:m])
	}
	clear(f.dirty)
	f.size, f.low, f.perm = fst.Size, fst.Size, fst.Mode&07777
	h := sha256.New()
	h.Write([]byte("file\x00"))
	h.Write(binary.BigEndian.AppendUint32(nil, f.perm))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(f.size)))
	for _, b := range f.blocks {
		h.Write(b[:])
	}
	h.Sum(f.digest[:0])
	f.ok = true
	return f.digest, nil
}

// Scan returns the Merkle root of the directory dir, hashing all of it.
func Scan(dir string) (Digest, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return Digest{}, err
	}
	defer unix.Close(fd)
	return New(fd).Root()
}

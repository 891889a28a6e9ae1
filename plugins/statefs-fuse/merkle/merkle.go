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
// Written); they and every directory above them lose their cached digest,
// and only those are hashed again: an update costs work proportional to
// the blocks and directories it touched, not to the size of the tree. A
// directory's digest does not depend on its own name, so moving a subtree
// rehashes only the directories it left and entered.
//
// A Tree starts empty; the first Root hashes everything, which is how a
// restarted server recomputes the root of a tree it did not watch.
package merkle

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
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

// invalidate drops the digests of the directories above ino. A directory
// whose digest is not cached has no cached ancestor either, which ends the
// walk.
func (t *Tree) invalidate(ino uint64) {
	if f := t.files[ino]; f != nil {
		f.ok = false
	}
	delete(t.dirs, ino)
	for p := range t.parents[ino] {
		if _, ok := t.dirs[p]; ok {
			t.invalidate(p)
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
	fd, err := unix.Openat(t.root, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Digest{}, err
	}
	defer unix.Close(fd)
	return t.dir(fd, &st)
}

// dir returns the digest of the directory open as fd.
func (t *Tree) dir(fd int, st *unix.Stat_t) (Digest, error) {
	if d, ok := t.dirs[st.Ino]; ok {
		return d, nil
	}
	names, err := readNames(fd)
	if err != nil {
		return Digest{}, err
	}
	slices.SortFunc(names, func(a, b string) int { return bytes.Compare([]byte(a), []byte(b)) })
	h := sha256.New()
	h.Write([]byte("dir\x00"))
	h.Write(binary.BigEndian.AppendUint32(nil, st.Mode&07777))
	for _, name := range names {
		var cst unix.Stat_t
		if err := unix.Fstatat(fd, name, &cst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return Digest{}, fmt.Errorf("%q: %w", name, err)
		}
		d, err := t.entry(fd, name, &cst)
		if err != nil {
			return Digest{}, fmt.Errorf("%q: %w", name, err)
		}
		ps := t.parents[cst.Ino]
		if ps == nil {
			ps = map[uint64]struct{}{}
			t.parents[cst.Ino] = ps
		}
		ps[st.Ino] = struct{}{}
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(name))))
		h.Write([]byte(name))
		h.Write(d[:])
	}
	var d Digest
	h.Sum(d[:0])
	t.dirs[st.Ino] = d
	return d, nil
}

// entry returns the digest of the entry name of the directory fd.
func (t *Tree) entry(dirfd int, name string, st *unix.Stat_t) (Digest, error) {
	perm := binary.BigEndian.AppendUint32(nil, st.Mode&07777)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return Digest{}, err
		}
		defer unix.Close(fd)
		return t.dir(fd, st)
	case unix.S_IFREG:
		return t.file(dirfd, name, st)
	case unix.S_IFLNK:
		buf := make([]byte, unix.PathMax+1)
		n, err := unix.Readlinkat(dirfd, name, buf)
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
func (t *Tree) file(dirfd int, name string, st *unix.Stat_t) (Digest, error) {
	f := t.files[st.Ino]
	if f != nil && f.ok && f.size == st.Size && f.perm == st.Mode&07777 {
		return f.digest, nil
	}
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return Digest{}, err
	}
	defer unix.Close(fd)
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return Digest{}, err
	}
	if fst.Ino != st.Ino || fst.Mode&unix.S_IFMT != unix.S_IFREG {
		return Digest{}, errors.New("changed while hashing")
	}
	n := int((fst.Size + BlockSize - 1) / BlockSize)
	if f == nil {
		f = &fileEntry{dirty: map[int]struct{}{}}
		t.files[st.Ino] = f
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

// readNames returns the names in the directory fd but "." and "..".
func readNames(fd int) ([]string, error) {
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return nil, err
	}
	var names []string
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
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

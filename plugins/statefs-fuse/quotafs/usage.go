package quotafs

import (
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// usage accounts a tree's bytes and entries against its limits. Bytes are
// what each inode below the top directory takes, once per inode (charge):
// a regular file its apparent size, a symlink its target or the block that
// holds a long one, a directory one block (dirBytes); entries are the
// names below the top directory (so hard links count, which bounds
// directory growth too). Counting the blocks of directories and long
// symlinks keeps a tree that is all of them from taking twice its quota
// on disk.
type usage struct {
	mu                   sync.Mutex
	bytes, entries       int64
	maxBytes, maxEntries int64
	// sizes holds the accounted size of each regular file, symlink and
	// directory.
	sizes map[uint64]int64
	// open counts each inode's open file handles; an unlinked file is
	// accounted until its last handle is released.
	open map[uint64]int
	// gone marks unlinked inodes still open.
	gone map[uint64]bool
}

func newUsage(maxBytes, maxEntries int64) *usage {
	return &usage{maxBytes: maxBytes, maxEntries: maxEntries, sizes: map[uint64]int64{}, open: map[uint64]int{}, gone: map[uint64]bool{}}
}

// grow reserves room for inode ino to reach end bytes. It returns the end
// it may reach: end itself, or less (down to the inode's size) when only
// part fits or nothing does.
func (u *usage) grow(ino uint64, end int64) int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	cur := u.sizes[ino]
	if end <= cur {
		return end
	}
	if u.maxBytes > 0 {
		end = min(end, cur+max(u.maxBytes-u.bytes, 0))
	}
	u.bytes += end - cur
	u.sizes[ino] = end
	return end
}

// set records that inode ino is now size bytes (after a truncate, or to
// settle a reservation a write did not use).
func (u *usage) set(ino uint64, size int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.bytes += size - u.sizes[ino]
	u.sizes[ino] = size
}

// size returns the accounted size of inode ino.
func (u *usage) size(ino uint64) int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sizes[ino]
}

// addEntry reserves a new name; ino, when not zero, is a new inode of size
// bytes (a symlink's target length, or 0).
func (u *usage) addEntry(size int64) syscall.Errno {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.maxEntries > 0 && u.entries >= u.maxEntries {
		return syscall.ENOSPC
	}
	if u.maxBytes > 0 && size > 0 && u.bytes+size > u.maxBytes {
		return syscall.ENOSPC
	}
	u.entries++
	u.bytes += size
	return 0
}

// undoEntry gives back a name addEntry reserved, when making it failed.
func (u *usage) undoEntry(size int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.entries--
	u.bytes -= size
}

// bind records the inode a reserved entry of size bytes turned out to be.
func (u *usage) bind(ino uint64, size int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sizes[ino] = size
}

// unbind forgets the inode a reserved entry was bound to, once the entry
// is given back (undoEntry) because making it failed.
func (u *usage) unbind(ino uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.sizes, ino)
}

// dirBytes is what a directory is charged: the one block an empty one
// takes on ext4 and XFS. Its growth past that (a few dozen bytes a name,
// within the entry quota) is not counted.
const dirBytes = 4096

// Charge is what an inode of mode (its type bits), apparent size and
// blocks (512-byte units) is charged against a byte quota: a regular file
// its size, a symlink the larger of its target's length and its blocks, a
// directory dirBytes, a FIFO or socket nothing. Every count of a state's
// bytes (its quota, status, checkpoints) charges this.
func Charge(mode uint32, size, blocks int64) int64 {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return size
	case unix.S_IFLNK:
		return max(size, blocks*512)
	case unix.S_IFDIR:
		return dirBytes
	}
	return 0
}

// charge is Charge of st.
func charge(st *unix.Stat_t) int64 { return Charge(st.Mode, st.Size, st.Blocks) }

// removeEntry records that a name was removed; last says it was the
// inode's last link, so its bytes go once its last handle is released.
func (u *usage) removeEntry(ino uint64, last bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.entries--
	if !last {
		return
	}
	if u.open[ino] > 0 {
		u.gone[ino] = true
		return
	}
	u.bytes -= u.sizes[ino]
	delete(u.sizes, ino)
}

// opened and released count the handles of inode ino.
func (u *usage) opened(ino uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.open[ino]++
}

func (u *usage) released(ino uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.open[ino]--; u.open[ino] > 0 {
		return
	}
	delete(u.open, ino)
	if u.gone[ino] {
		delete(u.gone, ino)
		u.bytes -= u.sizes[ino]
		delete(u.sizes, ino)
	}
}

// Usage is a tree's use of its quota.
type Usage struct {
	Bytes, Entries       int64
	MaxBytes, MaxEntries int64
}

func (u *usage) get() Usage {
	u.mu.Lock()
	defer u.mu.Unlock()
	return Usage{Bytes: u.bytes, Entries: u.entries, MaxBytes: u.maxBytes, MaxEntries: u.maxEntries}
}

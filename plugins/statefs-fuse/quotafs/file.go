package quotafs

import (
	"cmp"
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// handle is an open regular file.
type handle struct {
	fsys *FS
	n    *node
	ino  uint64
	mu   sync.Mutex
	fd   int
}

var (
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileWriter    = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
	_ fs.FileFsyncer   = (*handle)(nil)
	_ fs.FileFlusher   = (*handle)(nil)
	_ fs.FileAllocater = (*handle)(nil)
	_ fs.FileLseeker   = (*handle)(nil)
)

func (f *FS) newHandle(n *node, fd int) *handle {
	h := &handle{fsys: f, n: n, ino: n.ino(), fd: fd}
	f.usage.opened(h.ino)
	return h
}

// Read reads from the file.
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if _, errno := h.fsys.check(ctx); errno != 0 {
		return nil, errno
	}
	m, err := unix.Pread(h.fd, dest, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	// Charged for what was read, before the caller gets it.
	if errno := h.fsys.io.read(ctx, m); errno != 0 {
		return nil, errno
	}
	return fuse.ReadResultData(dest[:m]), 0
}

// Write writes within the byte quota: a write that only partly fits (over
// the file's bytes, or into what is left of the quota) is cut short, one
// of which no byte fits fails with ENOSPC.
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	c, errno := h.fsys.check(ctx)
	if errno != 0 {
		return 0, errno
	}
	f := h.fsys
	if errno := f.io.write(ctx, len(data)); errno != 0 {
		return 0, errno
	}
	f.data.RLock()
	defer f.data.RUnlock()
	if len(data) == 0 {
		return 0, 0
	}
	want := off + int64(len(data))
	end := f.usage.grow(h.ino, want)
	if end <= off {
		// Not one byte at off fits: off is at or past what the quota
		// lets the file reach.
		f.settle(h.ino, h.fd)
		return 0, syscall.ENOSPC
	}
	if c.Uid != 0 && h.n.priv.Load() {
		if errno := killPriv(h.fd, -1, ""); errno != 0 {
			f.settle(h.ino, h.fd)
			return 0, errno
		}
		h.n.priv.Store(false)
	}
	if end < want {
		data = data[:end-off]
	}
	m, err := unix.Pwrite(h.fd, data, off)
	if err != nil || m < len(data) {
		f.settle(h.ino, h.fd)
	}
	if m > 0 {
		f.tree.Written(h.ino, off, int64(m))
	}
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	return uint32(m), 0
}

// Fsync flushes the file to disk; flags bit 0 asks for fdatasync.
func (h *handle) Fsync(_ context.Context, flags uint32) syscall.Errno {
	if flags&1 != 0 {
		return fs.ToErrno(unix.Fdatasync(h.fd))
	}
	return fs.ToErrno(unix.Fsync(h.fd))
}

// Flush has nothing to do: writes go to the backing file at once.
func (h *handle) Flush(context.Context) syscall.Errno { return 0 }

// Release closes the file.
func (h *handle) Release(context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fd < 0 {
		return 0
	}
	err := unix.Close(h.fd)
	h.fd = -1
	h.fsys.usage.released(h.ino)
	return fs.ToErrno(err)
}

// Allocate allocates, zeroes or frees [off, off+size). Mode 0 and
// FALLOC_FL_ZERO_RANGE, which may extend the file, stay within the byte
// quota; with FALLOC_FL_KEEP_SIZE, ZERO_RANGE and PUNCH_HOLE act on the
// part of the range within the size, and PUNCH_HOLE frees blocks. KEEP_SIZE alone is refused: it would
// allocate blocks past the end, which the quota (of sizes) would not see;
// so are COLLAPSE_RANGE and INSERT_RANGE.
func (h *handle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if _, errno := h.fsys.check(ctx); errno != 0 {
		return errno
	}
	f := h.fsys
	f.data.RLock()
	defer f.data.RUnlock()
	switch mode {
	case 0, unix.FALLOC_FL_ZERO_RANGE:
		want := int64(off + size)
		if f.usage.grow(h.ino, want) < want {
			f.settle(h.ino, h.fd)
			return syscall.ENOSPC
		}
	case unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE:
		// Within the size only: ZERO_RANGE past the end would allocate
		// blocks there, which the quota (of sizes) does not see.
		var st unix.Stat_t
		if err := unix.Fstat(h.fd, &st); err != nil {
			return fs.ToErrno(err)
		}
		if int64(off) >= st.Size {
			return 0
		}
		size = min(size, uint64(st.Size)-off)
	default:
		return syscall.EOPNOTSUPP
	}
	err := unix.Fallocate(h.fd, mode, int64(off), int64(size))
	f.settle(h.ino, h.fd)
	var st unix.Stat_t
	if serr := unix.Fstat(h.fd, &st); serr != nil {
		f.tree.Changed(h.ino) // rehashed whole
		return fs.ToErrno(cmp.Or(err, serr))
	}
	if err != nil {
		// A zeroing or punch that failed may have done part of the
		// range.
		if mode != 0 && int64(off) < st.Size {
			f.tree.Written(h.ino, int64(off), min(int64(size), st.Size-int64(off)))
		}
		return fs.ToErrno(err)
	}
	switch {
	case mode == 0:
		// Allocated blocks read as they did, zeros: only the size may
		// have changed.
		f.tree.Resized(h.ino, st.Size)
	case int64(off) < st.Size:
		// Zeroed or punched, up to the end at most (a range past it is
		// allowed, and may be huge).
		f.tree.Written(h.ino, int64(off), min(int64(size), st.Size-int64(off)))
	}
	return 0
}

// Lseek finds data and holes.
func (h *handle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	n, err := unix.Seek(h.fd, int64(off), int(whence))
	return uint64(n), fs.ToErrno(err)
}

// Package fstree removes directory trees whose shape an untrusted tenant
// chose. A tenant controls the depth, width, names, modes and file types of
// what it writes, and can rename entries while the tree is being removed;
// none of that changes the resources removal needs or makes it touch
// anything outside the tree.
package fstree

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// errStuck reports a pass over a directory that removed nothing; the
// entries' own errors were kept by fail.
var errStuck = errors.New("entries remain that could not be removed")

// ErrMountPoint reports a directory inside the tree that is another mount:
// RemoveAll never removes what lies below it.
var ErrMountPoint = errors.New("a mount point is inside the tree")

// The inode flags (linux/fs.h) that make an entry impossible to unlink.
const (
	fsImmutableFL = 0x00000010
	fsAppendFL    = 0x00000020
)

const (
	// direntBufSize is the getdents buffer of each of the two directories
	// RemoveAll holds open: about a thousand short names per call.
	direntBufSize = 32 << 10
	// maxErrors is how many errors RemoveAll keeps for its report; it counts
	// the rest.
	maxErrors = 8
	// dirFlags open a directory of the tree: never through a symlink.
	dirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
)

// RemoveAll removes path and, when it is a directory, everything below it.
// A path that does not exist is not an error.
//
// Only the last element of path belongs to the tree: the directories above
// it are trusted. Inside the tree nothing is followed: a symlink is removed,
// never its target, and every step works relative to an open directory, so
// a directory swapped for a symlink mid-way is removed as a symlink.
// Whatever the tree's shape, RemoveAll holds at most five file descriptors
// and two fixed buffers: it empties the tree from the top, moving the
// subdirectories of each non-empty directory up into the top directory
// (under unique names) rather than descending into them.
//
// Entries that deny removal are made removable when they lie inside the
// tree: the immutable and append-only inode flags are cleared on
// directories and on files with a single link (a file with other links may
// be shared with something outside the tree and is left as it is), and a
// directory lacking owner permissions gets them (which matters only when
// the caller is not root). RemoveAll does not cross into other mounts.
//
// A cancelled ctx stops it between batches; what remains stays. A process
// that keeps writing into the tree can keep it busy until ctx ends: stop
// writers first.
func RemoveAll(ctx context.Context, path string) error {
	if path == "" {
		return errors.New("remove: empty path")
	}
	path = filepath.Clean(path)
	parent, name := filepath.Split(path)
	if name == "" || name == "." || name == ".." {
		return fmt.Errorf("remove %s: refusing to remove a root or dot path", path)
	}
	if parent == "" {
		parent = "."
	}
	pfd, err := retryEINTR(func() (int, error) { return unix.Open(parent, dirFlags&^unix.O_NOFOLLOW, 0) })
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove %s: open parent: %w", path, err)
	}
	defer unix.Close(pfd)
	r, err := newRemover(ctx)
	if err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	if err := r.removeRoot(pfd, name); err != nil {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// remover is the state of one RemoveAll.
type remover struct {
	ctx context.Context
	// top and child are the getdents buffers of the top directory and of
	// the directory being flattened into it.
	top, child []byte
	// mount identifies the root's mount; nothing on another is touched.
	mount uint64
	// prefix and seq make the names of directories moved up unique.
	prefix string
	seq    uint64
	// noReplace is false once the filesystem refused RENAME_NOREPLACE.
	noReplace bool
	errs      []error
	more      int
}

func newRemover(ctx context.Context) (*remover, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("random name prefix: %w", err)
	}
	return &remover{
		ctx:       ctx,
		top:       make([]byte, direntBufSize),
		child:     make([]byte, direntBufSize),
		prefix:    ".kigumi-rm-" + hex.EncodeToString(b) + "-",
		noReplace: true,
	}, nil
}

// removeRoot removes the entry name of the trusted directory pfd.
func (r *remover) removeRoot(pfd int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		err := r.retry(pfd, false, name, func() error { return unix.Unlinkat(pfd, name, 0) })
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EISDIR) {
			return err
		}
	}
	var fd int
	err := r.retry(pfd, false, name, func() (err error) {
		fd, err = retryEINTR(func() (int, error) { return unix.Openat(pfd, name, dirFlags, 0) })
		return err
	})
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	// The root is in the tree: it must let its entries go.
	clearFlags(fd)
	addOwnerPerms(fd)
	r.mount, err = mountOf(fd)
	if err == nil {
		err = r.drain(fd, r.top, func(n string, typ byte) bool { return r.remove(fd, n, typ) })
	}
	unix.Close(fd)
	if errors.Is(err, errStuck) {
		return r.report(err)
	}
	if err != nil {
		return err
	}
	err = r.retry(pfd, false, name, func() error { return unix.Unlinkat(pfd, name, unix.AT_REMOVEDIR) })
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return r.report(err)
	}
	return nil
}

// unlinkQuick removes the entry name of the directory dfd, of type typ (a
// getdents DT_ value), if it is not a directory or an empty one. It reports
// whether it is done with the entry (removed, gone, swapped, or failed and
// reported) and whether anything changed; a directory with entries is not
// done.
func (r *remover) unlinkQuick(dfd int, name string, typ byte) (done, changed bool) {
	if typ != unix.DT_DIR {
		err := r.retry(dfd, true, name, func() error { return unix.Unlinkat(dfd, name, 0) })
		switch {
		case err == nil || errors.Is(err, unix.ENOENT):
			return true, true
		case !errors.Is(err, unix.EISDIR):
			r.fail(name, err)
			return true, false
		}
	}
	err := r.retry(dfd, true, name, func() error { return unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR) })
	switch {
	case err == nil || errors.Is(err, unix.ENOENT):
		return true, true
	case errors.Is(err, unix.ENOTDIR):
		return true, true // swapped for a non-directory: the next pass unlinks it
	case !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST):
		r.fail(name, err)
		return true, false
	}
	return false, false
}

// remove removes the entry name of the top directory top, of type typ (a
// getdents DT_ value), and reports whether anything changed.
func (r *remover) remove(top int, name string, typ byte) bool {
	if done, changed := r.unlinkQuick(top, name, typ); done {
		return changed
	}
	var cfd int
	err := r.retry(top, true, name, func() (err error) {
		cfd, err = retryEINTR(func() (int, error) { return unix.Openat(top, name, dirFlags, 0) })
		return err
	})
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ENOENT) {
		return true // swapped or gone: the next pass sees what is there now
	}
	if err != nil {
		r.fail(name, err)
		return false
	}
	changed, err := r.flatten(top, cfd)
	unix.Close(cfd)
	if err != nil {
		if !errors.Is(err, errStuck) {
			r.fail(name, err)
		}
		return changed
	}
	err = r.retry(top, true, name, func() error { return unix.Unlinkat(top, name, unix.AT_REMOVEDIR) })
	if err == nil || errors.Is(err, unix.ENOENT) {
		return true
	}
	r.fail(name, err)
	return changed
}

// flatten empties the directory cfd, a child of top: it unlinks what is not
// a directory and empty directories, and moves the other directories up
// into top. It reports whether anything changed.
func (r *remover) flatten(top, cfd int) (changed bool, err error) {
	m, err := mountOf(cfd)
	if err != nil {
		return false, err
	}
	if m != r.mount {
		return false, ErrMountPoint
	}
	err = r.drain(cfd, r.child, func(name string, typ byte) bool {
		c := r.flattenEntry(top, cfd, name, typ)
		changed = changed || c
		return c
	})
	return changed, err
}

// flattenEntry removes or moves up the entry name of cfd.
func (r *remover) flattenEntry(top, cfd int, name string, typ byte) bool {
	if done, changed := r.unlinkQuick(cfd, name, typ); done {
		return changed
	}
	err := r.retry(cfd, true, name, func() error { return r.moveUp(cfd, name, top) })
	if err == nil || errors.Is(err, unix.ENOENT) {
		return true
	}
	r.fail(name, err)
	return false
}

// moveUp renames the entry name of cfd into top under a new unique name.
func (r *remover) moveUp(cfd int, name string, top int) error {
	for {
		r.seq++
		to := r.prefix + strconv.FormatUint(r.seq, 36)
		if !r.noReplace {
			return unix.Renameat(cfd, name, top, to)
		}
		err := unix.Renameat2(cfd, name, top, to, unix.RENAME_NOREPLACE)
		switch {
		case errors.Is(err, unix.EEXIST):
			continue
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS):
			r.noReplace = false
			continue
		}
		return err
	}
}

// drain calls visit for every entry of the directory fd, pass after pass,
// until a pass finds it empty (nil) or changes nothing (an error).
func (r *remover) drain(fd int, buf []byte, visit func(name string, typ byte) bool) error {
	for {
		if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
			return fmt.Errorf("rewind directory: %w", err)
		}
		seen, changed := 0, false
		for {
			n, err := retryEINTR(func() (int, error) { return unix.Getdents(fd, buf) })
			if err != nil {
				return fmt.Errorf("read directory: %w", err)
			}
			if n <= 0 {
				break
			}
			for off := 0; off < n; {
				// struct linux_dirent64: ino u64, off s64, reclen u16,
				// type u8, name NUL-terminated.
				reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
				typ := buf[off+18]
				name := buf[off+19 : off+reclen]
				off += reclen
				for i, c := range name {
					if c == 0 {
						name = name[:i]
						break
					}
				}
				if s := string(name); s != "." && s != ".." {
					if err := r.ctx.Err(); err != nil {
						return err
					}
					seen++
					if visit(s, typ) {
						changed = true
					}
				}
			}
		}
		if seen == 0 {
			return nil
		}
		if !changed {
			return errStuck
		}
	}
}

// retry runs op and, when it fails for lack of permission, makes the entry
// name of dir (and dir itself when it is inside the tree) removable and runs
// op once more.
func (r *remover) retry(dir int, inTree bool, name string, op func() error) error {
	err := op()
	switch {
	case errors.Is(err, unix.EPERM):
		if r.unlock(dir, inTree, name, false) {
			err = op()
		}
	case errors.Is(err, unix.EACCES):
		if r.unlock(dir, inTree, name, true) {
			err = op()
		}
	}
	return err
}

// unlock clears the immutable and append-only flags (access is false) or
// adds the owner's permissions (access is true) on dir when inTree, and on
// its entry name when that is a directory or a file with one link. It
// reports whether it changed anything.
func (r *remover) unlock(dir int, inTree bool, name string, access bool) bool {
	changed := false
	if inTree {
		if access {
			changed = addOwnerPerms(dir) || changed
		} else {
			changed = clearFlags(dir) || changed
		}
	}
	// O_PATH opens the entry itself, whatever it is, without reading or
	// writing it: a device node is never opened for real.
	pfd, err := unix.Openat(dir, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return changed
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if unix.Fstat(pfd, &st) != nil {
		return changed
	}
	isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if !isDir && (st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1) {
		return changed
	}
	proc := "/proc/self/fd/" + strconv.Itoa(pfd)
	if access {
		if isDir && st.Mode&0o700 != 0o700 && unix.Chmod(proc, st.Mode&0o7777|0o700) == nil {
			changed = true
		}
		return changed
	}
	// Reopening through /proc opens the very inode checked above.
	fd, err := unix.Open(proc, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return changed
	}
	defer unix.Close(fd)
	return clearFlags(fd) || changed
}

// clearFlags clears the immutable and append-only flags of fd's inode and
// reports whether it did.
func clearFlags(fd int) bool {
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil || flags&(fsImmutableFL|fsAppendFL) == 0 {
		return false
	}
	return unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags&^(fsImmutableFL|fsAppendFL))) == nil
}

// addOwnerPerms gives the directory fd read, write and search permission
// for its owner and reports whether it did.
func addOwnerPerms(fd int) bool {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&0o700 == 0o700 {
		return false
	}
	return unix.Fchmod(fd, st.Mode&0o7777|0o700) == nil
}

// mountOf identifies the mount of fd: its mount id, or its device where
// the kernel has no mount ids.
func mountOf(fd int) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, fmt.Errorf("statx: %w", err)
	}
	if stx.Mask&unix.STATX_MNT_ID != 0 {
		return stx.Mnt_id, nil
	}
	return 1<<63 | uint64(stx.Dev_major)<<32 | uint64(stx.Dev_minor), nil
}

// fail keeps err about the entry name for the report.
// A later pass that fails the same way again adds nothing.
func (r *remover) fail(name string, err error) {
	err = fmt.Errorf("entry %q: %w", name, err)
	for _, e := range r.errs {
		if e.Error() == err.Error() {
			return
		}
	}
	if len(r.errs) < maxErrors {
		r.errs = append(r.errs, err)
	} else {
		r.more++
	}
}

// report returns err with the errors kept about entries.
func (r *remover) report(err error) error {
	errs := append([]error{err}, r.errs...)
	if r.more > 0 {
		errs = append(errs, fmt.Errorf("and %d more failures", r.more))
	}
	return errors.Join(errs...)
}

// retryEINTR runs op again while it is interrupted by a signal.
func retryEINTR(op func() (int, error)) (int, error) {
	for {
		n, err := op()
		if !errors.Is(err, unix.EINTR) {
			return n, err
		}
	}
}

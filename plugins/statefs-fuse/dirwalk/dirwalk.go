// Package dirwalk walks a directory tree depth first with a bounded number
// of open file descriptors, however deep the tree is.
//
// A walk that keeps one descriptor per level runs out of them (EMFILE) on a
// chain of directories deeper than RLIMIT_NOFILE, which a tenant can build
// within a modest entry quota. Walk keeps the descriptors of the first
// KeepDepth levels, and below that of every KeepDepth-th level only; the
// others are closed while the walk is below them and opened again, from the
// nearest open ancestor by their names, when the walk comes back and needs
// them. That costs at most one open of fewer than KeepDepth names per
// directory the walk enters, and nothing in a tree less deep than
// KeepDepth. The walk is a loop over an explicit stack, so the depth does
// not grow the goroutine's stack either.
package dirwalk

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// KeepDepth is how many levels keep their descriptors; below them, one
// level in KeepDepth does. A walk at depth n holds at most
// KeepDepth + n/KeepDepth + 3 descriptors.
const KeepDepth = 128

// ErrChanged is returned when a directory opened again is not the one the
// walk left: the tree changed during the walk.
var ErrChanged = errors.New("tree changed during the walk")

// Entry is a name in a directory, with what lstat said of it.
type Entry struct {
	Name string
	Ino  uint64
	// Mode holds the type and permission bits.
	Mode uint32
	Size int64
	// Blocks is how many 512-byte blocks it takes.
	Blocks int64
	// Descend is set by the enter function on a directory's entry to walk
	// into it.
	Descend bool
}

// Dir is a directory the walk entered.
type Dir struct {
	Ino uint64
	// Mode holds the type and permission bits.
	Mode uint32
	// Depth is 0 for the top directory.
	Depth int
	// Index is the directory's index in its parent's Entries (-1 for the
	// top directory).
	Index int
	// Entries are the directory's names but "." and "..", in ascending
	// byte order.
	Entries []Entry
}

// frame is a directory on the walk's stack.
type frame struct {
	dir  Dir
	name string
	// fd is -1 while closed.
	fd   int
	next int
}

// walker is the state of one walk.
type walker struct {
	stack []*frame
	buf   []byte
	// live leaves out what is removed or replaced during the walk
	// (WalkLive).
	live bool
}

// Walk walks the tree below the directory open as fd (which it does not
// close). It calls enter on each directory it enters, with a descriptor of
// the directory valid during the call only; enter marks the entries to walk
// into. It calls leave (unless nil) on each directory once all those were
// left. An error ends the walk, and is returned with the path of the
// directory it happened in.
func Walk(fd int, enter func(d *Dir, fd int) error, leave func(d *Dir) error) error {
	return (&walker{buf: make([]byte, 64<<10)}).walk(fd, enter, leave)
}

// WalkLive is Walk for a tree that others change meanwhile, as a count of
// a state in use is: a name removed, or a directory removed or replaced,
// before the walk reaches it is left out instead of ending the walk. A
// directory above the walk's that changes still ends it (ErrChanged).
func WalkLive(fd int, enter func(d *Dir, fd int) error, leave func(d *Dir) error) error {
	return (&walker{buf: make([]byte, 64<<10), live: true}).walk(fd, enter, leave)
}

func (w *walker) walk(fd int, enter func(d *Dir, fd int) error, leave func(d *Dir) error) error {
	top, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(top, &st); err != nil {
		unix.Close(top)
		return err
	}
	defer w.closeAll()
	if err := w.push(top, "", st.Ino, st.Mode, -1, enter); err != nil {
		return err
	}
	for len(w.stack) > 0 {
		f := w.stack[len(w.stack)-1]
		for f.next < len(f.dir.Entries) && !descends(&f.dir.Entries[f.next]) {
			f.next++
		}
		if f.next == len(f.dir.Entries) {
			if leave != nil {
				if err := leave(&f.dir); err != nil {
					return w.wrap(err)
				}
			}
			if f.fd >= 0 {
				unix.Close(f.fd)
			}
			w.stack = w.stack[:len(w.stack)-1]
			continue
		}
		i := f.next
		f.next++
		e := &f.dir.Entries[i]
		pfd, err := w.open(len(w.stack) - 1)
		if err != nil {
			return w.wrap(err)
		}
		cfd, err := unix.Openat(pfd, e.Name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if w.live && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP)) {
				continue // removed, or replaced by a non-directory
			}
			return w.wrap(fmt.Errorf("%q: %w", e.Name, err))
		}
		if err := same(cfd, e.Ino, &st); err != nil {
			unix.Close(cfd)
			if w.live && errors.Is(err, ErrChanged) {
				continue // replaced by another directory
			}
			return w.wrap(fmt.Errorf("%q: %w", e.Name, err))
		}
		if !keep(f.dir.Depth) {
			unix.Close(f.fd)
			f.fd = -1
		}
		if err := w.push(cfd, e.Name, st.Ino, st.Mode, i, enter); err != nil {
			return err
		}
	}
	return nil
}

// descends tells whether the walk goes into e.
func descends(e *Entry) bool {
	return e.Descend && e.Mode&unix.S_IFMT == unix.S_IFDIR
}

// keep tells whether a directory at depth keeps its descriptor while the
// walk is below it.
func keep(depth int) bool { return depth < KeepDepth || depth%KeepDepth == 0 }

// push enters the directory open as fd, which the walk then owns.
func (w *walker) push(fd int, name string, ino uint64, mode uint32, index int, enter func(d *Dir, fd int) error) error {
	f := &frame{dir: Dir{Ino: ino, Mode: mode, Depth: len(w.stack), Index: index}, name: name, fd: fd}
	w.stack = append(w.stack, f)
	names, err := w.readNames(fd)
	if w.live && errors.Is(err, unix.ENOENT) {
		names, err = nil, nil // removed since it was opened: empty
	}
	if err != nil {
		return w.wrap(err)
	}
	slices.SortFunc(names, func(a, b string) int { return bytes.Compare([]byte(a), []byte(b)) })
	f.dir.Entries = make([]Entry, 0, len(names))
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if w.live && errors.Is(err, unix.ENOENT) {
				continue // removed since it was listed
			}
			return w.wrap(fmt.Errorf("%q: %w", n, err))
		}
		f.dir.Entries = append(f.dir.Entries, Entry{Name: n, Ino: st.Ino, Mode: st.Mode, Size: st.Size, Blocks: st.Blocks})
	}
	if err := enter(&f.dir, fd); err != nil {
		return w.wrap(err)
	}
	return nil
}

// readNames returns the names in the directory fd but "." and "..".
func (w *walker) readNames(fd int) ([]string, error) {
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return nil, err
	}
	var names []string
	for {
		n, err := unix.Getdents(fd, w.buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(w.buf[:n], -1, names)
	}
}

// resolve opens only below the directory, follows no symlink and crosses
// no mount.
var resolve = unix.OpenHow{
	Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
	Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV,
}

// open returns the descriptor of the directory at depth i, opening it again
// from its nearest open ancestor if it was closed.
func (w *walker) open(i int) (int, error) {
	f := w.stack[i]
	if f.fd >= 0 {
		return f.fd, nil
	}
	// The top directory always keeps its descriptor.
	j := i - 1
	for w.stack[j].fd < 0 {
		j--
	}
	fd := w.stack[j].fd
	// A path given to openat2 must be shorter than PATH_MAX: open in
	// chunks of whole names.
	for k := j + 1; k <= i; {
		var path strings.Builder
		for k <= i && (path.Len() == 0 || path.Len()+1+len(w.stack[k].name) < unix.PathMax) {
			if path.Len() > 0 {
				path.WriteByte('/')
			}
			path.WriteString(w.stack[k].name)
			k++
		}
		next, err := unix.Openat2(fd, path.String(), &resolve)
		if fd != w.stack[j].fd {
			unix.Close(fd)
		}
		if err != nil {
			return -1, fmt.Errorf("open again: %w", err)
		}
		fd = next
	}
	var st unix.Stat_t
	if err := same(fd, f.dir.Ino, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("open again: %w", err)
	}
	f.fd = fd
	return fd, nil
}

// same stats fd into st and checks that it is the inode ino.
func same(fd int, ino uint64, st *unix.Stat_t) error {
	if err := unix.Fstat(fd, st); err != nil {
		return err
	}
	if st.Ino != ino {
		return ErrChanged
	}
	return nil
}

// wrap adds the path of the directory the walk is in to err. A deep path
// keeps only its first and last names.
func (w *walker) wrap(err error) error {
	const head, tail = 4, 8
	var names []string
	for _, f := range w.stack[1:] {
		names = append(names, f.name)
	}
	if n := len(names); n > head+tail {
		names = slices.Concat(names[:head], []string{fmt.Sprintf("…%d more…", n-head-tail)}, names[n-tail:])
	}
	return fmt.Errorf("%q: %w", "./"+strings.Join(names, "/"), err)
}

// closeAll closes the descriptors the walk still holds.
func (w *walker) closeAll() {
	for _, f := range w.stack {
		if f.fd >= 0 {
			unix.Close(f.fd)
		}
	}
}

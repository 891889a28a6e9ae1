package spec

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/dustin/go-humanize"
)

// MaxFileSize is the largest spec or policy file Kigumi reads. Lexing and
// parsing cost about a thousand times the file's size in memory, briefly:
// 256 KiB of list items take 0.13 s and 310 MB, 1 MiB 1.2 s and 1.4 GB.
const MaxFileSize = 256 << 10

// outsideError is returned by readSpecFile for a file that resolves
// outside the directory it must lie in.
type outsideError struct{ path, root string }

func (e *outsideError) Error() string {
	return fmt.Sprintf("%s resolves to a file outside %s", e.path, e.root)
}

// ReadFile reads a spec file as Kigumi reads every spec: only a regular
// file, within MaxFileSize, without blocking on a FIFO. For a spec that
// goes elsewhere, such as a lease request (ParseTenant does the rest).
func ReadFile(path string) ([]byte, error) { return readSpecFile(path, "") }

// readSpecFile reads the spec file path through the size cap MaxFileSize.
// Only a regular file is read: a FIFO, a device or a directory is refused
// without blocking, as is a larger file. When root is not empty, path must
// resolve (symlinks followed) to a file inside root; that is checked before
// the file is opened and again on the open file. The error never holds the
// file's content.
func readSpecFile(path, root string) ([]byte, error) {
	if root != "" && !within(root, path) {
		return nil, &outsideError{path: path, root: root}
	}
	// O_NONBLOCK: opening a FIFO must not wait for a writer. O_NOCTTY: a
	// terminal must not become the controlling one.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, fileKind(fi.Mode()))
	}
	if root != "" {
		// The file opened is the one checked, even if a path component
		// was swapped for a symlink in between.
		real, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
		if err != nil {
			return nil, fmt.Errorf("locate %s: %w", path, err)
		}
		if !within(root, real) {
			return nil, &outsideError{path: path, root: root}
		}
	}
	tooLarge := fmt.Errorf("%s is larger than the limit of %s for a spec file", path, humanize.IBytes(MaxFileSize))
	if fi.Size() > MaxFileSize {
		return nil, tooLarge
	}
	// The size may change while reading: read through the cap all the same.
	src, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(src) > MaxFileSize {
		return nil, tooLarge
	}
	return src, nil
}

// fileKind names the type of a file that is not regular.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file"
}

// readDetail explains a readSpecFile error for a diagnostic.
func readDetail(err error, root string) string {
	var outside *outsideError
	if errors.As(err, &outside) {
		return fmt.Sprintf("%v. A spec file must be a regular file inside %s; a symlink may only point to a file inside it.",
			err, filepath.Clean(root))
	}
	return fmt.Sprintf("%v.", err)
}

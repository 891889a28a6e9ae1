// Package stateseed fills a new instance's state from a seed: a directory
// or a tar archive of the host's artifacts.
//
// A seed holds directories, regular files and symlinks that stay inside
// it. Everything else is refused, and the whole seed with it, before
// anything is written: hardlinks (in a directory seed, a file with more
// than one link), device files, FIFOs and sockets, symlinks that are
// absolute or lead out of the seed, and tar entries whose names are
// absolute or climb out with "..". Setuid, setgid and sticky bits are
// neutralised: only the permission bits are kept. What is written is owned
// by the tenant, and the regular files' sizes together must fit the
// state's size.
package stateseed

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/dustin/go-humanize"

	"github.com/kigumi/kigumi/core/fstree"
)

// maxEntries bounds the entries of a seed.
const maxEntries = 1 << 20

// entry is one thing a seed makes, at a clean relative path.
type entry struct {
	name string
	kind fs.FileMode // 0 (a regular file), fs.ModeDir or fs.ModeSymlink
	perm fs.FileMode
	size int64
	// target is a symlink's target.
	target string
	// src is the host path of a directory seed's file.
	src string
}

// Fill empties dst, a new instance's state directory, and fills it from
// seed (a directory, or a file read as a tar archive), owned by uid and
// gid. limit caps the regular files' total size (0: no cap). A seed that
// holds anything refused (see the package doc) or that is too large is an
// error before dst is touched.
func Fill(ctx context.Context, dst, seed string, uid, gid int, limit int64) error {
	fi, err := os.Stat(seed)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	var entries []entry
	if fi.IsDir() {
		entries, err = scanDir(ctx, seed)
	} else if fi.Mode().IsRegular() {
		entries, err = scanTar(seed)
	} else {
		err = fmt.Errorf("%s is neither a directory nor a tar archive", seed)
	}
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	var total int64
	for _, e := range entries {
		total += e.size
	}
	if limit > 0 && total > limit {
		return fmt.Errorf("seed: %s holds %s of files, more than the state's size of %s", seed, humanize.IBytes(uint64(total)), humanize.IBytes(uint64(limit)))
	}
	if err := empty(ctx, dst); err != nil {
		return fmt.Errorf("seed: empty the state: %w", err)
	}
	root, err := os.OpenRoot(dst)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	defer root.Close()
	if fi.IsDir() {
		err = writeEntries(ctx, root, entries, uid, gid, nil)
	} else {
		err = writeTar(ctx, root, seed, entries, uid, gid)
	}
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	return nil
}

// empty removes everything in dir, which stays.
func empty(ctx context.Context, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := fstree.RemoveAll(ctx, filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// scanDir lists the directory seed's entries, without following symlinks.
func scanDir(ctx context.Context, seed string) ([]entry, error) {
	var entries []entry
	err := filepath.WalkDir(seed, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == seed {
			return nil
		}
		rel, err := filepath.Rel(seed, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := entry{name: filepath.ToSlash(rel), perm: fi.Mode().Perm(), src: p}
		switch m := fi.Mode(); {
		case m.IsDir():
			e.kind = fs.ModeDir
		case m.IsRegular():
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
				return fmt.Errorf("%q is a hardlink (%d links): a seed holds no hardlinks", e.name, st.Nlink)
			}
			e.size = fi.Size()
		case m&fs.ModeSymlink != 0:
			e.kind = fs.ModeSymlink
			if e.target, err = os.Readlink(p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%q is a %s: a seed holds only directories, files and symlinks", e.name, kindName(m))
		}
		if err := check(&e); err != nil {
			return err
		}
		if entries = append(entries, e); len(entries) > maxEntries {
			return fmt.Errorf("more than %d entries", maxEntries)
		}
		return nil
	})
	return entries, err
}

// scanTar lists a tar seed's entries (a first pass over the archive).
func scanTar(seed string) ([]entry, error) {
	f, err := os.Open(seed)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var entries []entry
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return entries, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s is not a tar archive: %w", seed, err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue // settings of the archive, not an entry
		}
		e := entry{name: h.Name, perm: fs.FileMode(h.Mode).Perm()}
		switch h.Typeflag {
		case tar.TypeDir:
			e.kind = fs.ModeDir
		case tar.TypeReg, tar.TypeRegA:
			e.size = h.Size
		case tar.TypeSymlink:
			e.kind, e.target = fs.ModeSymlink, h.Linkname
		case tar.TypeLink:
			return nil, fmt.Errorf("%q is a hardlink: a seed holds no hardlinks", h.Name)
		default:
			return nil, fmt.Errorf("%q is a %s: a seed holds only directories, files and symlinks", h.Name, tarKindName(h.Typeflag))
		}
		if err := check(&e); err != nil {
			return nil, err
		}
		if entries = append(entries, e); len(entries) > maxEntries {
			return nil, fmt.Errorf("more than %d entries", maxEntries)
		}
	}
}

// check cleans e's name and refuses a name or a symlink that leads out of
// the seed.
func check(e *entry) error {
	name := path.Clean(strings.TrimSuffix(e.name, "/"))
	if path.IsAbs(e.name) || name == "." || name == ".." || strings.HasPrefix(name, "../") || strings.ContainsRune(name, 0) {
		return fmt.Errorf("%q is not a path inside the seed", e.name)
	}
	e.name = name
	if e.kind == fs.ModeSymlink {
		t := path.Clean(path.Join(path.Dir(name), e.target))
		if path.IsAbs(e.target) || t == ".." || strings.HasPrefix(t, "../") || strings.ContainsRune(e.target, 0) {
			return fmt.Errorf("%q is a symlink to %q, outside the seed", e.name, e.target)
		}
	}
	return nil
}

// writeEntries makes entries in root, owned by uid and gid: a file's
// content comes from its src, or from next (a tar seed's current entry).
func writeEntries(ctx context.Context, root *os.Root, entries []entry, uid, gid int, next func() io.Reader) error {
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := mkParents(root, path.Dir(e.name), uid, gid); err != nil {
			return err
		}
		if err := writeEntry(root, e, next); err != nil {
			return err
		}
		if err := chown(root, e.name, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// chown makes name owned by uid and gid, unless this process is them
// (tenant users off), which owns it already.
func chown(root *os.Root, name string, uid, gid int) error {
	if uid == os.Getuid() && gid == os.Getgid() {
		return nil
	}
	return root.Lchown(name, uid, gid)
}

// mkParents makes the directories of dir that are missing, owned by uid
// and gid: a tar may hold a file before (or without) its directory.
func mkParents(root *os.Root, dir string, uid, gid int) error {
	if dir == "." {
		return nil
	}
	if err := mkParents(root, path.Dir(dir), uid, gid); err != nil {
		return err
	}
	err := root.Mkdir(dir, 0o755)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return chown(root, dir, uid, gid)
}

func writeEntry(root *os.Root, e entry, next func() io.Reader) error {
	switch e.kind {
	case fs.ModeDir:
		if err := root.Mkdir(e.name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		return root.Chmod(e.name, e.perm)
	case fs.ModeSymlink:
		return root.Symlink(e.target, e.name)
	}
	var src io.Reader
	if next != nil {
		src = next()
	} else {
		f, err := os.OpenFile(e.src, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		src = f
	}
	out, err := root.OpenFile(e.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	// No more than was counted: a file that grew since is cut short.
	_, err = io.Copy(out, io.LimitReader(src, e.size))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return root.Chmod(e.name, e.perm)
}

// writeTar makes the entries of the tar seed, read a second time.
func writeTar(ctx context.Context, root *os.Root, seed string, entries []entry, uid, gid int) error {
	f, err := os.Open(seed)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	next := func() io.Reader { return tr }
	for _, e := range entries {
		h, err := tr.Next()
		for err == nil && h.Typeflag == tar.TypeXGlobalHeader {
			h, err = tr.Next()
		}
		if err != nil {
			return fmt.Errorf("read %s again: %w", seed, err)
		}
		if err := writeEntries(ctx, root, []entry{e}, uid, gid, next); err != nil {
			return err
		}
	}
	return nil
}

func kindName(m fs.FileMode) string {
	switch {
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

func tarKindName(t byte) string {
	switch t {
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "FIFO"
	}
	return fmt.Sprintf("tar entry of type %q", t)
}

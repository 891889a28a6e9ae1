package statefs

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/fstree"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/dirwalk"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/merkle"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/quotafs"
)

// checkpointMeta is a checkpoint's meta.json.
type checkpointMeta struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	Root      string    `json:"root"` // hex
	// Bytes and Inodes are the size of the copy, counted as Usage counts;
	// absent from checkpoints made before they were recorded.
	Bytes  int64 `json:"bytes,omitempty"`
	Inodes int64 `json:"inodes,omitempty"`
}

// checkpointDir is where the checkpoints of d's state are kept: in the
// state directory's root-owned parent, out of the tenant's reach.
func (d handleData) checkpointDir() string {
	return filepath.Join(filepath.Dir(d.Dir), ".checkpoints", filepath.Base(d.Dir))
}

// Usage reports the state's bytes (what quotafs.Charge charges each entry)
// and inodes (every entry below the top directory) against the handle's
// quotas: from the helper of a served FUSE state, which enforces them, or
// by scanning the files, in directory mode (which does not).
func (*FS) Usage(ctx context.Context, h sdk.Handle) (sdk.Usage, error) {
	d, err := open(h)
	if err != nil {
		return sdk.Usage{}, err
	}
	if _, alive := d.helper(); alive && d.Mode == modeFUSE {
		rep, err := ask(ctx, d, "usage")
		if err != nil {
			return sdk.Usage{}, sdk.Errorf(sdk.CodeInternal, "usage of %s: %w", d.Instance, err)
		}
		return sdk.Usage{Bytes: rep.Usage.Bytes, Inodes: rep.Usage.Entries, BytesLimit: rep.Usage.MaxBytes, InodesLimit: rep.Usage.MaxEntries}, nil
	}
	u := sdk.Usage{BytesLimit: d.Size, InodesLimit: d.Inodes}
	if u.InodesLimit == 0 {
		u.InodesLimit = defaultInodes(d.Size)
	}
	n, err := countTree(ctx, d.dataDir())
	if err != nil {
		return sdk.Usage{}, sdk.Errorf(sdk.CodeInternal, "usage of %s: %w", d.Instance, err)
	}
	u.Bytes, u.Inodes = n.Bytes, n.Inodes
	return u, nil
}

// Checkpoint copies the state directory to a new, root-only checkpoint
// named name, with its hash as the root digest. The instance should not
// write meanwhile (the engine freezes it): the copy is not atomic.
func (f *FS) Checkpoint(ctx context.Context, h sdk.Handle, name string) (sdk.Checkpoint, error) {
	d, err := open(h)
	if err != nil {
		return sdk.Checkpoint{}, err
	}
	if err := sdk.CheckCheckpointName(name); err != nil {
		return sdk.Checkpoint{}, err
	}
	dir := filepath.Join(d.checkpointDir(), name)
	if _, err := os.Lstat(dir); err == nil {
		return sdk.Checkpoint{}, sdk.InvalidAttribute("name", "state of %s already has a checkpoint %q", d.Instance, name)
	}
	if err := os.MkdirAll(d.checkpointDir(), 0o700); err != nil {
		return sdk.Checkpoint{}, sdk.Errorf(sdk.CodeInternal, "checkpoint %s: %w", d.Instance, err)
	}
	// Made under a temporary name and renamed once complete, so a crash
	// leaves no half checkpoint under the name.
	tmp, err := os.MkdirTemp(d.checkpointDir(), ".new-")
	if err != nil {
		return sdk.Checkpoint{}, sdk.Errorf(sdk.CodeInternal, "checkpoint %s: %w", d.Instance, err)
	}
	defer fstree.RemoveAll(context.WithoutCancel(ctx), tmp)
	if n, err := countTree(ctx, d.dataDir()); err != nil {
		return sdk.Checkpoint{}, sdk.Errorf(sdk.CodeInternal, "checkpoint %s: %w", d.Instance, err)
	} else if n.Depth > maxCopyDepth {
		return sdk.Checkpoint{}, sdk.Errorf(sdk.CodeInvalid, "checkpoint %s: its state is %d directories deep; a checkpoint copies states up to %d (more levels than a path within PATH_MAX can name)", d.Instance, n.Depth, maxCopyDepth)
	}
	size, err := copyTree(ctx, d.dataDir(), filepath.Join(tmp, "tree"))
	if err != nil {
		return sdk.Checkpoint{}, sdk.Errorf(sdk.CodeInternal, "checkpoint %s: %w", d.Instance, err)
	}
	sum, err := merkle.Scan(filepath.Join(tmp, "tree"))
	if err != nil {
		return sdk.Checkpoint{}, sdk.Errorf(sdk.CodeInternal, "checkpoint %s: %w", d.Instance, err)
	}
	cp := sdk.Checkpoint{Name: name, CreatedAt: time.Now().UTC(), Root: sum[:], Bytes: size.Bytes, Inodes: size.Inodes}
	meta, err := json.Marshal(checkpointMeta{Name: name, CreatedAt: cp.CreatedAt, Root: hex.EncodeToString(sum[:]), Bytes: size.Bytes, Inodes: size.Inodes})
	if err == nil {
		err = os.WriteFile(filepath.Join(tmp, "meta.json"), meta, 0o600)
	}
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		return sdk.Checkpoint{}, sdk.Errorf(sdk.CodeInternal, "checkpoint %s: %w", d.Instance, err)
	}
	return cp, nil
}

// Checkpoints lists the state's checkpoints, oldest first, each with
// where it is mounted, if it is.
func (*FS) Checkpoints(_ context.Context, h sdk.Handle) ([]sdk.Checkpoint, error) {
	d, err := open(h)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(d.checkpointDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, sdk.Errorf(sdk.CodeInternal, "checkpoints of %s: %w", d.Instance, err)
	}
	var list []sdk.Checkpoint
	for _, e := range entries {
		if sdk.CheckCheckpointName(e.Name()) != nil {
			continue // a checkpoint being made, or a rollback's staging
		}
		cp, err := readCheckpoint(filepath.Join(d.checkpointDir(), e.Name()))
		if err != nil {
			return nil, sdk.Errorf(sdk.CodeInternal, "checkpoints of %s: %w", d.Instance, err)
		}
		if mnt := d.checkpointMount(cp.Name); isMountPoint(mnt) {
			cp.Mount = mnt
		}
		list = append(list, cp)
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].CreatedAt.Before(list[j].CreatedAt) })
	return list, nil
}

func readCheckpoint(dir string) (sdk.Checkpoint, error) {
	b, err := os.ReadFile(filepath.Join(dir, "meta.json"))
	if err != nil {
		return sdk.Checkpoint{}, err
	}
	var m checkpointMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return sdk.Checkpoint{}, fmt.Errorf("%s: %w", dir, err)
	}
	root, err := hex.DecodeString(m.Root)
	if err != nil {
		return sdk.Checkpoint{}, fmt.Errorf("%s: %w", dir, err)
	}
	return sdk.Checkpoint{Name: m.Name, CreatedAt: m.CreatedAt, Root: root, Bytes: m.Bytes, Inodes: m.Inodes}, nil
}

// Rollback replaces the state directory's content with a copy of the
// checkpoint name. The copy is made next to the state and swapped in by
// renames, so the state is either the old or the checkpoint's. The
// instance must be stopped: a running one keeps the old directory open.
func (f *FS) Rollback(ctx context.Context, h sdk.Handle, name string) error {
	d, err := open(h)
	if err != nil {
		return err
	}
	src, err := d.findCheckpoint(name)
	if err != nil {
		return err
	}
	staging, err := os.MkdirTemp(d.checkpointDir(), ".rollback-")
	if err != nil {
		return sdk.Errorf(sdk.CodeInternal, "rollback %s: %w", d.Instance, err)
	}
	defer fstree.RemoveAll(context.WithoutCancel(ctx), staging)
	next, old := filepath.Join(staging, "next"), filepath.Join(staging, "old")
	if _, err := copyTree(ctx, filepath.Join(src, "tree"), next); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "rollback %s: %w", d.Instance, err)
	}
	// A served FUSE state is unmounted for the swap and served again.
	_, served := d.helper()
	if served {
		if err := d.stop(ctx); err != nil {
			return sdk.Errorf(sdk.CodeInternal, "rollback %s: %w", d.Instance, err)
		}
	}
	if err := os.Rename(d.dataDir(), old); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "rollback %s: %w", d.Instance, err)
	}
	if err := os.Rename(next, d.dataDir()); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "rollback %s: %w", d.Instance, errors.Join(err, os.Rename(old, d.dataDir())))
	}
	if served {
		if err := f.serve(ctx, d); err != nil {
			return sdk.Errorf(sdk.CodeInternal, "rollback %s: serve again: %w", d.Instance, err)
		}
	}
	return nil
}

// findCheckpoint returns the directory of d's checkpoint name, failing with
// CodeInvalid on a bad name and CodeNotFound when there is none.
func (d handleData) findCheckpoint(name string) (string, error) {
	if err := sdk.CheckCheckpointName(name); err != nil {
		return "", err
	}
	dir := filepath.Join(d.checkpointDir(), name)
	if _, err := readCheckpoint(dir); errors.Is(err, fs.ErrNotExist) {
		return "", sdk.Errorf(sdk.CodeNotFound, "state of %s has no checkpoint %q", d.Instance, name)
	} else if err != nil {
		return "", sdk.Errorf(sdk.CodeInternal, "checkpoint %q of %s: %w", name, d.Instance, err)
	}
	return dir, nil
}

// checkpointMounts is where d's checkpoints are mounted: next to the
// state, in its root-owned parent, out of the tenant's reach.
func (d handleData) checkpointMounts() string {
	return filepath.Join(filepath.Dir(d.Dir), ".mounts", filepath.Base(d.Dir))
}

func (d handleData) checkpointMount(name string) string {
	return filepath.Join(d.checkpointMounts(), name)
}

// MountCheckpoint bind-mounts the checkpoint's tree read-only (and nosuid,
// nodev, noexec) at .mounts/<instance directory>/<name> in the state
// directory's parent. A read-only mount refuses every write with EROFS,
// root's too; the checkpoint itself stays root-only. Mounting a mounted
// checkpoint returns its mount.
func (*FS) MountCheckpoint(_ context.Context, h sdk.Handle, name string) (sdk.Mount, error) {
	d, err := open(h)
	if err != nil {
		return sdk.Mount{}, err
	}
	src, err := d.findCheckpoint(name)
	if err != nil {
		return sdk.Mount{}, err
	}
	mnt := d.checkpointMount(name)
	m := sdk.Mount{Source: mnt, Type: sdk.MountBind, ReadOnly: true, Options: []string{"ro", "nosuid", "nodev", "noexec"}}
	if isMountPoint(mnt) {
		return m, nil
	}
	if err := os.MkdirAll(d.checkpointMounts(), 0o700); err != nil {
		return sdk.Mount{}, sdk.Errorf(sdk.CodeInternal, "mount checkpoint %q of %s: %w", name, d.Instance, err)
	}
	if err := os.Mkdir(mnt, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return sdk.Mount{}, sdk.Errorf(sdk.CodeInternal, "mount checkpoint %q of %s: %w", name, d.Instance, err)
	}
	// A bind mount takes its flags from its source; only a remount makes
	// it read-only.
	err = unix.Mount(filepath.Join(src, "tree"), mnt, "", unix.MS_BIND, "")
	if err == nil {
		if err = unix.Mount("", mnt, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			err = errors.Join(err, unix.Unmount(mnt, unix.MNT_DETACH))
		}
	}
	if err != nil {
		_ = os.Remove(mnt)
		return sdk.Mount{}, sdk.Errorf(sdk.CodeInternal, "mount checkpoint %q of %s: %w", name, d.Instance, err)
	}
	return m, nil
}

// UnmountCheckpoint unmounts the checkpoint (lazily, when it is busy) and
// removes its mount point.
func (*FS) UnmountCheckpoint(_ context.Context, h sdk.Handle, name string) error {
	d, err := open(h)
	if err != nil {
		return err
	}
	if _, err := d.findCheckpoint(name); err != nil {
		return err
	}
	if err := unmountDir(d.checkpointMount(name)); err != nil {
		return sdk.Errorf(sdk.CodeInternal, "unmount checkpoint %q of %s: %w", name, d.Instance, err)
	}
	return nil
}

// unmountCheckpoints unmounts every mounted checkpoint of d and removes
// their mount points.
func (d handleData) unmountCheckpoints() error {
	entries, err := os.ReadDir(d.checkpointMounts())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := unmountDir(filepath.Join(d.checkpointMounts(), e.Name())); err != nil {
			return err
		}
	}
	err = os.Remove(d.checkpointMounts())
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// unmountDir unmounts what is mounted at dir, if anything, then removes
// the directory dir (which must then be empty), if it is there.
func unmountDir(dir string) error {
	for isMountPoint(dir) {
		if err := unix.Unmount(dir, 0); err != nil {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				return fmt.Errorf("unmount %s: %w", dir, err)
			}
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// isMountPoint reports whether something is mounted at path: its mount id
// differs from its parent's. (A bind mount of the same filesystem keeps
// its device number, so devices cannot tell.)
func isMountPoint(path string) bool {
	var st, parent unix.Statx_t
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_DONT_SYNC
	if unix.Statx(unix.AT_FDCWD, path, flags, unix.STATX_MNT_ID, &st) != nil ||
		unix.Statx(unix.AT_FDCWD, filepath.Dir(path), flags, unix.STATX_MNT_ID, &parent) != nil {
		return false
	}
	return st.Mask&unix.STATX_MNT_ID != 0 && st.Mnt_id != parent.Mnt_id
}

// treeSize is the size of a tree, counted as the quota counts (what
// quotafs.Charge charges each inode, once, and every name), and how many
// directories deep it is.
type treeSize struct {
	Bytes, Inodes int64
	Depth         int
}

// maxCopyDepth is how deep a tree copyTree copies: the most levels a path
// within PATH_MAX names. copyTree resolves each path from the top, so its
// cost grows with the square of the depth; countTree, which holds a
// bounded number of descriptors at any depth, measures it first.
const maxCopyDepth = unix.PathMax / 2

// countTree counts the tree below dir (dirwalk: any depth), which its
// instance may be changing meanwhile (directory mode's Usage).
func countTree(ctx context.Context, dir string) (treeSize, error) {
	var n treeSize
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return n, err
	}
	defer unix.Close(fd)
	seen := map[uint64]bool{}
	err = dirwalk.WalkLive(fd, func(d *dirwalk.Dir, _ int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		n.Depth = max(n.Depth, d.Depth)
		for i := range d.Entries {
			e := &d.Entries[i]
			n.Inodes++
			if !seen[e.Ino] {
				seen[e.Ino] = true
				n.Bytes += quotafs.Charge(e.Mode, e.Size, e.Blocks)
			}
			e.Descend = e.Mode&unix.S_IFMT == unix.S_IFDIR
		}
		return nil
	}, nil)
	return n, err
}

// copyTree copies the tree at src to dst, which must not exist:
// directories, regular files (a file of several names as one, linked),
// symlinks (never followed) and FIFOs, with their modes and owners.
// Sockets and devices are left out. Reads stay inside src. It returns the
// size of what it copied.
func copyTree(ctx context.Context, src, dst string) (treeSize, error) {
	var size treeSize
	root, err := os.OpenRoot(src)
	if err != nil {
		return size, err
	}
	defer root.Close()
	// A file's other names are linked to its first copy, as the quota
	// counts its bytes once: copied apart, a file of many names would
	// take its size as many times on the host's disk.
	copied := map[uint64]string{}
	err = fs.WalkDir(root.FS(), ".", func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := root.Lstat(path)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		to := filepath.Join(dst, path)
		if path != "." && (fi.Mode().IsDir() || fi.Mode().IsRegular() || fi.Mode()&(fs.ModeSymlink|fs.ModeNamedPipe) != 0) {
			size.Inodes++
			if _, again := copied[st.Ino]; !again {
				size.Bytes += quotafs.Charge(st.Mode, st.Size, st.Blocks)
			}
		}
		switch mode := fi.Mode(); {
		case mode.IsDir():
			if err := os.Mkdir(to, 0o700); err != nil {
				return err
			}
		case mode.IsRegular() && copied[st.Ino] != "":
			return os.Link(copied[st.Ino], to)
		case mode.IsRegular():
			if err := copyFile(root, path, to); err != nil {
				return err
			}
			if st.Nlink > 1 {
				copied[st.Ino] = to
			}
		case mode&fs.ModeSymlink != 0:
			target, err := root.Readlink(path)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, to); err != nil {
				return err
			}
			return os.Lchown(to, int(st.Uid), int(st.Gid))
		case mode&fs.ModeNamedPipe != 0:
			if err := unix.Mkfifo(to, 0o600); err != nil {
				return err
			}
		default:
			return nil
		}
		if err := os.Lchown(to, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		return os.Chmod(to, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky))
	})
	return size, err
}

// copyFile copies the regular file path of root to the new file to.
func copyFile(root *os.Root, path, to string) error {
	in, err := root.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	if fi, err := in.Stat(); err != nil || !fi.Mode().IsRegular() {
		return errors.Join(err, fmt.Errorf("%s changed while copying", path))
	}
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

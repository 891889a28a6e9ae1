// Package quotafs is a FUSE filesystem over a backing directory that lets
// in only a given set of uids (and root), enforces a byte and an entry
// quota, and keeps the tree's Merkle root (package merkle) up to date.
//
// The server runs as root and does every operation relative to file
// descriptors, never through full paths: each call opens the parent
// directory from the backing root with openat2 (no symlinks, no mount
// crossings, never above the root), in chunks shorter than PATH_MAX, so
// paths up to PATH_MAX inside the mount work even though the backing path
// is longer.
//
// Permissions: the mount uses default_permissions, so the kernel checks
// permission bits, ownership, sticky bits and the rename rules (write
// permission on both parents, and on a directory moved to a new parent)
// against the attributes the server returns. On top of that every call
// checks the caller's uid against the allowed set, so that no other uid
// enters, whatever the mode bits say. New entries are owned by the caller
// (the group of a set-group-ID parent, which a new directory inherits).
// SUID is cleared, and SGID when group-executable, on a write or truncate
// by anyone but root and on any chown of a non-directory.
//
// Quota: bytes are the apparent sizes of regular files and symlink targets,
// counted once per inode; entries are the names below the top directory. A
// write, truncate or fallocate past the byte quota, or a new name past the
// entry quota, fails with ENOSPC (a write that partly fits is cut short);
// deleting gives room back. The backing tree is scanned once when the
// filesystem starts. fallocate supports only mode 0.
//
// I/O rates: reads and writes wait for the tokens of their bytes and of
// one operation in token buckets (Rates), so the limits hold for buffered
// I/O too, which cgroup v1's blkio controller does not throttle.
package quotafs

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/fusemount"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/dirwalk"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/merkle"
)

// Config describes a filesystem.
type Config struct {
	// Backing is the directory the files are kept in.
	Backing string
	// UIDs may enter, besides root.
	UIDs []uint32
	// UIDRanges may enter too: the tenant's subordinate uids, which its
	// containers' uids map to.
	UIDRanges []UIDRange
	// MaxBytes and MaxEntries are the quotas; 0 means none.
	MaxBytes, MaxEntries int64
	// IO limits the rates of reads and writes.
	IO Rates
}

// UIDRange is Count uids from First.
type UIDRange struct {
	First, Count uint32
}

// FS is a filesystem over a backing directory.
type FS struct {
	uids    []uint32
	ranges  []UIDRange
	rootFd  int
	rootIno uint64
	usage   *usage
	tree    *merkle.Tree
	io      throttle
	// ns serializes the calls that change names, which keeps the entry
	// accounting exact.
	ns sync.Mutex
	// data is held shared by the calls that change content, and
	// exclusively while the Merkle root is computed.
	data sync.RWMutex
}

// Open opens the backing directory and counts what it holds.
func Open(cfg Config) (*FS, error) {
	fd, err := unix.Open(cfg.Backing, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", cfg.Backing, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := &FS{uids: slices.Clone(cfg.UIDs), ranges: slices.Clone(cfg.UIDRanges), rootFd: fd, rootIno: st.Ino, usage: newUsage(cfg.MaxBytes, cfg.MaxEntries), tree: merkle.New(fd), io: newThrottle(cfg.IO)}
	if err := f.scan(fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("count %s: %w", cfg.Backing, err)
	}
	return f, nil
}

// scan counts the entries below the directory fd and what each is
// charged (Charge). The walk holds a bounded number of descriptors, so a
// tree deeper than RLIMIT_NOFILE is counted too.
func (f *FS) scan(fd int) error {
	return dirwalk.Walk(fd, func(d *dirwalk.Dir, _ int) error {
		for i := range d.Entries {
			e := &d.Entries[i]
			f.usage.entries++
			switch e.Mode & unix.S_IFMT {
			case unix.S_IFREG, unix.S_IFLNK:
				if _, seen := f.usage.sizes[e.Ino]; !seen {
					f.usage.sizes[e.Ino] = Charge(e.Mode, e.Size, e.Blocks)
					f.usage.bytes += f.usage.sizes[e.Ino]
				}
			case unix.S_IFDIR:
				f.usage.sizes[e.Ino] = dirBytes
				f.usage.bytes += dirBytes
				e.Descend = true
			}
		}
		return nil
	}, nil)
}

// Close closes the backing directory. Call it after the server ended.
func (f *FS) Close() error { return unix.Close(f.rootFd) }

// Usage returns the use of the quotas.
func (f *FS) Usage() Usage { return f.usage.get() }

// Root returns the tree's Merkle root. Changes wait meanwhile.
func (f *FS) Root() (merkle.Digest, error) {
	f.ns.Lock()
	defer f.ns.Unlock()
	f.data.Lock()
	defer f.data.Unlock()
	return f.tree.Root()
}

// cacheTimeout is how long the kernel may cache entries and attributes.
// Every change goes through the mount, which keeps the cache right.
const cacheTimeout = time.Second

// Mounted is a mounted filesystem and its server.
type Mounted struct {
	srv *fuse.Server
	dir string
	// Mount is the mount, as /proc/self/mountinfo showed it just after
	// mount(2): its id and device tell it from whatever is mounted at dir
	// later, without a stat of dir (which a dead server would hang).
	Mount fusemount.Mount
}

// Unmount unmounts the filesystem (not lazily); Wait then returns once the
// server has ended.
func (m *Mounted) Unmount() error {
	if err := unix.Unmount(m.dir, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", m.dir, err)
	}
	return nil
}

// Wait waits until the server has ended: the mount is gone and no longer
// used.
func (m *Mounted) Wait() { m.srv.Wait() }

// Mount mounts the filesystem at dir (as root, with mount(2)) and serves
// it in the background; the server ends when the mount goes.
//
// It opens /dev/fuse close-on-exec and mounts it itself (go-fuse's direct
// mount leaves the descriptor inheritable, so any program a process
// starts would hold the connection open after the server died), then
// hands go-fuse the descriptor as /dev/fd/N. Nothing here touches the
// new mount from this process: a request to its own mount that a killed
// server leaves unanswered keeps the process from ever exiting (that
// thread waits uninterruptibly), and with it the connection alive; this
// is also why go-fuse's poll probe, skipped for /dev/fd/N, is not wanted.
// No poll is ever answered but with ENOSYS.
func (f *FS) Mount(dir string) (*Mounted, error) {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	const maxWrite = 1 << 20
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=%d,group_id=%d,max_read=%d,default_permissions,allow_other", fd, unix.Geteuid(), unix.Getegid(), maxWrite)
	if err := unix.Mount(fsName, dir, "fuse."+fsType, unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	fail := func(err error) (*Mounted, error) {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		unix.Close(fd)
		return nil, err
	}
	ms, err := fusemount.At(dir)
	if err != nil {
		return fail(err)
	}
	if len(ms) == 0 || ms[len(ms)-1].FSType != "fuse."+fsType {
		return fail(fmt.Errorf("mount %s: not in mountinfo after mount(2)", dir))
	}
	top := ms[len(ms)-1]
	timeout := cacheTimeout
	root := &node{fsys: f}
	srv, err := fs.Mount("/dev/fd/"+strconv.Itoa(fd), root, &fs.Options{
		EntryTimeout:   &timeout,
		AttrTimeout:    &timeout,
		RootStableAttr: &fs.StableAttr{Ino: f.rootIno},
		MountOptions: fuse.MountOptions{
			FsName:        fsName,
			Name:          fsType,
			DisableXAttrs: true,
			MaxWrite:      maxWrite,
		},
	})
	if err != nil {
		return fail(fmt.Errorf("serve %s: %w", dir, err))
	}
	return &Mounted{srv: srv, dir: dir, Mount: top}, nil
}

// fsName and fsType name the mounts in mountinfo: "fuse.kigumi" mounts of
// source "kigumi-state".
const (
	fsName = "kigumi-state"
	fsType = "kigumi"
)

// check returns the caller when it may enter, or EACCES.
func (f *FS) check(ctx context.Context) (*fuse.Caller, syscall.Errno) {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return nil, syscall.EACCES
	}
	if c.Uid == 0 || slices.Contains(f.uids, c.Uid) {
		return c, 0
	}
	for _, r := range f.ranges {
		if c.Uid >= r.First && uint64(c.Uid) < uint64(r.First)+uint64(r.Count) {
			return c, 0
		}
	}
	return nil, syscall.EACCES
}

// openDir opens the directory at rel (relative to the root, "" for the
// root) with flags, resolving no symlinks and never leaving the root. A
// path longer than a chunk is opened one chunk at a time.
func (f *FS) openDir(rel string, flags uint64) (int, syscall.Errno) {
	const chunk = 2048
	how := &unix.OpenHow{Flags: flags | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_XDEV | unix.RESOLVE_NO_MAGICLINKS}
	if rel == "" {
		rel = "."
	}
	dir := f.rootFd
	for {
		part := rel
		if len(rel) > chunk {
			i := strings.LastIndexByte(rel[:chunk], '/')
			if i <= 0 {
				i = strings.IndexByte(rel, '/')
			}
			if i > 0 {
				part = rel[:i]
			}
		}
		partHow := *how
		if part != rel {
			partHow.Flags = unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC
		}
		fd, err := unix.Openat2(dir, part, &partHow)
		if dir != f.rootFd {
			unix.Close(dir)
		}
		if err != nil {
			return -1, fs.ToErrno(err)
		}
		if part == rel {
			return fd, 0
		}
		dir, rel = fd, rel[len(part)+1:]
	}
}

// node is a file, directory or other entry of the tree.
type node struct {
	fs.Inode
	fsys *FS
	// priv is set when the file was last seen with SUID or SGID, so a
	// write checks whether to clear them.
	priv atomic.Bool
}

var (
	_ fs.NodeLookuper   = (*node)(nil)
	_ fs.NodeGetattrer  = (*node)(nil)
	_ fs.NodeSetattrer  = (*node)(nil)
	_ fs.NodeCreater    = (*node)(nil)
	_ fs.NodeOpener     = (*node)(nil)
	_ fs.NodeMkdirer    = (*node)(nil)
	_ fs.NodeMknoder    = (*node)(nil)
	_ fs.NodeUnlinker   = (*node)(nil)
	_ fs.NodeRmdirer    = (*node)(nil)
	_ fs.NodeRenamer    = (*node)(nil)
	_ fs.NodeLinker     = (*node)(nil)
	_ fs.NodeSymlinker  = (*node)(nil)
	_ fs.NodeReadlinker = (*node)(nil)
	_ fs.NodeReaddirer  = (*node)(nil)
	_ fs.NodeOpendirer  = (*node)(nil)
	_ fs.NodeStatfser   = (*node)(nil)
	_ fs.NodeAccesser   = (*node)(nil)
	_ fs.NodeFsyncer    = (*node)(nil)
)

// ino returns the node's backing inode number.
func (n *node) ino() uint64 { return n.StableAttr().Ino }

// path returns the node's path relative to the root.
func (n *node) path() string { return n.Path(nil) }

// dir opens the node, a directory, as an O_PATH descriptor.
func (n *node) dir() (int, syscall.Errno) { return n.fsys.openDir(n.path(), unix.O_PATH) }

// loc opens the node's parent directory and returns it with the node's
// name; the root has none, and gets its own descriptor and ".".
func (n *node) loc() (int, string, syscall.Errno) {
	if n.IsRoot() {
		fd, errno := n.fsys.openDir("", unix.O_PATH)
		return fd, ".", errno
	}
	name, parent := n.Parent()
	if parent == nil {
		return -1, "", syscall.ENOENT // removed
	}
	fd, errno := parent.Operations().(*node).dir()
	return fd, name, errno
}

// stat stats the node.
func (n *node) stat(st *unix.Stat_t) syscall.Errno {
	if n.IsRoot() {
		return fs.ToErrno(unix.Fstat(n.fsys.rootFd, st))
	}
	dfd, name, errno := n.loc()
	if errno != 0 {
		return errno
	}
	defer unix.Close(dfd)
	return fs.ToErrno(unix.Fstatat(dfd, name, st, unix.AT_SYMLINK_NOFOLLOW))
}

// fill copies st to out and notes the SUID/SGID bits.
func (n *node) fill(st *unix.Stat_t, out *fuse.Attr) {
	var sst syscall.Stat_t
	sst.Ino, sst.Mode, sst.Nlink, sst.Uid, sst.Gid = st.Ino, st.Mode, st.Nlink, st.Uid, st.Gid
	sst.Size, sst.Blocks, sst.Blksize, sst.Rdev = st.Size, st.Blocks, st.Blksize, st.Rdev
	sst.Atim = syscall.Timespec(st.Atim)
	sst.Mtim = syscall.Timespec(st.Mtim)
	sst.Ctim = syscall.Timespec(st.Ctim)
	out.FromStat(&sst)
	n.priv.Store(st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0)
}

// child makes the node of the entry st below n.
func (n *node) child(ctx context.Context, st *unix.Stat_t, out *fuse.EntryOut) *fs.Inode {
	c := &node{fsys: n.fsys}
	in := n.NewInode(ctx, c, fs.StableAttr{Mode: st.Mode & unix.S_IFMT, Ino: st.Ino})
	in.Operations().(*node).fill(st, &out.Attr)
	return in
}

// Lookup finds the entry name.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if _, errno := n.fsys.check(ctx); errno != 0 {
		return nil, errno
	}
	dfd, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.child(ctx, &st, out), 0
}

// Access lets the allowed callers through; the kernel checks the mode.
func (n *node) Access(ctx context.Context, _ uint32) syscall.Errno {
	_, errno := n.fsys.check(ctx)
	return errno
}

// Getattr stats the node, through its open file when there is one.
func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if _, errno := n.fsys.check(ctx); errno != 0 {
		return errno
	}
	var st unix.Stat_t
	if h, ok := fh.(*handle); ok {
		if err := unix.Fstat(h.fd, &st); err != nil {
			return fs.ToErrno(err)
		}
	} else if errno := n.stat(&st); errno != 0 {
		return errno
	}
	n.fill(&st, &out.Attr)
	return 0
}

// killPriv clears SUID, and SGID when group-executable, from the regular
// file open as fd (or at dfd/name when fd < 0).
func killPriv(fd, dfd int, name string) syscall.Errno {
	var st unix.Stat_t
	var err error
	if fd >= 0 {
		err = unix.Fstat(fd, &st)
	} else {
		err = unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0
	}
	mode := st.Mode &^ unix.S_ISUID
	if mode&unix.S_IXGRP != 0 {
		mode &^= unix.S_ISGID
	}
	if mode == st.Mode {
		return 0
	}
	if fd >= 0 {
		return fs.ToErrno(unix.Fchmod(fd, mode&07777))
	}
	return fs.ToErrno(unix.Fchmodat(dfd, name, mode&07777, 0))
}

// Setattr changes mode, owner, size and times. The kernel has checked the
// caller's right to.
func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	c, errno := n.fsys.check(ctx)
	if errno != 0 {
		return errno
	}
	h, _ := fh.(*handle)
	dfd, name, errno := n.loc()
	if errno != 0 && h == nil {
		return errno
	}
	if dfd >= 0 {
		defer unix.Close(dfd)
	}
	fd := -1
	if h != nil {
		fd = h.fd
	}
	if mode, ok := in.GetMode(); ok {
		var err error
		if fd >= 0 {
			err = unix.Fchmod(fd, mode&07777)
		} else {
			err = unix.Fchmodat(dfd, name, mode&07777, 0)
		}
		if err != nil {
			return fs.ToErrno(err)
		}
		n.fsys.tree.Meta(n.ino())
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		var err error
		if fd >= 0 {
			err = unix.Fchown(fd, u, g)
		} else {
			err = unix.Fchownat(dfd, name, u, g, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return fs.ToErrno(err)
		}
		if errno := killPriv(fd, dfd, name); errno != 0 {
			return errno
		}
		n.fsys.tree.Meta(n.ino())
	}
	if size, ok := in.GetSize(); ok {
		if errno := n.truncate(c, fd, dfd, name, int64(size)); errno != 0 {
			return errno
		}
	}
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if mok || aok {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if aok {
			ts[0] = unix.NsecToTimespec(atime.UnixNano())
		}
		if mok {
			ts[1] = unix.NsecToTimespec(mtime.UnixNano())
		}
		var err error
		if fd >= 0 {
			err = unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), ts, 0)
		} else {
			err = unix.UtimesNanoAt(dfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
		}
		if err != nil {
			return fs.ToErrno(err)
		}
	}
	var st unix.Stat_t
	var err error
	if fd >= 0 {
		err = unix.Fstat(fd, &st)
	} else {
		err = unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	n.fill(&st, &out.Attr)
	return 0
}

// truncate sets the size of the regular file (open as fd, or at
// dfd/name), within the quota.
func (n *node) truncate(c *fuse.Caller, fd, dfd int, name string, size int64) syscall.Errno {
	f := n.fsys
	f.data.RLock()
	defer f.data.RUnlock()
	if fd < 0 {
		var err error
		fd, err = unix.Openat(dfd, name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return fs.ToErrno(err)
		}
		defer unix.Close(fd)
	}
	ino := n.ino()
	if size > f.usage.size(ino) {
		if f.usage.grow(ino, size) < size {
			f.settle(ino, fd)
			return syscall.ENOSPC
		}
	}
	err := unix.Ftruncate(fd, size)
	f.settle(ino, fd)
	if err != nil {
		return fs.ToErrno(err)
	}
	f.tree.Resized(ino, size)
	if c.Uid != 0 {
		return killPriv(fd, -1, "")
	}
	return 0
}

// settle sets the accounted size of ino to its real size.
func (f *FS) settle(ino uint64, fd int) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil {
		f.usage.set(ino, st.Size)
	}
}

// fresh tells the Merkle tree that ino is a new inode: the number may be
// that of a removed file or directory whose digest the tree still holds.
func (f *FS) fresh(ino uint64) { f.tree.Changed(ino) }

// owner returns the uid, gid and mode a new entry made by c in the
// directory dfd gets: a set-group-ID directory passes on its group (and,
// to a new directory, the bit itself); SGID is dropped from a file whose
// group the caller is not in.
func owner(c *fuse.Caller, dfd int, mode uint32, isDir bool) (int, int, uint32, syscall.Errno) {
	var pst unix.Stat_t
	if err := unix.Fstat(dfd, &pst); err != nil {
		return 0, 0, 0, fs.ToErrno(err)
	}
	gid := c.Gid
	if pst.Mode&unix.S_ISGID != 0 {
		gid = pst.Gid
		if isDir {
			mode |= unix.S_ISGID
		}
	}
	if !isDir && c.Uid != 0 && gid != c.Gid {
		mode &^= unix.S_ISGID
	}
	return int(c.Uid), int(gid), mode & 07777, 0
}

// Create makes and opens a regular file.
func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	c, errno := n.fsys.check(ctx)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	f := n.fsys
	f.ns.Lock()
	defer f.ns.Unlock()
	dfd, errno := n.dir()
	if errno != 0 {
		return nil, nil, 0, errno
	}
	defer unix.Close(dfd)
	uid, gid, mode, errno := owner(c, dfd, mode, false)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	if errno := f.usage.addEntry(0); errno != 0 {
		return nil, nil, 0, errno
	}
	fd, err := unix.Openat(dfd, name, openFlags(flags)|unix.O_CREAT|unix.O_EXCL, 0)
	if err != nil {
		f.usage.undoEntry(0)
		return nil, nil, 0, fs.ToErrno(err)
	}
	// Owner first: a chown would clear SUID and SGID.
	err = unix.Fchown(fd, uid, gid)
	if err == nil {
		err = unix.Fchmod(fd, mode)
	}
	var st unix.Stat_t
	if err == nil {
		err = unix.Fstat(fd, &st)
	}
	if err != nil {
		unix.Close(fd)
		unix.Unlinkat(dfd, name, 0)
		f.usage.undoEntry(0)
		return nil, nil, 0, fs.ToErrno(err)
	}
	f.usage.bind(st.Ino, 0)
	f.fresh(st.Ino)
	f.tree.Changed(n.ino())
	in := n.child(ctx, &st, out)
	return in, f.newHandle(in.Operations().(*node), fd), openOut(flags), 0
}

// openOut returns the flags of a file opened with flags. Every change to a
// file's content goes through this mount, which keeps the kernel's page
// cache right, so the cache is kept from one open to the next
// (FOPEN_KEEP_CACHE): a warm read is served from memory without asking the
// server (nor waiting for the read rate, as no disk is read).
//
// A write-only open bypasses that cache (FOPEN_DIRECT_IO): its writes reach
// the server straight from the writer's pages instead of being copied into
// the mount's page cache first, a copy (and a second cached copy of the
// data, next to the backing file's) that nothing can read through a
// write-only descriptor, which cannot be mapped either. The kernel drops
// the cached pages a direct write overwrites, so readers stay coherent
// (TestWriteOnlyCoherent). On the sequential write benchmark this is about
// a third faster.
//
// FOPEN_NOFLUSH is not set: the FLUSH that close waits for keeps the
// release of a closed file (which the kernel sends after close returns)
// close behind, so that removing a file just written gives its bytes back
// at once.
func openOut(flags uint32) uint32 {
	if flags&unix.O_ACCMODE == unix.O_WRONLY {
		return fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_DIRECT_IO
	}
	return fuse.FOPEN_KEEP_CACHE
}

// openFlags returns the backing open flags for the caller's flags. The
// kernel computes append offsets itself, so O_APPEND is not passed on (on
// Linux it would make pwrite ignore the offset); O_TRUNC is done apart,
// to account for it.
func openFlags(flags uint32) int {
	return int(flags)&^(unix.O_APPEND|unix.O_TRUNC|unix.O_CREAT|unix.O_EXCL|unix.O_DIRECT|unix.O_NOCTTY) | unix.O_NOFOLLOW | unix.O_CLOEXEC
}

// Open opens a regular file.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	c, errno := n.fsys.check(ctx)
	if errno != 0 {
		return nil, 0, errno
	}
	dfd, name, errno := n.loc()
	if errno != 0 {
		return nil, 0, errno
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, name, openFlags(flags), 0)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	h := n.fsys.newHandle(n, fd)
	if flags&unix.O_TRUNC != 0 {
		if errno := n.truncate(c, fd, -1, "", 0); errno != 0 {
			h.Release(ctx)
			return nil, 0, errno
		}
	}
	return h, openOut(flags), 0
}

// made finishes a new entry made at dfd/name: it sets its owner and mode,
// and returns its node.
func (n *node) made(ctx context.Context, dfd int, name string, uid, gid int, mode uint32, size int64, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fsys
	err := unix.Fchownat(dfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
	var st unix.Stat_t
	if err == nil {
		err = unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err == nil && st.Mode&unix.S_IFMT != unix.S_IFLNK {
		err = unix.Fchmodat(dfd, name, mode, 0)
		if err == nil {
			err = unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		}
	}
	// A symlink whose target does not fit in its inode takes a block of
	// its own: it is charged that, once made, if the quota has room.
	if err == nil && charge(&st) > size {
		f.usage.bind(st.Ino, size)
		if f.usage.grow(st.Ino, charge(&st)) < charge(&st) {
			f.usage.set(st.Ino, size) // gives back what grow could reserve
			err = syscall.ENOSPC
		}
	}
	if err != nil {
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR)
		} else {
			unix.Unlinkat(dfd, name, 0)
		}
		f.usage.undoEntry(size)
		f.usage.unbind(st.Ino)
		return nil, fs.ToErrno(err)
	}
	if size > 0 || st.Mode&unix.S_IFMT == unix.S_IFREG {
		f.usage.bind(st.Ino, max(size, charge(&st)))
	}
	f.fresh(st.Ino)
	f.tree.Changed(n.ino())
	return n.child(ctx, &st, out), 0
}

// Mkdir makes a directory.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, errno := n.fsys.check(ctx)
	if errno != 0 {
		return nil, errno
	}
	return n.makeEntry(ctx, c, name, mode, true, func(dfd int) error { return unix.Mkdirat(dfd, name, 0o700) }, out)
}

// Mknod makes a FIFO, socket or empty regular file; devices are refused.
func (n *node) Mknod(ctx context.Context, name string, mode, _ uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, errno := n.fsys.check(ctx)
	if errno != 0 {
		return nil, errno
	}
	typ := mode & unix.S_IFMT
	if typ != unix.S_IFIFO && typ != unix.S_IFSOCK && typ != unix.S_IFREG {
		return nil, syscall.EPERM
	}
	return n.makeEntry(ctx, c, name, mode, false, func(dfd int) error { return unix.Mknodat(dfd, name, typ|0o600, 0) }, out)
}

// makeEntry makes the empty entry name with mk, for the caller c, who may
// enter: it counts against the entry quota, and gets the owner and mode a
// new entry of the caller's gets.
func (n *node) makeEntry(ctx context.Context, c *fuse.Caller, name string, mode uint32, isDir bool, mk func(dfd int) error, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	f := n.fsys
	f.ns.Lock()
	defer f.ns.Unlock()
	dfd, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(dfd)
	uid, gid, perm, errno := owner(c, dfd, mode, isDir)
	if errno != 0 {
		return nil, errno
	}
	var size int64
	if isDir {
		size = dirBytes
	}
	if errno := f.usage.addEntry(size); errno != 0 {
		return nil, errno
	}
	if err := mk(dfd); err != nil {
		f.usage.undoEntry(size)
		return nil, fs.ToErrno(err)
	}
	return n.made(ctx, dfd, name, uid, gid, perm, size, out)
}

// Symlink makes a symlink; its target counts against the byte quota.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	c, errno := n.fsys.check(ctx)
	if errno != 0 {
		return nil, errno
	}
	f := n.fsys
	f.ns.Lock()
	defer f.ns.Unlock()
	dfd, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(dfd)
	uid, gid, _, errno := owner(c, dfd, 0, false)
	if errno != 0 {
		return nil, errno
	}
	size := int64(len(target))
	if errno := f.usage.addEntry(size); errno != 0 {
		return nil, errno
	}
	if err := unix.Symlinkat(target, dfd, name); err != nil {
		f.usage.undoEntry(size)
		return nil, fs.ToErrno(err)
	}
	return n.made(ctx, dfd, name, uid, gid, 0, size, out)
}

// Link makes a hard link to target.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if _, errno := n.fsys.check(ctx); errno != 0 {
		return nil, errno
	}
	f := n.fsys
	f.ns.Lock()
	defer f.ns.Unlock()
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	tfd, tname, errno := t.loc()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(tfd)
	dfd, errno := n.dir()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(dfd)
	if errno := f.usage.addEntry(0); errno != 0 {
		return nil, errno
	}
	if err := unix.Linkat(tfd, tname, dfd, name, 0); err != nil {
		f.usage.undoEntry(0)
		return nil, fs.ToErrno(err)
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, fs.ToErrno(err)
	}
	f.tree.Changed(n.ino())
	return n.child(ctx, &st, out), 0
}

// Readlink reads a symlink's target.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	if _, errno := n.fsys.check(ctx); errno != 0 {
		return nil, errno
	}
	dfd, name, errno := n.loc()
	if errno != 0 {
		return nil, errno
	}
	defer unix.Close(dfd)
	buf := make([]byte, unix.PathMax+1)
	m, err := unix.Readlinkat(dfd, name, buf)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return buf[:m], 0
}

// remove removes the entry name, a directory when dir.
func (n *node) remove(ctx context.Context, name string, dir bool) syscall.Errno {
	if _, errno := n.fsys.check(ctx); errno != 0 {
		return errno
	}
	f := n.fsys
	f.ns.Lock()
	defer f.ns.Unlock()
	dfd, errno := n.dir()
	if errno != 0 {
		return errno
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fs.ToErrno(err)
	}
	flags := 0
	if dir {
		flags = unix.AT_REMOVEDIR
	}
	if err := unix.Unlinkat(dfd, name, flags); err != nil {
		return fs.ToErrno(err)
	}
	f.usage.removeEntry(st.Ino, dir || st.Nlink <= 1)
	f.tree.Changed(n.ino())
	return 0
}

// Unlink removes a non-directory.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, name, false)
}

// Rmdir removes an empty directory.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, name, true)
}

// Rename renames name to newName in newParent, with renameat2's flags. A
// replaced entry gives back its name (and its bytes, if it was the last
// link).
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if _, errno := n.fsys.check(ctx); errno != 0 {
		return errno
	}
	f := n.fsys
	f.ns.Lock()
	defer f.ns.Unlock()
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	ofd, errno := n.dir()
	if errno != 0 {
		return errno
	}
	defer unix.Close(ofd)
	nfd, errno := np.dir()
	if errno != 0 {
		return errno
	}
	defer unix.Close(nfd)
	var src, dst unix.Stat_t
	if err := unix.Fstatat(ofd, name, &src, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fs.ToErrno(err)
	}
	// Renaming a link onto another link of the same file does nothing.
	replaced := flags&unix.RENAME_EXCHANGE == 0 && unix.Fstatat(nfd, newName, &dst, unix.AT_SYMLINK_NOFOLLOW) == nil && dst.Ino != src.Ino
	if err := unix.Renameat2(ofd, name, nfd, newName, uint(flags)); err != nil {
		return fs.ToErrno(err)
	}
	if replaced {
		f.usage.removeEntry(dst.Ino, dst.Mode&unix.S_IFMT == unix.S_IFDIR || dst.Nlink <= 1)
	}
	f.tree.Changed(n.ino())
	f.tree.Changed(np.ino())
	return 0
}

// Opendir checks the caller.
func (n *node) Opendir(ctx context.Context) syscall.Errno {
	_, errno := n.fsys.check(ctx)
	return errno
}

// Readdir lists a directory.
func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if _, errno := n.fsys.check(ctx); errno != 0 {
		return nil, errno
	}
	fd, errno := n.fsys.openDir(n.path(), unix.O_RDONLY)
	if errno != 0 {
		return nil, errno
	}
	return fs.NewLoopbackDirStreamFd(fd)
}

// Fsync flushes an open file, or a directory, to disk: go-fuse asks the
// node first, for both. A directory's is the last step of the write,
// fsync, rename, fsync-the-directory pattern that databases rely on.
// flags bit 0 asks for fdatasync.
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	if _, errno := n.fsys.check(ctx); errno != 0 {
		return errno
	}
	if h, ok := fh.(*handle); ok {
		return h.Fsync(ctx, flags)
	}
	fd, errno := n.fsys.openDir(n.path(), unix.O_RDONLY)
	if errno != 0 {
		return errno
	}
	defer unix.Close(fd)
	if flags&1 != 0 {
		return fs.ToErrno(unix.Fdatasync(fd))
	}
	return fs.ToErrno(unix.Fsync(fd))
}

// Statfs reports the quotas as the filesystem's size.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	if _, errno := n.fsys.check(ctx); errno != 0 {
		return errno
	}
	var s unix.Statfs_t
	if err := unix.Fstatfs(n.fsys.rootFd, &s); err != nil {
		return fs.ToErrno(err)
	}
	u := n.fsys.usage.get()
	const bsize = 4096
	out.Bsize, out.Frsize, out.NameLen = bsize, bsize, 255
	if u.MaxBytes > 0 {
		out.Blocks = uint64((u.MaxBytes + bsize - 1) / bsize)
		free := uint64(max(u.MaxBytes-u.Bytes, 0) / bsize)
		out.Bfree, out.Bavail = min(free, s.Bfree*uint64(s.Bsize)/bsize), min(free, s.Bavail*uint64(s.Bsize)/bsize)
	} else {
		out.Blocks, out.Bfree, out.Bavail = s.Blocks*uint64(s.Bsize)/bsize, s.Bfree*uint64(s.Bsize)/bsize, s.Bavail*uint64(s.Bsize)/bsize
	}
	if u.MaxEntries > 0 {
		out.Files, out.Ffree = uint64(u.MaxEntries), uint64(max(u.MaxEntries-u.Entries, 0))
	} else {
		out.Files, out.Ffree = s.Files, s.Ffree
	}
	return 0
}

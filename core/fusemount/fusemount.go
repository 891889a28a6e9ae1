// Package fusemount finds FUSE mounts and clears dead ones without ever
// touching them: it reads /proc/self/mountinfo, never stat(2)s a mount
// point, and aborts connections through the fusectl filesystem.
//
// A FUSE mount whose server is gone normally fails every access with
// ENOTCONN, but when something else still holds the connection's
// /dev/fuse file (a process that inherited it, or a server killed while
// one of its own threads waits on its own mount) the kernel keeps the
// connection open, and every access, a stat of the mount point included,
// waits forever. Writing to /sys/fs/fuse/connections/<conn>/abort ends all
// its requests with ENOTCONN at once; <conn> is the mount's device number
// (for FUSE, major 0 and the minor).
package fusemount

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ConnectionsDir is where the fusectl filesystem is mounted.
const ConnectionsDir = "/sys/fs/fuse/connections"

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	// ID and Parent are the mount's id and its parent's.
	ID, Parent int
	// Major and Minor are the device of the mount's filesystem.
	Major, Minor uint32
	// Point is the mount point, unescaped.
	Point string
	// FSType is the filesystem type ("fuse.NAME" for a FUSE mount).
	FSType string
	// Source is the mount's source (a FUSE server's fsname).
	Source string
}

// FUSE reports whether m is a FUSE mount.
func (m Mount) FUSE() bool {
	return m.FSType == "fuse" || m.FSType == "fuseblk" || strings.HasPrefix(m.FSType, "fuse.") || strings.HasPrefix(m.FSType, "fuseblk.")
}

// Conn is the name of m's connection in ConnectionsDir: the kernel's
// encoding of its device number.
func (m Mount) Conn() uint32 { return m.Major<<20 | m.Minor }

// Dev is m's device number as stat(2) reports it (st_dev).
func (m Mount) Dev() uint64 { return unix.Mkdev(m.Major, m.Minor) }

// List returns the mounts of the calling process's mount namespace, in
// the order of /proc/self/mountinfo.
func List() ([]Mount, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return Parse(b)
}

// Parse parses the content of a mountinfo file (proc(5)).
func Parse(b []byte) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		m, err := parseLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

// parseLine parses "ID PARENT MAJOR:MINOR ROOT POINT OPTS [TAGS...] - TYPE SOURCE SUPEROPTS".
func parseLine(line string) (Mount, error) {
	f := strings.Fields(line)
	sep := slices.Index(f, "-")
	if len(f) < 6 || sep < 6 || sep+2 >= len(f) {
		return Mount{}, fmt.Errorf("malformed %q", line)
	}
	var m Mount
	var err error
	if m.ID, err = strconv.Atoi(f[0]); err != nil {
		return Mount{}, fmt.Errorf("mount id %q: %w", f[0], err)
	}
	if m.Parent, err = strconv.Atoi(f[1]); err != nil {
		return Mount{}, fmt.Errorf("parent id %q: %w", f[1], err)
	}
	maj, min, ok := strings.Cut(f[2], ":")
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return Mount{}, fmt.Errorf("device %q: not MAJOR:MINOR", f[2])
	}
	m.Major, m.Minor = uint32(ma), uint32(mi)
	m.Point = unescape(f[4])
	m.FSType = unescape(f[sep+1])
	m.Source = unescape(f[sep+2])
	return m, nil
}

// unescape undoes mountinfo's octal escapes (\040 for a space, \134 for a
// backslash).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// At returns the mounts whose mount point is point (clean and absolute),
// bottom first: each after the one it is mounted over.
func At(point string) ([]Mount, error) {
	all, err := List()
	if err != nil {
		return nil, err
	}
	return stack(all, point), nil
}

// stack orders the mounts of all at point from the bottom up.
func stack(all []Mount, point string) []Mount {
	var at []Mount
	ids := map[int]bool{}
	for _, m := range all {
		if m.Point == point {
			at = append(at, m)
			ids[m.ID] = true
		}
	}
	// The bottom is the one whose parent is not at point; each next one's
	// parent is the one before. Mounts the chain misses keep their order.
	var out []Mount
	used := map[int]bool{}
	cur := -1
	for _, m := range at {
		if !ids[m.Parent] {
			cur = m.ID
			out = append(out, m)
			used[m.ID] = true
			break
		}
	}
	for cur >= 0 {
		next := -1
		for _, m := range at {
			if m.Parent == cur && !used[m.ID] {
				out = append(out, m)
				used[m.ID] = true
				next = m.ID
				break
			}
		}
		cur = next
	}
	for _, m := range at {
		if !used[m.ID] {
			out = append(out, m)
		}
	}
	return out
}

// Abort aborts FUSE connection conn: its requests, pending and future,
// fail with ENOTCONN, and its server's reads of /dev/fuse fail. It mounts
// fusectl at ConnectionsDir first if it is not mounted. A connection that
// is gone already is no error.
func Abort(conn uint32) error {
	if err := mountFusectl(); err != nil {
		return err
	}
	p := filepath.Join(ConnectionsDir, strconv.FormatUint(uint64(conn), 10), "abort")
	err := os.WriteFile(p, []byte("1"), 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("abort FUSE connection %d: %w", conn, err)
	}
	return nil
}

// Waiting returns how many requests FUSE connection conn has waiting for
// its server (sent or not yet read).
func Waiting(conn uint32) (int, error) {
	if err := mountFusectl(); err != nil {
		return 0, err
	}
	b, err := os.ReadFile(filepath.Join(ConnectionsDir, strconv.FormatUint(uint64(conn), 10), "waiting"))
	if err != nil {
		return 0, fmt.Errorf("FUSE connection %d: %w", conn, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("FUSE connection %d: waiting %q: %w", conn, b, err)
	}
	return n, nil
}

// mountFusectl mounts fusectl at ConnectionsDir unless it is mounted.
func mountFusectl() error {
	mounted := func() (bool, error) {
		ms, err := At(ConnectionsDir)
		if err != nil {
			return false, err
		}
		return slices.ContainsFunc(ms, func(m Mount) bool { return m.FSType == "fusectl" }), nil
	}
	ok, err := mounted()
	if err != nil || ok {
		return err
	}
	err = unix.Mount("fusectl", ConnectionsDir, "fusectl", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	if err == nil || errors.Is(err, unix.EBUSY) {
		// EBUSY: mounted meanwhile by someone else.
		return nil
	}
	return fmt.Errorf("mount fusectl at %s: %w", ConnectionsDir, err)
}

// Clear aborts the connection of every FUSE mount at or below path and
// detaches (MNT_DETACH) every mount there, deepest and topmost first,
// without looking inside any of them. Use it before removing a tree that
// may hold a mount whose server is gone: removing would otherwise hang in
// it. ctx bounds the loop.
func Clear(ctx context.Context, path string) error {
	path = filepath.Clean(path)
	var errs []error
	all, err := List()
	if err != nil {
		return err
	}
	var below []Mount
	for _, m := range all {
		if m.Point == path || strings.HasPrefix(m.Point, path+"/") {
			below = append(below, m)
		}
	}
	for _, m := range below {
		if m.FUSE() {
			errs = append(errs, Abort(m.Conn()))
		}
	}
	// Deepest first; at one point, each detach takes off the top one.
	slices.SortStableFunc(below, func(a, b Mount) int { return len(b.Point) - len(a.Point) })
	for _, m := range below {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if err := unix.Unmount(m.Point, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("detach %s: %w", m.Point, err))
		}
	}
	return errors.Join(errs...)
}

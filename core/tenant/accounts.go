package tenant

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The account database files.
const (
	passwdFile = "/etc/passwd"
	shadowFile = "/etc/shadow"
	groupFile  = "/etc/group"
	subuidFile = "/etc/subuid"
	subgidFile = "/etc/subgid"
)

// maxID is one past the largest usable id: 2^32-1 is (uid_t)-1.
const maxID = 1<<32 - 1

// accountsMu and accountsLockFile serialize changes to the account
// database, within this process and across kigumi processes, so that a
// check and the change it allows are not interleaved with another tenant's,
// and so that two kigumi processes never run shadow tools at once (they
// fail, rather than wait, when another holds /etc/passwd's lock).
// The lock file lives in a root-only directory, so that no other user can
// plant a symlink there or hold the lock.
var (
	accountsMu      sync.Mutex
	accountsLockDir = "/run/kigumi"
)

// lockAccounts takes both locks and returns the function that releases them.
func lockAccounts() (unlock func(), err error) {
	accountsMu.Lock()
	var f *os.File
	if err = os.MkdirAll(accountsLockDir, 0o700); err == nil {
		err = checkLockDir(accountsLockDir)
	}
	if err == nil {
		f, err = os.OpenFile(filepath.Join(accountsLockDir, "accounts.lock"), os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW, 0o600)
	}
	if err == nil {
		if err = unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
		}
	}
	if err != nil {
		accountsMu.Unlock()
		return nil, fmt.Errorf("lock the account database: %w", err)
	}
	return func() {
		f.Close()
		accountsMu.Unlock()
	}, nil
}

// checkLockDir refuses a lock directory that is not a real directory owned
// by root and closed to others.
func checkLockDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s must be a directory owned by root and writable only by it", dir)
	}
	return nil
}

// passwdEntry is one line of /etc/passwd.
type passwdEntry struct {
	name     string
	uid, gid uint32
	home     string
	shell    string
}

// idRange is one line of /etc/subuid or /etc/subgid: count ids from start,
// owned by a user name or uid.
type idRange struct {
	owner        string
	start, count uint64
}

func (r idRange) overlaps(start, count uint64) bool {
	return r.start < start+count && start < r.start+r.count
}

// accounts is a snapshot of the account database.
type accounts struct {
	users          []passwdEntry
	groups         map[string]uint32
	gids           map[uint32]string
	subuid, subgid []idRange
}

// readAccounts reads the account database.
func readAccounts() (*accounts, error) {
	a := &accounts{groups: map[string]uint32{}, gids: map[uint32]string{}}
	err := readColonFile(passwdFile, 7, func(f []string) {
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 == nil && err2 == nil {
			a.users = append(a.users, passwdEntry{name: f[0], uid: uint32(uid), gid: uint32(gid), home: f[5], shell: f[6]})
		}
	})
	if err != nil {
		return nil, err
	}
	err = readColonFile(groupFile, 4, func(f []string) {
		if gid, err := strconv.ParseUint(f[2], 10, 32); err == nil {
			a.groups[f[0]] = uint32(gid)
			a.gids[uint32(gid)] = f[0]
		}
	})
	if err != nil {
		return nil, err
	}
	if a.subuid, err = readSubIDs(subuidFile); err != nil {
		return nil, err
	}
	if a.subgid, err = readSubIDs(subgidFile); err != nil {
		return nil, err
	}
	return a, nil
}

// readColonFile calls fn with the fields of each line of path that has n
// colon-separated fields, skipping comments and NIS compat lines. A missing
// file has no lines.
func readColonFile(path string, n int, fn func([]string)) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read account database: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "+") || strings.HasPrefix(line, "-") {
			continue
		}
		if f := strings.Split(line, ":"); len(f) == n {
			fn(f)
		}
	}
	return sc.Err()
}

func readSubIDs(path string) ([]idRange, error) {
	var rs []idRange
	err := readColonFile(path, 3, func(f []string) {
		start, err1 := strconv.ParseUint(f[1], 10, 32)
		count, err2 := strconv.ParseUint(f[2], 10, 32)
		if err1 == nil && err2 == nil {
			rs = append(rs, idRange{owner: f[0], start: start, count: count})
		}
	})
	return rs, err
}

// user returns the passwd entry named name.
func (a *accounts) user(name string) (passwdEntry, bool) {
	for _, u := range a.users {
		if u.name == name {
			return u, true
		}
	}
	return passwdEntry{}, false
}

// uidOwner returns the name of a user with uid.
func (a *accounts) uidOwner(uid uint32) (string, bool) {
	for _, u := range a.users {
		if u.uid == uid {
			return u.name, true
		}
	}
	return "", false
}

// owned returns the ranges of rs owned by any of owners (user names or
// uids), and the others.
func owned(rs []idRange, owners ...string) (mine, others []idRange) {
	for _, r := range rs {
		if slices.Contains(owners, r.owner) {
			mine = append(mine, r)
		} else {
			others = append(others, r)
		}
	}
	return mine, others
}

// ownerNames returns the names a subordinate id file may give user name with
// uid as owner.
func ownerNames(name string, uid uint32) []string {
	return []string{name, strconv.FormatUint(uint64(uid), 10)}
}

// idUsed reports whether id is a uid, a gid, or inside a subordinate range.
func (a *accounts) idUsed(id uint32) bool {
	if _, ok := a.uidOwner(id); ok {
		return true
	}
	if _, ok := a.gids[id]; ok {
		return true
	}
	return a.rangeUsed(uint64(id), 1)
}

// rangeUsed reports whether any id in [start, start+count) is inside a
// subordinate range.
func (a *accounts) rangeUsed(start, count uint64) bool {
	for _, rs := range [][]idRange{a.subuid, a.subgid} {
		for _, r := range rs {
			if r.overlaps(start, count) {
				return true
			}
		}
	}
	return false
}

// idsIn returns a uid or gid in [start, start+count), if there is one.
func (a *accounts) idsIn(start, count uint64) (uint32, bool) {
	for _, u := range a.users {
		if uint64(u.uid) >= start && uint64(u.uid) < start+count {
			return u.uid, true
		}
	}
	for gid := range a.gids {
		if uint64(gid) >= start && uint64(gid) < start+count {
			return gid, true
		}
	}
	return 0, false
}

// FreeUID returns the first id at or after base that is neither a uid nor a
// gid in the account database, lies in no subordinate id range, and for which
// taken (if not nil) reports false. Tenant users get uid = gid = that id.
func FreeUID(base uint32, taken func(uint32) bool) (uint32, error) {
	a, err := readAccounts()
	if err != nil {
		return 0, err
	}
	for id := uint64(max(base, 1)); id < maxID; id++ {
		if !a.idUsed(uint32(id)) && (taken == nil || !taken(uint32(id))) {
			return uint32(id), nil
		}
	}
	return 0, fmt.Errorf("no free uid at or above %d", base)
}

// FreeSubIDs returns the first start = base + k*count whose range of count
// ids overlaps no subordinate range in /etc/subuid or /etc/subgid, holds no
// uid or gid, and for which taken (if not nil) reports false.
func FreeSubIDs(base, count uint32, taken func(start uint32) bool) (uint32, error) {
	if base == 0 || count == 0 {
		return 0, fmt.Errorf("subordinate ids: base and count must be positive")
	}
	a, err := readAccounts()
	if err != nil {
		return 0, err
	}
	for start := uint64(base); start+uint64(count) <= maxID; start += uint64(count) {
		if _, used := a.idsIn(start, uint64(count)); used || a.rangeUsed(start, uint64(count)) {
			continue
		}
		if taken == nil || !taken(uint32(start)) {
			return uint32(start), nil
		}
	}
	return 0, fmt.Errorf("no free range of %d subordinate ids at or above %d", count, base)
}

// passwordLocked reports whether user's password in /etc/shadow is locked.
func passwordLocked(user string) (bool, error) {
	locked := false
	err := readColonFile(shadowFile, 9, func(f []string) {
		if f[0] == user {
			locked = strings.HasPrefix(f[1], "!") || strings.HasPrefix(f[1], "*")
		}
	})
	return locked, err
}

// run runs a shadow tool with an argument vector, never through a shell.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

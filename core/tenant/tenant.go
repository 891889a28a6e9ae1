// Package tenant isolates tenants on a Linux host. Each tenant gets a
// dedicated, locked, nologin user kg-<tenant> with its own group (gid = uid),
// its own subordinate uid and gid range, a 0700 home directory it owns, and a
// cgroup /kigumi/<tenant> (on cgroup v1 or v2) that holds its processes under
// the tenant's limits.
//
// Users are managed with Debian's shadow tools (package passwd), run with
// argument vectors, never through a shell. Everything here needs root.
package tenant

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"

	"github.com/kigumi/kigumi/core/fstree"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

// tenantName is the form of tenant names; with the "kg-" prefix they make
// Linux user names of at most 32 characters.
var tenantName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,28}$`)

// nologin is the shell of tenant users.
const nologin = "/usr/sbin/nologin"

// ErrConflict is returned (wrapped) when a tenant's user, group, ids or
// subordinate ids clash with what the account database already holds.
var ErrConflict = errors.New("conflicts with the account database")

// NotRootError is returned when the process is not running as root.
type NotRootError struct {
	// EUID is the process's effective uid.
	EUID int
}

// Error implements error.
func (e *NotRootError) Error() string {
	return fmt.Sprintf("tenant isolation needs root, but kigumi runs as uid %d: run it as root", e.EUID)
}

// Limits are a tenant's resource limits. Zero means unlimited.
type Limits struct {
	MemoryBytes int64
	// MilliCPU is CPU time in thousandths of a core; when set, at least 10.
	MilliCPU int64
	// Pids caps the tenant's processes and threads.
	Pids int64
	// IO limits the rates of disk I/O on the device of the state
	// directory (WithIODevice), through the blkio (v1) or io (v2)
	// controller.
	IO sdk.IOLimits
}

// Spec describes a tenant's isolation.
type Spec struct {
	// Tenant is the tenant's name; it matches ^[a-z][a-z0-9-]{0,28}$.
	Tenant string
	// UID is the uid and gid of the tenant's user and group.
	UID uint32
	// SubIDStart and SubIDCount give the tenant's subordinate uid and gid
	// range. A zero count allocates none.
	SubIDStart, SubIDCount uint32
	// Home is the absolute path of the tenant's home directory. Its parent
	// must exist.
	Home   string
	Limits Limits
}

// Tenant is a tenant's isolation as made by Ensure.
type Tenant struct {
	User sdk.User
	// Cgroup is the tenant's cgroup, /kigumi/<tenant>.
	Cgroup sdk.Cgroup
}

// Option configures a Manager.
type Option func(*Manager)

// WithCgroupRoot sets the cgroup root: a cgroup2 mount, or a directory of
// cgroup v1 hierarchies. The default is /sys/fs/cgroup.
func WithCgroupRoot(dir string) Option {
	return func(m *Manager) { m.cg.root = dir }
}

// WithIODevice names a path on the filesystem whose block device the I/O
// limits apply to: the host's state directory.
func WithIODevice(path string) Option {
	return func(m *Manager) { m.cg.ioPath = path }
}

// Manager creates and removes tenants' users, home directories and cgroups.
// Its methods may be called concurrently for different tenants.
type Manager struct {
	cg cgroups
}

// NewManager returns a Manager, detecting the cgroup version. It fails with a
// *NotRootError unless the process runs as root.
func NewManager(opts ...Option) (*Manager, error) {
	if euid := os.Geteuid(); euid != 0 {
		return nil, &NotRootError{EUID: euid}
	}
	m := &Manager{cg: cgroups{root: "/sys/fs/cgroup"}}
	for _, opt := range opts {
		opt(m)
	}
	m.cg = detectCgroups(m.cg.root, m.cg.ioPath)
	return m, nil
}

// UserName returns the name of the tenant's Linux user and group.
func UserName(tenant string) string { return "kg-" + tenant }

// Preflight checks that the process is root, that the shadow tools are
// installed, and that the cgroup hierarchies are usable; it makes the
// /kigumi parent cgroups. Its errors say what to fix.
func (m *Manager) Preflight() error {
	if euid := os.Geteuid(); euid != 0 {
		return &NotRootError{EUID: euid}
	}
	for _, tool := range []string{"useradd", "usermod", "userdel", "groupadd", "groupdel"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing: install the Debian package passwd: %w", tool, err)
		}
	}
	if _, err := os.Stat(nologin); err != nil {
		return fmt.Errorf("tenant users' shell is missing: %w", err)
	}
	if err := m.cg.prepare(); err != nil {
		return fmt.Errorf("cgroups under %s are not usable: %w", m.cg.root, err)
	}
	return nil
}

// Ensure creates the tenant's user, group, subordinate ids, home directory
// and cgroup, adopting those that exist from an earlier call, and writes the
// tenant's limits. Calling it again with the same spec changes nothing. It
// never adopts a user or group whose ids differ from the spec. On failure it
// removes what this call made, and only that.
func (m *Manager) Ensure(ctx context.Context, s Spec) (_ *Tenant, err error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	var u undo
	defer func() {
		if err != nil {
			err = errors.Join(err, u.run(context.WithoutCancel(ctx)))
		}
	}()
	if err := ensureAccount(ctx, s, &u); err != nil {
		return nil, fmt.Errorf("tenant %s: %w", s.Tenant, err)
	}
	if err := ensureHome(s, &u); err != nil {
		return nil, fmt.Errorf("tenant %s: %w", s.Tenant, err)
	}
	made, err := m.cg.create(s.Tenant)
	u.add(func(context.Context) error {
		var errs []error
		for _, d := range made {
			errs = append(errs, syscall.Rmdir(d))
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return nil, fmt.Errorf("tenant %s: %w", s.Tenant, err)
	}
	if err := m.cg.setLimits(s.Tenant, s.Limits); err != nil {
		return nil, err
	}
	t := &Tenant{
		User:   sdk.User{Name: UserName(s.Tenant), UID: s.UID, GID: s.UID, Home: s.Home},
		Cgroup: sdk.Cgroup{Path: "/" + parentCgroup + "/" + s.Tenant},
	}
	if s.SubIDCount > 0 {
		t.User.SubUID, t.User.SubGID, t.User.Count = s.SubIDStart, s.SubIDStart, s.SubIDCount
	}
	for _, d := range m.cg.dirs(s.Tenant) {
		t.Cgroup.ProcsFiles = append(t.Cgroup.ProcsFiles, filepath.Join(d, "cgroup.procs"))
	}
	return t, nil
}

// Processes returns the ids of the processes in the tenant's cgroup and its
// descendants.
func (m *Manager) Processes(tenant string) ([]int, error) {
	if !tenantName.MatchString(tenant) {
		return nil, fmt.Errorf("invalid tenant name %q", tenant)
	}
	return m.cg.procs(tenant)
}

// Remove kills every process in the tenant's cgroup and of its user
// (including its subordinate uids) and waits until they are gone, then
// removes the tenant's cgroups, home directory, user, group and subordinate
// ids. Missing pieces are fine, so Remove may be repeated. It refuses to
// remove a home directory owned by another account.
func (m *Manager) Remove(ctx context.Context, tenant, home string) error {
	if !tenantName.MatchString(tenant) {
		return fmt.Errorf("invalid tenant name %q", tenant)
	}
	if err := validHome(home); err != nil {
		return err
	}
	name := UserName(tenant)
	a, err := readAccounts()
	if err != nil {
		return err
	}
	if err := m.cg.kill(ctx, tenant); err != nil {
		return fmt.Errorf("remove tenant %s: %w", tenant, err)
	}
	if usr, ok := a.user(name); ok {
		subuids, _ := owned(a.subuid, ownerNames(name, usr.uid)...)
		err := killUIDs(ctx, func(id uint64) bool {
			for _, r := range subuids {
				if r.overlaps(id, 1) {
					return true
				}
			}
			return id == uint64(usr.uid)
		})
		if err != nil {
			return fmt.Errorf("remove tenant %s: %w", tenant, err)
		}
	}
	if err := m.cg.remove(ctx, tenant); err != nil {
		return fmt.Errorf("remove tenant %s: %w", tenant, err)
	}
	if err := removeHome(ctx, a, home, name); err != nil {
		return fmt.Errorf("remove tenant %s: %w", tenant, err)
	}
	if err := removeAccount(ctx, name); err != nil {
		return fmt.Errorf("remove tenant %s: %w", tenant, err)
	}
	return nil
}

// undo collects the steps that reverse what a call made.
type undo []func(context.Context) error

func (u *undo) add(f func(context.Context) error) { *u = append(*u, f) }

// run runs the steps, last first.
func (u undo) run(ctx context.Context) error {
	var errs []error
	for i := len(u) - 1; i >= 0; i-- {
		if err := u[i](ctx); err != nil {
			errs = append(errs, fmt.Errorf("undo: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (s Spec) validate() error {
	if !tenantName.MatchString(s.Tenant) {
		return fmt.Errorf("invalid tenant name %q: it must match %s", s.Tenant, tenantName)
	}
	if s.UID == 0 || s.UID == math.MaxUint32 {
		return fmt.Errorf("tenant %s: invalid uid %d", s.Tenant, s.UID)
	}
	if s.SubIDCount > 0 && (s.SubIDStart == 0 || uint64(s.SubIDStart)+uint64(s.SubIDCount) > maxID) {
		return fmt.Errorf("tenant %s: invalid subordinate id range %d+%d", s.Tenant, s.SubIDStart, s.SubIDCount)
	}
	l := s.Limits
	if l.MemoryBytes < 0 || l.Pids < 0 || l.MilliCPU < 0 || (l.MilliCPU > 0 && l.MilliCPU < 10) ||
		l.IO.ReadBPS < 0 || l.IO.WriteBPS < 0 || l.IO.ReadIOPS < 0 || l.IO.WriteIOPS < 0 {
		return fmt.Errorf("tenant %s: invalid limits %+v: none may be negative, and CPU is at least 10 millicores", s.Tenant, l)
	}
	return validHome(s.Home)
}

func validHome(home string) error {
	if !filepath.IsAbs(home) || filepath.Clean(home) != home || home == "/" {
		return fmt.Errorf("invalid home directory %q: it must be an absolute, clean path below /", home)
	}
	return nil
}

// ensureAccount creates or adopts the tenant's group, user and subordinate
// ids, adding to u the steps that undo what it made.
func ensureAccount(ctx context.Context, s Spec, u *undo) error {
	unlock, err := lockAccounts()
	if err != nil {
		return err
	}
	defer unlock()
	a, err := readAccounts()
	if err != nil {
		return err
	}
	name, id := UserName(s.Tenant), strconv.FormatUint(uint64(s.UID), 10)
	usr, userExists := a.user(name)
	gid, groupExists := a.groups[name]
	if err := checkAccount(a, s, name); err != nil {
		return err
	}
	if !groupExists {
		if err := run(ctx, "groupadd", "--gid", id, name); err != nil {
			return err
		}
		u.add(func(ctx context.Context) error { return removeGroup(ctx, name) })
	}
	if userExists {
		if err := fixUser(ctx, usr, s); err != nil {
			return err
		}
	} else {
		err := run(ctx, "useradd", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0",
			"--no-create-home", "--home-dir", s.Home, "--shell", nologin,
			"--uid", id, "--gid", id, "--no-user-group", "--comment", "kigumi tenant "+s.Tenant, name)
		if err != nil {
			return err
		}
		u.add(func(ctx context.Context) error {
			if err := run(ctx, "userdel", name); err != nil {
				return err
			}
			if groupExists { // userdel took the group, which this call did not make
				return run(ctx, "groupadd", "--gid", strconv.FormatUint(uint64(gid), 10), name)
			}
			return nil
		})
	}
	if s.SubIDCount == 0 {
		return nil
	}
	r := fmt.Sprintf("%d-%d", s.SubIDStart, uint64(s.SubIDStart)+uint64(s.SubIDCount)-1)
	var add, del []string
	if mine, _ := owned(a.subuid, ownerNames(name, s.UID)...); len(mine) == 0 {
		add, del = append(add, "--add-subuids", r), append(del, "--del-subuids", r)
	}
	if mine, _ := owned(a.subgid, ownerNames(name, s.UID)...); len(mine) == 0 {
		add, del = append(add, "--add-subgids", r), append(del, "--del-subgids", r)
	}
	if len(add) == 0 {
		return nil
	}
	if err := run(ctx, "usermod", append(add, name)...); err != nil {
		return err
	}
	u.add(func(ctx context.Context) error { return run(ctx, "usermod", append(del, name)...) })
	return nil
}

// checkAccount checks that the spec's user, group and ids can be created or
// adopted: existing ones must be the tenant's and match the spec.
func checkAccount(a *accounts, s Spec, name string) error {
	if usr, ok := a.user(name); ok && (usr.uid != s.UID || usr.gid != s.UID) {
		return fmt.Errorf("user %s exists with uid %d and gid %d, not %d: %w", name, usr.uid, usr.gid, s.UID, ErrConflict)
	}
	if gid, ok := a.groups[name]; ok && gid != s.UID {
		return fmt.Errorf("group %s exists with gid %d, not %d: %w", name, gid, s.UID, ErrConflict)
	}
	if owner, ok := a.uidOwner(s.UID); ok && owner != name {
		return fmt.Errorf("uid %d belongs to user %s: %w", s.UID, owner, ErrConflict)
	}
	if owner, ok := a.gids[s.UID]; ok && owner != name {
		return fmt.Errorf("gid %d belongs to group %s: %w", s.UID, owner, ErrConflict)
	}
	start, count := uint64(s.SubIDStart), uint64(s.SubIDCount)
	for _, f := range []struct {
		file string
		ids  []idRange
	}{{subuidFile, a.subuid}, {subgidFile, a.subgid}} {
		mine, others := owned(f.ids, ownerNames(name, s.UID)...)
		for _, r := range others {
			if r.overlaps(uint64(s.UID), 1) {
				return fmt.Errorf("id %d is in the subordinate range of %s in %s: %w", s.UID, r.owner, f.file, ErrConflict)
			}
			if count > 0 && r.overlaps(start, count) {
				return fmt.Errorf("subordinate ids %d+%d overlap those of %s (%d+%d) in %s: %w", start, count, r.owner, r.start, r.count, f.file, ErrConflict)
			}
		}
		if count > 0 && len(mine) > 0 && (len(mine) > 1 || mine[0].start != start || mine[0].count != count) {
			return fmt.Errorf("%s already has other subordinate ids in %s: %w", name, f.file, ErrConflict)
		}
	}
	if id, ok := a.idsIn(start, count); count > 0 && ok {
		return fmt.Errorf("subordinate ids %d+%d include the existing id %d: %w", start, count, id, ErrConflict)
	}
	return nil
}

// fixUser makes an adopted user's home, shell and password lock match s.
func fixUser(ctx context.Context, usr passwdEntry, s Spec) error {
	var args []string
	if usr.home != s.Home {
		args = append(args, "--home", s.Home)
	}
	if usr.shell != nologin {
		args = append(args, "--shell", nologin)
	}
	locked, err := passwordLocked(usr.name)
	if err != nil {
		return err
	}
	if !locked {
		args = append(args, "--lock")
	}
	if len(args) == 0 {
		return nil
	}
	return run(ctx, "usermod", append(args, usr.name)...)
}

// ensureHome creates the tenant's home directory, or fixes the owner and
// mode of an existing one.
func ensureHome(s Spec, u *undo) error {
	return ensureHomeOwned(s.Home, s.UID, s.UID, u)
}

// ensureHomeOwned creates home 0700 owned by uid and gid, or fixes the owner
// and mode of an existing one.
func ensureHomeOwned(home string, uid, gid uint32, u *undo) error {
	fi, err := os.Lstat(home)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(home, 0o700); err != nil {
			return fmt.Errorf("create home directory: %w", err)
		}
		u.add(func(context.Context) error { return os.Remove(home) })
		if fi, err = os.Lstat(home); err != nil {
			return err
		}
	case err != nil:
		return fmt.Errorf("home directory: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("home directory %s exists and is not a directory", home)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != gid {
		if err := os.Lchown(home, int(uid), int(gid)); err != nil {
			return fmt.Errorf("home directory: %w", err)
		}
	}
	if fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0o700 {
		if err := os.Chmod(home, 0o700); err != nil {
			return fmt.Errorf("home directory: %w", err)
		}
	}
	return nil
}

// removeHome removes home unless another account owns it. The tenant shaped
// what is inside: fstree removes it whatever its shape.
func removeHome(ctx context.Context, a *accounts, home, name string) error {
	fi, err := os.Lstat(home)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if owner, ok := a.uidOwner(fi.Sys().(*syscall.Stat_t).Uid); ok && owner != name {
		return fmt.Errorf("refusing to remove home directory %s: it belongs to user %s", home, owner)
	}
	return fstree.RemoveAll(ctx, home)
}

// removeAccount deletes the user and group name and checks that its
// subordinate ids went with it.
func removeAccount(ctx context.Context, name string) error {
	unlock, err := lockAccounts()
	if err != nil {
		return err
	}
	defer unlock()
	a, err := readAccounts()
	if err != nil {
		return err
	}
	owners := []string{name}
	if usr, ok := a.user(name); ok {
		owners = ownerNames(name, usr.uid)
		if err := run(ctx, "userdel", name); err != nil {
			return err
		}
	}
	if err := removeGroup(ctx, name); err != nil {
		return err
	}
	if a, err = readAccounts(); err != nil {
		return err
	}
	mineUID, _ := owned(a.subuid, owners...)
	mineGID, _ := owned(a.subgid, owners...)
	if len(mineUID)+len(mineGID) > 0 {
		return fmt.Errorf("subordinate ids of %s are left in %s or %s; remove them by hand", name, subuidFile, subgidFile)
	}
	return nil
}

// removeGroup deletes the group name if it exists.
func removeGroup(ctx context.Context, name string) error {
	a, err := readAccounts()
	if err != nil {
		return err
	}
	if _, ok := a.groups[name]; !ok {
		return nil
	}
	return run(ctx, "groupdel", name)
}

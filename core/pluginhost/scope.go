package pluginhost

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// Scope says whose plugin process serves a call: the host's, or one
// tenant's. Each (kind, name, scope) has its own process. The zero Scope is
// the host's.
type Scope struct {
	// Tenant is nil for the host scope. Otherwise the process runs as the
	// tenant's user, inside the tenant's cgroup.
	Tenant *Tenant
}

// HostScope is the scope of plugin processes that serve the whole host:
// they run as the host's own user, outside any tenant cgroup.
var HostScope = Scope{}

// Tenant is what launching a tenant's plugin processes needs. Every launch
// for the tenant name must give the same Tenant until Release(name).
type Tenant struct {
	// Name is the tenant's name.
	Name string
	// User gives the uid and gid the processes run as, with no
	// supplementary groups; neither may be 0.
	User sdk.User
	// Cgroup is the cgroup the processes start in: one cgroup.procs file
	// per v1 hierarchy, or one on a cgroup2 hierarchy (where the cgroup must
	// be able to hold processes).
	Cgroup sdk.Cgroup
	// Dir is the tenant's plugin directory, which the plugin host owns: it
	// makes it (root-owned, group the tenant's, mode 0710) and removes it on
	// Release. Its parent must exist and be searchable by the tenant's user.
	// It holds one 0700 directory, owned by the tenant, per plugin process,
	// where the process makes its go-plugin socket; only root and the
	// tenant can reach it.
	Dir string
}

// String returns "host" or "tenant NAME".
func (s Scope) String() string {
	if s.Tenant == nil {
		return "host"
	}
	return "tenant " + s.Tenant.Name
}

// tenantName returns the scope's tenant, or "" for the host scope.
func (s Scope) tenantName() string {
	if s.Tenant == nil {
		return ""
	}
	return s.Tenant.Name
}

// validate checks the tenant's launch settings.
func (t *Tenant) validate() error {
	switch {
	case !validName.MatchString(t.Name):
		return fmt.Errorf("invalid tenant name %q", t.Name)
	case t.User.UID == 0 || t.User.GID == 0:
		return fmt.Errorf("tenant %s: plugin processes never run as uid or gid 0 (got %d:%d)", t.Name, t.User.UID, t.User.GID)
	case len(t.Cgroup.ProcsFiles) == 0:
		return fmt.Errorf("tenant %s: no cgroup.procs file to start plugin processes in", t.Name)
	case !filepath.IsAbs(t.Dir) || filepath.Clean(t.Dir) != t.Dir || t.Dir == "/":
		return fmt.Errorf("tenant %s: plugin directory %q is not a clean absolute path", t.Name, t.Dir)
	}
	for _, f := range t.Cgroup.ProcsFiles {
		if !filepath.IsAbs(f) || filepath.Clean(f) != f || filepath.Base(f) != "cgroup.procs" {
			return fmt.Errorf("tenant %s: %q is not the absolute path of a cgroup.procs file", t.Name, f)
		}
	}
	return nil
}

// equal reports whether t and o launch processes the same way.
func (t *Tenant) equal(o *Tenant) bool {
	return t.Name == o.Name && t.User.UID == o.User.UID && t.User.GID == o.User.GID &&
		t.Dir == o.Dir && slices.Equal(t.Cgroup.ProcsFiles, o.Cgroup.ProcsFiles)
}

// prepareDir makes the tenant's plugin directory, or adopts it if it is a
// directory owned by root, and sets its group and mode. Nothing but root can
// then create entries in it, and only the tenant's group can search it.
func (t *Tenant) prepareDir() error {
	err := os.Mkdir(t.Dir, 0o700)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("tenant %s: plugin directory: %w", t.Name, err)
	}
	fd, err := unix.Open(t.Dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tenant %s: plugin directory %s: %w", t.Name, t.Dir, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("tenant %s: plugin directory %s: %w", t.Name, t.Dir, err)
	}
	if st.Uid != 0 {
		return fmt.Errorf("tenant %s: plugin directory %s is owned by uid %d, not root", t.Name, t.Dir, st.Uid)
	}
	if err := unix.Fchown(fd, 0, int(t.User.GID)); err != nil {
		return fmt.Errorf("tenant %s: plugin directory %s: %w", t.Name, t.Dir, err)
	}
	if err := unix.Fchmod(fd, 0o710); err != nil {
		return fmt.Errorf("tenant %s: plugin directory %s: %w", t.Name, t.Dir, err)
	}
	return nil
}

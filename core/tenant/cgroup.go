package tenant

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// parentCgroup is the cgroup, under each hierarchy root, that holds the
// tenants' cgroups.
const parentCgroup = "kigumi"

// cpuPeriod is the CFS period, in microseconds, that CPU quotas refer to.
const cpuPeriod = 100000

// pollInterval is how often waits re-check the kernel's state.
const pollInterval = 10 * time.Millisecond

// v1Hierarchies are the v1 hierarchies a tenant cgroup is made in; the
// freezer stops forks while the tenant's processes are killed.
var v1Hierarchies = []string{"memory", "cpu", "pids", "freezer", "blkio"}

// v2Controllers are the v2 controllers enabled for tenant cgroups.
var v2Controllers = []string{"cpu", "io", "memory", "pids"}

// cgroups manages tenant cgroups under a cgroup root: a v2 hierarchy, or a
// directory of v1 hierarchies.
type cgroups struct {
	root string
	v2   bool
	// ioPath is a path on the filesystem whose disk the I/O limits
	// apply to; empty when none was given.
	ioPath string
}

// detectCgroups reports root as v2 when root itself is a cgroup2 hierarchy.
func detectCgroups(root, ioPath string) cgroups {
	_, err := os.Stat(filepath.Join(root, "cgroup.controllers"))
	return cgroups{root: root, v2: err == nil, ioPath: ioPath}
}

// hierarchies returns the hierarchy roots in use.
func (c cgroups) hierarchies() []string {
	if c.v2 {
		return []string{c.root}
	}
	hs := make([]string, len(v1Hierarchies))
	for i, h := range v1Hierarchies {
		hs[i] = filepath.Join(c.root, h)
	}
	return hs
}

// dirs returns the tenant's cgroup directory in each hierarchy.
func (c cgroups) dirs(tenant string) []string {
	hs := c.hierarchies()
	for i, h := range hs {
		hs[i] = filepath.Join(h, parentCgroup, tenant)
	}
	return hs
}

// prepare makes the parent cgroup in each hierarchy and, on v2, enables the
// controllers tenant cgroups need.
func (c cgroups) prepare() error {
	if c.v2 {
		avail, err := os.ReadFile(filepath.Join(c.root, "cgroup.controllers"))
		if err != nil {
			return fmt.Errorf("cgroup v2: %w", err)
		}
		for _, ctl := range v2Controllers {
			if !slices.Contains(strings.Fields(string(avail)), ctl) {
				return fmt.Errorf("cgroup v2 controller %q is not available in %s (is it bound to a v1 hierarchy?)", ctl, c.root)
			}
		}
		if err := enableControllers(c.root); err != nil {
			return err
		}
	}
	for _, h := range c.hierarchies() {
		if err := os.Mkdir(filepath.Join(h, parentCgroup), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create cgroup (is the %s hierarchy mounted read-write?): %w", h, err)
		}
	}
	if c.v2 {
		return enableControllers(filepath.Join(c.root, parentCgroup))
	}
	return nil
}

// enableControllers enables v2Controllers for the children of dir.
func enableControllers(dir string) error {
	file := filepath.Join(dir, "cgroup.subtree_control")
	cur, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("cgroup v2: %w", err)
	}
	var add []string
	for _, ctl := range v2Controllers {
		if !slices.Contains(strings.Fields(string(cur)), ctl) {
			add = append(add, "+"+ctl)
		}
	}
	if len(add) == 0 {
		return nil
	}
	return writeFile(file, strings.Join(add, " "))
}

// create makes the tenant's cgroups (or, for "<tenant>/<instance>", an
// instance's inside its tenant's), adopting those that exist, and returns
// the directories it made.
func (c cgroups) create(tenant string) ([]string, error) {
	if err := c.prepare(); err != nil {
		return nil, err
	}
	if parent := filepath.Dir(tenant); c.v2 && parent != "." {
		if err := enableControllers(filepath.Join(c.root, parentCgroup, parent)); err != nil {
			return nil, err
		}
	}
	var made []string
	for _, d := range c.dirs(tenant) {
		err := os.Mkdir(d, 0o755)
		if err == nil {
			made = append(made, d)
		} else if !errors.Is(err, fs.ErrExist) {
			return made, fmt.Errorf("create cgroup: %w", err)
		}
	}
	return made, nil
}

// setLimits writes l into the tenant's cgroups; zero means unlimited.
func (c cgroups) setLimits(tenant string, l Limits) error {
	quota := "-1"
	if l.MilliCPU > 0 {
		quota = strconv.FormatInt(l.MilliCPU*cpuPeriod/1000, 10)
	}
	pids := unlimited(l.Pids, "max")
	var files [][2]string
	if c.v2 {
		d := c.dirs(tenant)[0]
		if quota == "-1" {
			quota = "max"
		}
		files = [][2]string{
			{filepath.Join(d, "memory.max"), unlimited(l.MemoryBytes, "max")},
			{filepath.Join(d, "cpu.max"), fmt.Sprintf("%s %d", quota, cpuPeriod)},
			{filepath.Join(d, "pids.max"), pids},
		}
		if swap := filepath.Join(d, "memory.swap.max"); exists(swap) {
			files = append(files, [2]string{swap, "0"})
		}
		io, err := c.ioFiles(tenant, l.IO)
		if err != nil {
			return err
		}
		files = append(files, io...)
	} else {
		ds := c.dirs(tenant)
		mem := unlimited(l.MemoryBytes, "-1")
		files = [][2]string{
			{filepath.Join(ds[0], "memory.limit_in_bytes"), mem},
			{filepath.Join(ds[1], "cpu.cfs_period_us"), strconv.Itoa(cpuPeriod)},
			{filepath.Join(ds[1], "cpu.cfs_quota_us"), quota},
			{filepath.Join(ds[2], "pids.max"), pids},
		}
		io, err := c.ioFiles(tenant, l.IO)
		if err != nil {
			return err
		}
		files = append(files, io...)
		// Memory plus swap gets the same limit, so nothing swaps past it.
		// It may never be below the memory limit: when raising, it goes
		// first (and succeeds); when lowering, it fails and goes last.
		if memsw := filepath.Join(ds[0], "memory.memsw.limit_in_bytes"); exists(memsw) {
			if writeFile(memsw, mem) != nil {
				files = append(files, [2]string{memsw, mem})
			}
		}
	}
	for _, f := range files {
		if err := writeFile(f[0], f[1]); err != nil {
			return fmt.Errorf("set tenant %s limits: %w", tenant, err)
		}
	}
	return nil
}

// ioFiles returns the files and values that set the I/O limits l on the
// disk of c.ioPath: v2's io.max, or v1's blkio.throttle.*_device (where a
// rate of 0 removes the device's rule). v1's blkio throttles only I/O
// that reaches the block layer in the writer's context: reads, direct
// writes and fsync, not buffered writes, which the kernel writes back
// later as its own. Without an ioPath there are none, and limits are an
// error; so they are where the disk cannot be found, such as a state
// directory on tmpfs.
func (c cgroups) ioFiles(tenant string, l sdk.IOLimits) ([][2]string, error) {
	if c.ioPath == "" {
		if l != (sdk.IOLimits{}) {
			return nil, fmt.Errorf("set tenant %s limits: I/O limits need the state directory's device, and none was given", tenant)
		}
		return nil, nil
	}
	dev, err := blockDevice(c.ioPath)
	if err != nil {
		if l == (sdk.IOLimits{}) {
			return nil, nil
		}
		return nil, fmt.Errorf("set tenant %s I/O limits: %w", tenant, err)
	}
	if c.v2 {
		d := c.dirs(tenant)[0]
		v := fmt.Sprintf("%s rbps=%s wbps=%s riops=%s wiops=%s", dev,
			unlimited(l.ReadBPS, "max"), unlimited(l.WriteBPS, "max"), unlimited(l.ReadIOPS, "max"), unlimited(l.WriteIOPS, "max"))
		return [][2]string{{filepath.Join(d, "io.max"), v}}, nil
	}
	d := c.dirs(tenant)[slices.Index(v1Hierarchies, "blkio")]
	var files [][2]string
	for _, f := range []struct {
		name string
		v    int64
	}{{"read_bps", l.ReadBPS}, {"write_bps", l.WriteBPS}, {"read_iops", l.ReadIOPS}, {"write_iops", l.WriteIOPS}} {
		files = append(files, [2]string{filepath.Join(d, "blkio.throttle."+f.name+"_device"), fmt.Sprintf("%s %d", dev, f.v)})
	}
	return files, nil
}

// blockDevice returns "MAJOR:MINOR" of the disk that holds path: the
// device of its filesystem, or, for a filesystem with an anonymous device
// (btrfs), the block device its mount names; a partition's disk, since
// the kernel throttles whole disks only.
func blockDevice(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", fmt.Errorf("find the disk of %s: %w", path, err)
	}
	dev := st.Dev
	if unix.Major(dev) == 0 {
		src, err := mountSource(path)
		if err != nil {
			return "", err
		}
		var sst unix.Stat_t
		if err := unix.Stat(src, &sst); err != nil || sst.Mode&unix.S_IFMT != unix.S_IFBLK {
			return "", fmt.Errorf("%s is on no block device (its filesystem is mounted from %q), so its I/O cannot be limited", path, src)
		}
		dev = sst.Rdev
	}
	sys := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev))
	if exists(filepath.Join(sys, "partition")) {
		real, err := filepath.EvalSymlinks(sys)
		if err != nil {
			return "", fmt.Errorf("find the disk of %s: %w", path, err)
		}
		b, err := os.ReadFile(filepath.Join(filepath.Dir(real), "dev"))
		if err != nil {
			return "", fmt.Errorf("find the disk of partition %s: %w", real, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev)), nil
}

// mountSource returns the source of the mount that holds path, from
// /proc/self/mountinfo (the mount with the longest mount point that is a
// prefix of path, the last such when mounts are stacked).
func mountSource(path string) (string, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("find the mount of %s: %w", path, err)
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find the mount of %s: %w", path, err)
	}
	best, src := -1, ""
	for _, line := range strings.Split(string(data), "\n") {
		// id parent maj:min root mountpoint options... - fstype source super
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 2 {
			continue
		}
		mnt := unescapeMount(f[4])
		if real == mnt || mnt == "/" || strings.HasPrefix(real, mnt+"/") {
			if len(mnt) >= best {
				best, src = len(mnt), unescapeMount(g[1])
			}
		}
	}
	if best < 0 {
		return "", fmt.Errorf("no mount holds %s", path)
	}
	return src, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unlimited(n int64, none string) string {
	if n == 0 {
		return none
	}
	return strconv.FormatInt(n, 10)
}

// procs returns the sorted ids of the processes in the tenant's cgroups and
// their descendants, in any hierarchy.
func (c cgroups) procs(tenant string) ([]int, error) {
	var pids []int
	for _, d := range c.dirs(tenant) {
		err := filepath.WalkDir(d, func(path string, e fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil || !e.IsDir() {
				return err
			}
			data, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			if err != nil {
				return err
			}
			for _, f := range strings.Fields(string(data)) {
				pid, err := strconv.Atoi(f)
				if err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				pids = append(pids, pid)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list tenant %s processes: %w", tenant, err)
		}
	}
	slices.Sort(pids)
	return slices.Compact(pids), nil
}

// kill kills every process in the tenant's cgroups and waits until they are
// gone.
func (c cgroups) kill(ctx context.Context, tenant string) error {
	for {
		n, err := c.killOnce(ctx, tenant)
		if err != nil || n == 0 {
			return err
		}
		if err := sleep(ctx, pollInterval); err != nil {
			return fmt.Errorf("kill tenant %s processes: %w", tenant, err)
		}
	}
}

// killOnce kills the processes now in the tenant's cgroups and returns how
// many there were: on v2 with cgroup.kill, on v1 with SIGKILL while the
// freezer cgroup is frozen, so that none can fork meanwhile.
func (c cgroups) killOnce(ctx context.Context, tenant string) (n int, err error) {
	if c.v2 {
		pids, err := c.procs(tenant)
		if err != nil || len(pids) == 0 {
			return 0, err
		}
		return len(pids), writeFile(filepath.Join(c.dirs(tenant)[0], "cgroup.kill"), "1")
	}
	state := filepath.Join(c.root, "freezer", parentCgroup, tenant, "freezer.state")
	if exists(state) {
		if err := freeze(ctx, state); err != nil {
			return 0, err
		}
		defer func() {
			if terr := writeFile(state, "THAWED"); terr != nil {
				err = errors.Join(err, terr)
			}
		}()
	}
	pids, err := c.procs(tenant)
	if err != nil {
		return 0, err
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return 0, fmt.Errorf("kill %d: %w", pid, err)
		}
	}
	return len(pids), nil
}

// freeze freezes the v1 freezer cgroup of state and waits until it is frozen.
func freeze(ctx context.Context, state string) error {
	if err := writeFile(state, "FROZEN"); err != nil {
		return err
	}
	for {
		cur, err := os.ReadFile(state)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(cur)) == "FROZEN" {
			return nil
		}
		if err := sleep(ctx, pollInterval); err != nil {
			return fmt.Errorf("freeze %s: %w", filepath.Dir(state), err)
		}
	}
}

// remove removes the tenant's cgroups, children first. They must hold no
// processes; removal is retried while the kernel reports them busy.
func (c cgroups) remove(ctx context.Context, tenant string) error {
	for _, d := range c.dirs(tenant) {
		if err := removeCgroup(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

func removeCgroup(ctx context.Context, dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove cgroup: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroup(ctx, filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		if err := sleep(ctx, pollInterval); err != nil {
			return fmt.Errorf("remove cgroup %s: busy: %w", dir, err)
		}
	}
}

// writeFile writes v to a cgroup file.
func writeFile(path, v string) error {
	if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
		return fmt.Errorf("write %q to %s: %w", v, path, err)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

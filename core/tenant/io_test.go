package tenant

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// envFlood makes the test binary a writer (see flood).
const envFlood = "KIGUMI_TENANT_TEST_FLOOD"

// floodTime is how long each writer writes.
const floodTime = 2 * time.Second

// flood, given "path", waits for a line on stdin (its cgroups are joined
// meanwhile), then writes 256 KiB blocks with O_DIRECT, past the page
// cache, over the first 8 MiB of path again and again for floodTime, and
// prints how many bytes it wrote.
func flood(path string) int {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_DIRECT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer unix.Close(fd)
	// O_DIRECT needs an aligned buffer: an anonymous mapping is.
	buf, err := unix.Mmap(-1, 0, 256<<10, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var n int64
	for end := time.Now().Add(floodTime); time.Now().Before(end); {
		m, err := unix.Pwrite(fd, buf, n%(8<<20))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		n += int64(m)
	}
	fmt.Println(n)
	return 0
}

// floodIn runs flood on path in cgroup cg and returns the bytes it wrote.
func floodIn(t *testing.T, cg sdk.Cgroup, path string) int64 {
	t.Helper()
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = []string{envFlood + "=" + path}
	cmd.Dir = "/"
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Error(err)
		return 0
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Error(err)
		return 0
	}
	for _, f := range cg.ProcsFiles {
		if err := os.WriteFile(f, []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
			t.Error(err)
		}
	}
	fmt.Fprintln(in)
	err = cmd.Wait()
	n, perr := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
	if err != nil || perr != nil {
		t.Errorf("writer: %v: %s", err, out.String())
	}
	return n
}

// stateDev returns "MAJOR:MINOR" of the filesystem holding dir, which on
// this host is a whole disk.
func stateDev(t *testing.T, dir string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	if _, err := os.Stat("/sys/dev/block/" + dev + "/partition"); err == nil {
		t.Fatalf("%s is on a partition: this test expects a whole disk", dir)
	}
	return dev
}

// TestIOLimitsV1 sets a tenant's and its instance's I/O limits on the
// host's v1 blkio hierarchy and checks the files, then has the instance
// write flat out with O_DIRECT (which v1 throttles; buffered writes it
// does not, and quotafs throttles those) while a neighbour tenant writes
// to the same disk: the instance gets at most 1.5 times its rate, the
// neighbour several times more.
func TestIOLimitsV1(t *testing.T) {
	dir := t.TempDir()
	dev := stateDev(t, dir)
	m := newManager(t, WithIODevice(dir))
	if m.cg.v2 {
		t.Fatal("this test needs the host's v1 hierarchies")
	}
	const rate = 2 << 20
	s := ensured(t, m, Limits{IO: sdk.IOLimits{WriteBPS: 2 * rate, ReadIOPS: 300}})
	checkFiles(t, s.Tenant, map[string]string{
		"blkio/blkio.throttle.write_bps_device":  dev + " " + strconv.Itoa(2*rate),
		"blkio/blkio.throttle.read_iops_device":  dev + " 300",
		"blkio/blkio.throttle.read_bps_device":   "",
		"blkio/blkio.throttle.write_iops_device": "",
	})
	cg, err := m.EnsureInstance(testCtx(t), s.Tenant, "w", Limits{IO: sdk.IOLimits{WriteBPS: rate}})
	if err != nil {
		t.Fatal(err)
	}
	checkFiles(t, s.Tenant+"/w", map[string]string{"blkio/blkio.throttle.write_bps_device": dev + " " + strconv.Itoa(rate)})
	// Raising to unlimited removes the rule.
	if _, err := m.Ensure(testCtx(t), Spec{Tenant: s.Tenant, UID: s.UID, SubIDStart: s.SubIDStart, SubIDCount: s.SubIDCount, Home: s.Home}); err != nil {
		t.Fatal(err)
	}
	checkFiles(t, s.Tenant, map[string]string{"blkio/blkio.throttle.write_bps_device": "", "blkio/blkio.throttle.read_iops_device": ""})

	n := ensured(t, m, Limits{})
	ncg, err := m.EnsureInstance(testCtx(t), n.Tenant, "w", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var limited, free int64
	var wg sync.WaitGroup
	wg.Go(func() { limited = floodIn(t, cg, filepath.Join(dir, "limited")) })
	wg.Go(func() { free = floodIn(t, ncg, filepath.Join(dir, "free")) })
	wg.Wait()
	limit := rate * floodTime.Seconds()
	t.Logf("in %v: limited instance wrote %d bytes (limit %.0f), neighbour %d", floodTime, limited, limit, free)
	if float64(limited) > 1.5*limit || float64(limited) < 0.25*limit {
		t.Errorf("the limited instance wrote %d bytes in %v, want at most 1.5 times %.0f", limited, floodTime, limit)
	}
	if float64(free) < 3*limit {
		t.Errorf("the neighbour wrote only %d bytes in %v", free, floodTime)
	}
}

// TestIOLimitsV2 checks io.max on a fake cgroup2 tree, and that limits
// without a known disk are an error.
func TestIOLimitsV2(t *testing.T) {
	root := t.TempDir()
	dev := stateDev(t, root)
	for name, content := range map[string]string{
		"cgroup.controllers":            "cpu io memory pids",
		"cgroup.subtree_control":        "",
		"kigumi/cgroup.subtree_control": "",
	} {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := detectCgroups(root, root)
	if _, err := c.create("t"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		io   sdk.IOLimits
		want string
	}{
		{sdk.IOLimits{ReadBPS: 1 << 20, WriteIOPS: 200}, dev + " rbps=1048576 wbps=max riops=max wiops=200"},
		{sdk.IOLimits{}, dev + " rbps=max wbps=max riops=max wiops=max"},
	} {
		if err := c.setLimits("t", Limits{IO: tt.io}); err != nil {
			t.Fatal(err)
		}
		if got := readTrim(t, filepath.Join(root, "kigumi/t/io.max")); got != tt.want {
			t.Errorf("io.max = %q, want %q", got, tt.want)
		}
	}
	if got := readTrim(t, filepath.Join(root, "cgroup.subtree_control")); !strings.Contains(got, "+io") {
		t.Errorf("io controller not enabled: %q", got)
	}

	noDisk := detectCgroups(root, "")
	if err := noDisk.setLimits("t", Limits{IO: sdk.IOLimits{WriteBPS: 1 << 20}}); err == nil || !strings.Contains(err.Error(), "none was given") {
		t.Errorf("limits without a disk: %v", err)
	}
	if err := noDisk.setLimits("t", Limits{}); err != nil {
		t.Errorf("no limits without a disk: %v", err)
	}
	tmpfs := detectCgroups(root, "/dev/shm")
	if err := tmpfs.setLimits("t", Limits{IO: sdk.IOLimits{WriteBPS: 1 << 20}}); err == nil || !strings.Contains(err.Error(), "no block device") {
		t.Errorf("limits on tmpfs: %v", err)
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/mnt/a\040b\134c`); got != `/mnt/a b\c` {
		t.Errorf("unescape = %q", got)
	}
}

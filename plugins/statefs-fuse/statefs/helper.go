package statefs

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/fusemount"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/quotafs"
)

// HelperCommand is the first argument that makes an executable embedding
// this plugin serve one instance's FUSE filesystem (HelperMain) instead.
const HelperCommand = "statefs-fuse-serve"

// helperConfig is what the plugin sends a new helper on fd 3.
type helperConfig struct {
	Backing    string   `json:"backing"`
	Mountpoint string   `json:"mountpoint"`
	Socket     string   `json:"socket"`
	UIDs       []uint32 `json:"uids"`
	// UIDRanges are the tenant's subordinate uids.
	UIDRanges  []quotafs.UIDRange `json:"uid_ranges,omitempty"`
	MaxBytes   int64              `json:"max_bytes"`
	MaxEntries int64              `json:"max_entries"`
	IO         quotafs.Rates      `json:"io"`
}

// helperRecord is a running helper's pid file: its pid and start time
// (clock ticks since boot), which tell it from a later process of the
// same pid.
type helperRecord struct {
	Pid        int    `json:"pid"`
	StartTicks uint64 `json:"start_ticks"`
}

// control is a request to a helper: "usage" or "hash".
type control struct {
	Op string `json:"op"`
}

// controlReply is a helper's answer.
type controlReply struct {
	Usage quotafs.Usage `json:"usage"`
	Root  string        `json:"root,omitempty"` // hex
	Error string        `json:"error,omitempty"`
	// MountID and Dev identify the helper's mount (fusemount.Mount).
	MountID int    `json:"mount_id"`
	Dev     uint64 `json:"dev"`
}

// stopGrace bounds how long a stopping helper waits for its serve loop to
// end after unmounting: a lazily unmounted filesystem that something
// still holds (an open file, a bind mount elsewhere) keeps it running.
// Ending the process then closes /dev/fuse, which aborts the connection.
const stopGrace = 2 * time.Second

// HelperMain serves one instance's filesystem: it reads its config from fd
// 3, mounts, writes "ok" (or why not) to fd 4, and serves until the mount
// goes (unmounted by the plugin, or lazily by anyone and no longer used)
// or it gets SIGTERM. On SIGTERM it unmounts its mount if that is still
// mounted, and ends within stopGrace even if the filesystem stays in use.
// It answers the plugin's usage and hash requests on a unix socket.
func HelperMain([]string) int {
	unix.Umask(0)
	ready := os.NewFile(4, "ready")
	fail := func(err error) int {
		fmt.Fprintln(ready, err)
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var cfg helperConfig
	if err := json.NewDecoder(io.LimitReader(os.NewFile(3, "config"), 1<<20)).Decode(&cfg); err != nil {
		return fail(fmt.Errorf("read config: %w", err))
	}
	// One descriptor per directory level while counting and hashing.
	_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 1 << 16, Max: 1 << 16})
	fsys, err := quotafs.Open(quotafs.Config{Backing: cfg.Backing, UIDs: cfg.UIDs, UIDRanges: cfg.UIDRanges, MaxBytes: cfg.MaxBytes, MaxEntries: cfg.MaxEntries, IO: cfg.IO})
	if err != nil {
		return fail(err)
	}
	os.Remove(cfg.Socket)
	ln, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		return fail(err)
	}
	defer func() {
		ln.Close()
		os.Remove(cfg.Socket)
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	srv, err := fsys.Mount(cfg.Mountpoint)
	if err != nil {
		return fail(fmt.Errorf("mount %s: %w", cfg.Mountpoint, err))
	}
	// The helper never touches its own mount (see quotafs.Mount): the
	// mount's id and device, from mountinfo, tell it from whatever is
	// mounted at the mount point once it has gone.
	mine := srv.Mount
	served := make(chan struct{})
	go func() {
		srv.Wait()
		close(served)
	}()
	go serveControl(ln, fsys, mine)
	fmt.Fprintln(ready, "ok")
	ready.Close()
	select {
	case <-served:
		return 0
	case <-sigs:
	}
	ms, err := fusemount.At(cfg.Mountpoint)
	switch {
	case err != nil:
		fmt.Fprintf(os.Stderr, "stopping: %v; ending\n", err)
		return 0
	case len(ms) == 0 || !slices.ContainsFunc(ms, func(m fusemount.Mount) bool { return m.ID == mine.ID && m.Dev() == mine.Dev() }):
		fmt.Fprintf(os.Stderr, "stopping: %s is no longer mounted here; ending\n", cfg.Mountpoint)
		return 0
	case ms[len(ms)-1].ID != mine.ID:
		// Something is mounted over it: unmounting the mount point would
		// take that off. Ending closes /dev/fuse, which leaves the mount
		// failing with ENOTCONN for the plugin to clear.
		fmt.Fprintf(os.Stderr, "stopping: %s is mounted over; ending\n", cfg.Mountpoint)
		return 0
	}
	if err := srv.Unmount(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping: %v; detaching it\n", err)
		if err := unix.Unmount(cfg.Mountpoint, unix.MNT_DETACH); err != nil {
			fmt.Fprintf(os.Stderr, "stopping: detach %s: %v\n", cfg.Mountpoint, err)
		}
	}
	select {
	case <-served:
	case <-time.After(stopGrace):
		fmt.Fprintf(os.Stderr, "stopping: %s still in use %v after unmounting; ending\n", cfg.Mountpoint, stopGrace)
	}
	return 0
}

// serveControl answers requests, one JSON line each way per connection.
// Every reply names the helper's mount.
func serveControl(ln net.Listener, fsys *quotafs.FS, mine fusemount.Mount) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var req control
			if err := json.NewDecoder(bufio.NewReader(io.LimitReader(c, 4096))).Decode(&req); err != nil {
				return
			}
			rep := controlReply{MountID: mine.ID, Dev: mine.Dev()}
			switch req.Op {
			case "usage":
				rep.Usage = fsys.Usage()
			case "hash":
				root, err := fsys.Root()
				if err != nil {
					rep.Error = err.Error()
				}
				rep.Root = hex.EncodeToString(root[:])
			default:
				rep.Error = "unknown op " + req.Op
			}
			_ = json.NewEncoder(c).Encode(rep)
		}()
	}
}

// paths of an instance's FUSE state: the backing directory and the
// helper's run directory (pid file and socket), both in root-only
// directories next to the state, out of the tenant's reach.
func (d handleData) backing() string {
	return filepath.Join(filepath.Dir(d.Dir), ".data", filepath.Base(d.Dir))
}

func (d handleData) runDir() string {
	return filepath.Join(filepath.Dir(d.Dir), ".run", filepath.Base(d.Dir))
}

func (d handleData) socket() string  { return filepath.Join(d.runDir(), "ctl.sock") }
func (d handleData) pidFile() string { return filepath.Join(d.runDir(), "helper.json") }

// procStat returns the start time of process pid (0 if there is none)
// and its state letter ('Z' for a zombie).
func procStat(pid int) (ticks uint64, state byte) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0
	}
	// Fields after the command (which may hold spaces) start after ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n, f[0][0]
}

// startTicks returns the start time of process pid, or 0 if there is none.
func startTicks(pid int) uint64 {
	n, _ := procStat(pid)
	return n
}

// running reports whether r's process runs: it exists and is not a
// zombie (one whose main thread has ended while another is stuck is
// one).
func (r helperRecord) running() bool {
	n, state := procStat(r.Pid)
	return n == r.StartTicks && state != 'Z' && state != 'X'
}

// gone reports whether r's process has ended: no process of its pid and
// start time, or a zombie with no thread left.
func (r helperRecord) gone() bool {
	n, state := procStat(r.Pid)
	if n != r.StartTicks {
		return true
	}
	if state != 'Z' && state != 'X' {
		return false
	}
	tasks, err := os.ReadDir("/proc/" + strconv.Itoa(r.Pid) + "/task")
	return err != nil || len(tasks) <= 1
}

// helper returns the instance's helper, if any, and whether it runs.
func (d handleData) helper() (helperRecord, bool) {
	var r helperRecord
	b, err := os.ReadFile(d.pidFile())
	if err != nil || json.Unmarshal(b, &r) != nil || r.Pid <= 0 {
		return r, false
	}
	return r, r.running()
}

// mounts returns what is mounted at the instance's mount point, bottom
// first, from mountinfo: nothing here stats the mount point, which hangs
// on a FUSE mount whose connection lives on without a server.
func (d handleData) mounts() ([]fusemount.Mount, error) {
	ms, err := fusemount.At(d.Dir)
	if err != nil {
		return nil, fmt.Errorf("mounts at %s: %w", d.Dir, err)
	}
	return ms, nil
}

// mounted reports whether anything is mounted at the instance's mount
// point (an error reading mountinfo counts as mounted).
func (d handleData) mounted() bool {
	ms, err := d.mounts()
	return err != nil || len(ms) > 0
}

// askTimeout bounds how long the plugin waits for a helper's answer
// before it takes the helper for dead (hung or stopped).
const askTimeout = 2 * time.Second

// serving reports whether the instance's filesystem is served: its helper
// runs, answers, and names as its own the one mount at the mount point.
func (d handleData) serving(ctx context.Context) bool {
	if _, alive := d.helper(); !alive {
		return false
	}
	ms, err := d.mounts()
	if err != nil || len(ms) != 1 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, askTimeout)
	defer cancel()
	rep, err := ask(ctx, d, "usage")
	return err == nil && rep.MountID == ms[0].ID && rep.Dev == ms[0].Dev()
}

// serve makes sure the instance's filesystem is mounted and served: a
// serving helper is adopted; otherwise what is there is cleared (see
// clear) and a new helper started.
func (f *FS) serve(ctx context.Context, d handleData) error {
	if d.serving(ctx) {
		return nil
	}
	if err := d.clear(ctx); err != nil {
		return err
	}
	if err := os.MkdirAll(d.runDir(), 0o700); err != nil {
		return err
	}
	return f.launch(ctx, d)
}

// clear takes down whatever serves or is mounted at the instance's mount
// point, in an order that cannot hang: first the connections of its
// state mounts are aborted (their requests fail with ENOTCONN, which
// also frees a helper thread stuck on its own mount, which would
// otherwise keep the helper from dying), then the helper is killed and
// waited for, then every mount there is detached.
func (d handleData) clear(ctx context.Context) error {
	rec, alive := d.helper()
	ms, err := d.mounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range ms {
		if m.FUSE() {
			errs = append(errs, fusemount.Abort(m.Conn()))
		}
	}
	if alive || (rec.Pid > 0 && !rec.gone()) {
		d.abortHelper(ctx, rec)
		_ = unix.Kill(rec.Pid, unix.SIGKILL)
		if !waitGone(rec) {
			errs = append(errs, fmt.Errorf("helper %d of %s does not end after SIGKILL", rec.Pid, d.Instance))
		}
	}
	for range ms {
		if err := unix.Unmount(d.Dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("clear stale mount %s: %w", d.Dir, err))
			break
		}
	}
	return errors.Join(errs...)
}

// abortHelper aborts the connection of the mount helper r says is its
// own, which may be mounted elsewhere or detached, if r answers.
func (d handleData) abortHelper(ctx context.Context, r helperRecord) {
	if !r.running() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, askTimeout/4)
	defer cancel()
	if rep, err := ask(ctx, d, "usage"); err == nil && rep.Dev != 0 {
		_ = fusemount.Abort(fusemount.Mount{Major: unix.Major(rep.Dev), Minor: unix.Minor(rep.Dev)}.Conn())
	}
}

// waitGone waits a bounded time for process r to end, and reports
// whether it did.
func waitGone(r helperRecord) bool {
	for i := 0; i < 500; i++ {
		if r.gone() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r.gone()
}

// launch starts a detached helper for d and waits until it has mounted.
func (f *FS) launch(ctx context.Context, d handleData) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer cfgW.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		return err
	}
	defer readyR.Close()
	logf, err := os.OpenFile(filepath.Join(d.runDir(), "helper.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		cfgR.Close()
		readyW.Close()
		return err
	}
	defer logf.Close()
	cmd := exec.Command(exe, HelperCommand)
	cmd.Env = []string{"TZ=UTC"}
	cmd.Dir = "/"
	cmd.Stderr = logf
	cmd.ExtraFiles = []*os.File{cfgR, readyW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	cfgR.Close()
	readyW.Close()
	if err != nil {
		return fmt.Errorf("start helper: %w", err)
	}
	// The helper outlives the plugin: nothing waits for it but this
	// goroutine, which reaps it should it end while the plugin runs.
	go func() { _ = cmd.Wait() }()
	rec := helperRecord{Pid: cmd.Process.Pid, StartTicks: startTicks(cmd.Process.Pid)}
	b, _ := json.Marshal(rec)
	if err := os.WriteFile(d.pidFile(), b, 0o600); err != nil {
		_ = cmd.Process.Kill()
		return err
	}
	cfg := helperConfig{Backing: d.backing(), Mountpoint: d.Dir, Socket: d.socket(), UIDs: []uint32{d.UID}, MaxBytes: d.Size, MaxEntries: d.Inodes, IO: d.IO}
	if d.SubCount > 0 {
		cfg.UIDRanges = []quotafs.UIDRange{{First: d.SubUID, Count: d.SubCount}}
	}
	_ = json.NewEncoder(cfgW).Encode(cfg)
	cfgW.Close()
	msg := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(readyR, 4096))
		msg <- strings.TrimSpace(string(b))
	}()
	select {
	case m := <-msg:
		if m != "ok" {
			_ = cmd.Process.Kill()
			return fmt.Errorf("helper of %s: %s", d.Instance, m)
		}
		return nil
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		return ctx.Err()
	}
}

// ask sends the instance's helper a request.
func ask(ctx context.Context, d handleData, op string) (controlReply, error) {
	var rep controlReply
	var dialer net.Dialer
	c, err := dialer.DialContext(ctx, "unix", d.socket())
	if err != nil {
		return rep, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := json.NewEncoder(c).Encode(control{Op: op}); err != nil {
		return rep, err
	}
	if err := json.NewDecoder(io.LimitReader(c, 1<<20)).Decode(&rep); err != nil {
		return rep, err
	}
	if rep.Error != "" {
		return rep, errors.New(rep.Error)
	}
	return rep, nil
}

// stop unmounts the instance's filesystem and ends its helper: it asks
// the helper to end (SIGTERM) and, should it not within the grace, aborts
// the connections of the state mounts that were there and kills it.
func (d handleData) stop(ctx context.Context) error {
	rec, alive := d.helper()
	ms, err := d.mounts()
	if err != nil {
		return err
	}
	if !alive {
		// Nothing serves them: nothing may wait on them.
		for _, m := range ms {
			if m.FUSE() {
				_ = fusemount.Abort(m.Conn())
			}
		}
	}
	for range ms {
		if err := unix.Unmount(d.Dir, 0); err != nil {
			if err := unix.Unmount(d.Dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmount %s: %w", d.Dir, err)
			}
		}
	}
	if rec.Pid > 0 && !rec.gone() {
		if alive {
			_ = unix.Kill(rec.Pid, unix.SIGTERM)
		}
		if !alive || !waitGone(rec) {
			for _, m := range ms {
				if m.FUSE() {
					_ = fusemount.Abort(m.Conn())
				}
			}
			d.abortHelper(ctx, rec)
			_ = unix.Kill(rec.Pid, unix.SIGKILL)
			if !waitGone(rec) {
				return fmt.Errorf("helper %d of %s does not end after SIGKILL", rec.Pid, d.Instance)
			}
		}
	}
	if err := os.Remove(d.pidFile()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

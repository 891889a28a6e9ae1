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
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

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
	// The mount's device tells it from whatever is mounted at the mount
	// point once it has gone.
	var st unix.Stat_t
	if err := unix.Lstat(cfg.Mountpoint, &st); err != nil {
		_ = srv.Unmount()
		return fail(fmt.Errorf("stat mount %s: %w", cfg.Mountpoint, err))
	}
	dev := st.Dev
	served := make(chan struct{})
	go func() {
		srv.Wait()
		close(served)
	}()
	go serveControl(ln, fsys)
	fmt.Fprintln(ready, "ok")
	ready.Close()
	select {
	case <-served:
		return 0
	case <-sigs:
	}
	if err := unix.Lstat(cfg.Mountpoint, &st); err != nil || st.Dev != dev {
		fmt.Fprintf(os.Stderr, "stopping: %s is no longer mounted here; ending\n", cfg.Mountpoint)
		return 0
	}
	if err := srv.Unmount(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping: unmount %s: %v; detaching it\n", cfg.Mountpoint, err)
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
func serveControl(ln net.Listener, fsys *quotafs.FS) {
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
			var rep controlReply
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

// startTicks returns the start time of process pid, or 0 if there is none.
func startTicks(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start after ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n
}

// helper returns the instance's running helper, if any.
func (d handleData) helper() (helperRecord, bool) {
	var r helperRecord
	b, err := os.ReadFile(d.pidFile())
	if err != nil || json.Unmarshal(b, &r) != nil || r.Pid <= 0 {
		return r, false
	}
	return r, startTicks(r.Pid) == r.StartTicks
}

// mountState says whether the mount point has a live FUSE mount (ok), a
// stale one whose server is gone (stale: ENOTCONN), or none.
func mountState(mnt string) (ok, stale bool) {
	var st, parent unix.Stat_t
	err := unix.Lstat(mnt, &st)
	if errors.Is(err, unix.ENOTCONN) {
		return false, true
	}
	if err != nil || unix.Lstat(filepath.Dir(mnt), &parent) != nil {
		return false, false
	}
	return st.Dev != parent.Dev, false
}

// serve makes sure the instance's filesystem is mounted and served: a
// running helper with a live mount is adopted; otherwise a stale mount is
// cleared, a helper left over is ended, and a new one is started.
func (f *FS) serve(ctx context.Context, d handleData) error {
	rec, alive := d.helper()
	ok, stale := mountState(d.Dir)
	if alive && ok {
		return nil
	}
	if alive {
		_ = unix.Kill(rec.Pid, unix.SIGKILL)
		waitGone(rec)
	}
	if ok || stale {
		if err := unix.Unmount(d.Dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("clear stale mount %s: %w", d.Dir, err)
		}
	}
	if err := os.MkdirAll(d.runDir(), 0o700); err != nil {
		return err
	}
	return f.launch(ctx, d)
}

// waitGone waits a bounded time for process r to end.
func waitGone(r helperRecord) {
	for i := 0; i < 500 && startTicks(r.Pid) == r.StartTicks; i++ {
		time.Sleep(10 * time.Millisecond)
	}
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

// stop unmounts the instance's filesystem and ends its helper.
func (d handleData) stop() error {
	rec, alive := d.helper()
	ok, stale := mountState(d.Dir)
	if ok || stale {
		if err := unix.Unmount(d.Dir, 0); err != nil {
			if err := unix.Unmount(d.Dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("unmount %s: %w", d.Dir, err)
			}
		}
	}
	if alive {
		_ = unix.Kill(rec.Pid, unix.SIGTERM)
		waitGone(rec)
		if startTicks(rec.Pid) == rec.StartTicks {
			_ = unix.Kill(rec.Pid, unix.SIGKILL)
			waitGone(rec)
		}
	}
	if err := os.Remove(d.pidFile()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// exitGrace bounds how long a call that lost its connection waits for the
// plugin process to be seen exiting, to report its exit status.
const exitGrace = 2 * time.Second

// process is one run of a plugin executable, as a go-plugin runner. Unlike
// go-plugin's own runner it notices the process's exit as soon as it
// happens, even while a grandchild keeps its output pipes open, and keeps
// the exit status to explain failed calls.
//
// It only ever signals its own child, through the pidfd Go keeps for it and
// never after reaping it, so a reused pid is never hit.
type process struct {
	label string
	path  string
	args  []string
	// tenant, when set, makes the process run as the tenant, through the
	// trampoline in self (see ExecMain).
	tenant *Tenant
	self   string

	cmd            *exec.Cmd
	cgroupFD       int      // the v2 cgroup the process is cloned into, or -1
	stdout, stderr *os.File // read ends of the child's output pipes
	handshake      firstLine

	done chan struct{} // closed when the process has exited
	exit string        // the exit status, set before done is closed
	err  error         // cmd.Wait's error, set before done is closed
}

var _ runner.Runner = (*process)(nil)

// runner is the go-plugin RunnerFunc. spec carries the environment that
// go-plugin prepared (handshake cookie, protocol versions, socket
// directory); the process gets that and the allow-listed variables of
// pluginEnv, nothing else of the host's.
func (p *process) runner(_ hclog.Logger, spec *exec.Cmd, socketDir string) (runner.Runner, error) {
	env := append(pluginEnv(), spec.Env...)
	p.cgroupFD = -1
	// The kernel kills the plugin if the host dies first. (Strictly, when the
	// starting OS thread ends; Go ends threads only for goroutines that exit
	// while locked to one, so never start plugins from such a goroutine.)
	// Its own session keeps it away from the host's terminal.
	attr := &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if p.tenant == nil {
		p.cmd = exec.Command(p.path, p.args...)
		p.cmd.Env, p.cmd.SysProcAttr = env, attr
		return p, nil
	}
	t := p.tenant
	// go-plugin made the socket directory root's and 0700; the plugin
	// makes its socket there as the tenant.
	if err := os.Chown(socketDir, int(t.User.UID), int(t.User.GID)); err != nil {
		return nil, fmt.Errorf("%s: socket directory: %w", p.label, err)
	}
	procs := t.Cgroup.ProcsFiles
	if fd, ok, err := cgroup2Dir(procs); err != nil {
		return nil, fmt.Errorf("%s: %w", p.label, err)
	} else if ok {
		attr.UseCgroupFD, attr.CgroupFD = true, fd
		p.cgroupFD, procs = fd, nil
	}
	args := append([]string{ExecCommand}, execArgs(t.User.UID, t.User.GID, procs, os.Getpid(), p.path, p.args)...)
	p.cmd = exec.Command(p.self, args...)
	p.cmd.Env, p.cmd.SysProcAttr, p.cmd.Dir = env, attr, "/"
	return p, nil
}

// cgroup2Dir opens the cgroup of procs when it is a single cgroup on a
// cgroup2 hierarchy, so that the process can be cloned into it.
func cgroup2Dir(procs []string) (fd int, ok bool, err error) {
	if len(procs) != 1 {
		return -1, false, nil
	}
	dir := filepath.Dir(procs[0])
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return -1, false, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return -1, false, nil
	}
	fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, false, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return fd, true, nil
}

// Start starts the process with fresh pipes for its stdout and stderr.
func (p *process) Start(context.Context) error {
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		_, _ = outR.Close(), outW.Close()
		return err
	}
	p.cmd.Stdout, p.cmd.Stderr = outW, errW
	err = p.cmd.Start()
	// The child has its own copies of the write ends.
	_, _ = outW.Close(), errW.Close()
	if p.cgroupFD >= 0 {
		_ = unix.Close(p.cgroupFD)
		p.cgroupFD = -1
	}
	if err != nil {
		_, _ = outR.Close(), errR.Close()
		return err
	}
	p.stdout, p.stderr = outR, errR
	p.handshake.r = outR
	go func() {
		p.err = p.cmd.Wait()
		p.exit = p.cmd.ProcessState.String()
		close(p.done)
	}()
	return nil
}

// Wait waits for the process to exit. go-plugin calls it once, after it has
// read both output pipes to their end, so Wait closes them.
func (p *process) Wait(context.Context) error {
	<-p.done
	_ = p.stdout.Close()
	_ = p.stderr.Close()
	return p.err
}

// Kill kills the process, and only it: helpers it started detached keep
// running.
func (p *process) Kill(context.Context) error {
	if p.cmd.Process == nil {
		return nil
	}
	if err := p.cmd.Process.Kill(); !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Stdout returns the read end of the process's stdout, which keeps the
// first line: go-plugin's handshake.
func (p *process) Stdout() io.ReadCloser { return &p.handshake }

// Stderr returns the read end of the process's stderr.
func (p *process) Stderr() io.ReadCloser { return p.stderr }

// Name returns the executable's path.
func (p *process) Name() string { return p.path }

// ID returns the process id, or "" before the process started.
func (p *process) ID() string {
	if p.cmd.Process == nil {
		return ""
	}
	return strconv.Itoa(p.cmd.Process.Pid)
}

// Diagnose explains a failed handshake.
func (p *process) Diagnose(context.Context) string {
	return p.path + " did not answer as a Kigumi plugin: a plugin's main function must call sdk.Serve"
}

// PluginToHost returns the plugin's address as is: it runs on this host.
func (p *process) PluginToHost(network, addr string) (string, string, error) {
	return network, addr, nil
}

// HostToPlugin returns the host's address as is: the plugin runs on this host.
func (p *process) HostToPlugin(network, addr string) (string, string, error) {
	return network, addr, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// explain replaces the transport error of a plugin call with one saying the
// plugin exited and how, once the process is seen to have exited.
func (p *process) explain(ctx context.Context, method string, err error) error {
	if err == nil || ctx.Err() != nil || !strings.HasPrefix(method, "/kigumi.plugin.v") {
		return err
	}
	st, ok := status.FromError(err)
	if !ok || len(st.Details()) > 0 || (st.Code() != codes.Unavailable && st.Code() != codes.Canceled) {
		return err
	}
	timer := time.NewTimer(exitGrace)
	defer timer.Stop()
	select {
	case <-p.done:
		return &sdk.Error{Code: sdk.CodeUnavailable, Message: p.label + " exited: " + p.exit, Err: err}
	case <-timer.C:
	case <-ctx.Done():
	}
	return err
}

func (p *process) unaryInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return p.explain(ctx, method, invoker(ctx, method, req, reply, cc, opts...))
}

func (p *process) streamInterceptor(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil {
		return nil, p.explain(ctx, method, err)
	}
	return &explainedStream{ClientStream: s, ctx: ctx, proc: p, method: method}, nil
}

// explainedStream explains the transport errors of a stream's receives.
type explainedStream struct {
	grpc.ClientStream
	// ctx is the caller's context; the stream's own is cancelled as soon as
	// the stream fails.
	ctx    context.Context
	proc   *process
	method string
}

func (s *explainedStream) RecvMsg(m any) error {
	return s.proc.explain(s.ctx, s.method, s.ClientStream.RecvMsg(m))
}

// firstLine reads the process's stdout and keeps its first line, up to
// maxHandshake bytes.
type firstLine struct {
	r io.ReadCloser

	mu   sync.Mutex
	line []byte
	full bool // the first line is complete, or too long to keep
}

// maxHandshake bounds the kept handshake line.
const maxHandshake = 4096

func (f *firstLine) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.full {
		chunk := b[:n]
		if i := strings.IndexByte(string(chunk), '\n'); i >= 0 {
			chunk, f.full = chunk[:i], true
		}
		f.line = append(f.line, chunk...)
		if len(f.line) > maxHandshake {
			f.line, f.full = f.line[:maxHandshake], true
		}
	}
	return n, err
}

// Close closes the pipe.
func (f *firstLine) Close() error { return f.r.Close() }

// protocol returns the plugin protocol version of the handshake line
// "CORE|PROTOCOL|NETWORK|ADDRESS|...", if the process wrote one.
func (f *firstLine) protocol() (int, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	parts := strings.Split(strings.TrimSpace(string(f.line)), "|")
	if len(parts) < 4 {
		return 0, false
	}
	v, err := strconv.Atoi(parts[1])
	return v, err == nil
}

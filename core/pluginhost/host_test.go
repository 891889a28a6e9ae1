package pluginhost_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

var fakeBuiltins = []pluginhost.Builtin{
	{Kind: sdk.KindRuntime, Name: "fake"},
	{Kind: sdk.KindStateFS, Name: "fake"},
	{Kind: sdk.KindLedger, Name: "fake"},
	{Kind: sdk.KindRuntime, Name: "mislabeled"},
	{Kind: sdk.KindRuntime, Name: "impostor"},
}

func newHost(t *testing.T, logger hclog.Logger, opts ...pluginhost.Option) *pluginhost.Host {
	t.Helper()
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	h := pluginhost.New(logger, opts...)
	t.Cleanup(h.Close)
	return h
}

// installPlugin copies the test binary into dir as the executable name with
// mode perm, and returns its path.
func installPlugin(t *testing.T, dir, name string, perm os.FileMode) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(dir, name)
	dst, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, perm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // beyond the umask
		t.Fatal(err)
	}
	return path
}

func wantCode(t *testing.T, err error, code sdk.Code, contains ...string) {
	t.Helper()
	var e *sdk.Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("error %v, want code %s", err, code)
	}
	for _, s := range contains {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not contain %q", err, s)
		}
	}
}

func TestBuiltins(t *testing.T) {
	h := newHost(t, nil, pluginhost.WithBuiltins(fakeBuiltins...))
	ctx := context.Background()
	tests := []struct {
		kind sdk.Kind
		get  func() (sdk.Plugin, error)
	}{
		{sdk.KindRuntime, func() (sdk.Plugin, error) { return h.Runtime(ctx, "fake", pluginhost.HostScope) }},
		{sdk.KindStateFS, func() (sdk.Plugin, error) { return h.StateFS(ctx, "fake", pluginhost.HostScope) }},
		{sdk.KindLedger, func() (sdk.Plugin, error) { return h.Ledger(ctx, "fake", pluginhost.HostScope) }},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			p, err := tt.get()
			if err != nil {
				t.Fatal(err)
			}
			info, err := p.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if info.Kind != tt.kind || info.Name != "fake" {
				t.Errorf("info = %+v", info)
			}
			again, err := tt.get()
			if err != nil {
				t.Fatal(err)
			}
			if again != p {
				t.Error("second call launched a new plugin instead of reusing the running one")
			}
		})
	}
}

func TestPluginDir(t *testing.T) {
	dir := t.TempDir()
	installPlugin(t, dir, "kigumi-runtime-thirdparty", 0o755)
	installPlugin(t, dir, "kigumi-statefs-thirdparty", 0o700)
	// A builtin of the same kind and name wins over the directory.
	installPlugin(t, dir, "kigumi-runtime-fake", 0o777)
	h := newHost(t, nil, pluginhost.WithPluginDir(dir), pluginhost.WithBuiltins(fakeBuiltins[0]))
	ctx := context.Background()

	rt, err := h.Runtime(ctx, "thirdparty", pluginhost.HostScope)
	if err != nil {
		t.Fatal(err)
	}
	h1, err := rt.Start(ctx, &sdk.StartRequest{Instance: sdk.Instance{Tenant: "alice", Name: "web"}})
	if err != nil || string(h1.Data) != "alice/web" {
		t.Errorf("Start = %+v, %v", h1, err)
	}
	fs, err := h.StateFS(ctx, "thirdparty", pluginhost.HostScope)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := fs.Info(ctx); err != nil || info.Kind != sdk.KindStateFS || info.Name != "thirdparty" {
		t.Errorf("Info = %+v, %v", info, err)
	}
	if _, err := h.Runtime(ctx, "fake", pluginhost.HostScope); err != nil {
		t.Errorf("builtin fake: %v", err)
	}
}

func TestRefusedPluginFiles(t *testing.T) {
	dir := t.TempDir()
	installPlugin(t, dir, "kigumi-runtime-worldwritable", 0o777)
	installPlugin(t, dir, "kigumi-runtime-groupwritable", 0o775)
	installPlugin(t, dir, "kigumi-runtime-noexec", 0o644)
	if err := os.Mkdir(filepath.Join(dir, "kigumi-runtime-directory"), 0o755); err != nil {
		t.Fatal(err)
	}
	target := installPlugin(t, dir, "writable-target", 0o757)
	if err := os.Symlink(target, filepath.Join(dir, "kigumi-runtime-symlink")); err != nil {
		t.Fatal(err)
	}
	notRoot := installPlugin(t, dir, "kigumi-runtime-notroot", 0o755)
	if err := os.Chown(notRoot, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	h := newHost(t, nil, pluginhost.WithPluginDir(dir))
	tests := []struct {
		name, why string
	}{
		{"worldwritable", "writable by group or others (mode 0777)"},
		{"groupwritable", "writable by group or others (mode 0775)"},
		{"noexec", "not executable"},
		{"directory", "not a regular file"},
		{"symlink", "writable by group or others (mode 0757)"},
		{"notroot", "owned by uid 4242"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.Runtime(context.Background(), tt.name, pluginhost.HostScope)
			wantCode(t, err, sdk.CodeInvalid, "refusing to run runtime plugin", tt.why)
		})
	}
}

func TestBrokenPlugin(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho not a plugin\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "kigumi-runtime-broken"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	h := newHost(t, nil, pluginhost.WithPluginDir(dir))
	_, err := h.Runtime(context.Background(), "broken", pluginhost.HostScope)
	wantCode(t, err, sdk.CodeUnavailable, `plugin runtime "broken": start:`, "not a plugin")
}

func TestUnknownPlugin(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		opts     []pluginhost.Option
		contains []string
	}{
		{"with-dir", []pluginhost.Option{pluginhost.WithBuiltins(fakeBuiltins[:2]...), pluginhost.WithPluginDir(dir)},
			[]string{`no runtime plugin "nope"`, `runtime "fake", statefs "fake"`, filepath.Join(dir, "kigumi-runtime-nope")}},
		{"no-dir", nil, []string{`no runtime plugin "nope"`, "builtins are none", "no plugin directory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t, nil, tt.opts...)
			_, err := h.Runtime(context.Background(), "nope", pluginhost.HostScope)
			if !errors.Is(err, sdk.ErrNotFound) {
				t.Fatalf("error %v is not ErrNotFound", err)
			}
			wantCode(t, err, sdk.CodeNotFound, tt.contains...)
		})
	}
}

func TestInvalidName(t *testing.T) {
	h := newHost(t, nil, pluginhost.WithPluginDir(t.TempDir()))
	for _, name := range []string{"", "../runtime-x", "a/b", "-x"} {
		_, err := h.Runtime(context.Background(), name, pluginhost.HostScope)
		wantCode(t, err, sdk.CodeInvalid, "invalid runtime plugin name")
	}
}

func TestIdentityMismatch(t *testing.T) {
	h := newHost(t, nil, pluginhost.WithBuiltins(fakeBuiltins...))
	tests := []struct{ name, want string }{
		{"mislabeled", `plugin runtime "mislabeled": the plugin reports itself as ledger "mislabeled"`},
		{"impostor", `plugin runtime "impostor": the plugin reports itself as runtime "someone-else"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.Runtime(context.Background(), tt.name, pluginhost.HostScope)
			wantCode(t, err, sdk.CodeInvalid, tt.want)
		})
	}
}

func TestCrashAndRelaunch(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		crash    func(t *testing.T, rt sdk.Runtime) error
		wantExit string
	}{
		{"exit-mid-call", func(t *testing.T, rt sdk.Runtime) error {
			_, err := rt.Start(ctx, &sdk.StartRequest{Args: []string{"exit"}})
			return err
		}, "exit status 3"},
		{"killed-mid-stream", func(t *testing.T, rt sdk.Runtime) error {
			st, err := rt.Inspect(ctx, sdk.Handle{})
			if err != nil {
				t.Fatal(err)
			}
			return rt.Logs(ctx, sdk.Handle{}, sdk.LogOptions{Follow: true}, func([]byte) error {
				return syscall.Kill(st.Pid, syscall.SIGKILL)
			})
		}, "signal: killed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHost(t, nil, pluginhost.WithBuiltins(fakeBuiltins[0]))
			rt, err := h.Runtime(ctx, "fake", pluginhost.HostScope)
			if err != nil {
				t.Fatal(err)
			}
			want := `plugin runtime "fake" exited: ` + tt.wantExit
			wantCode(t, tt.crash(t, rt), sdk.CodeUnavailable, want)
			_, err = rt.Info(ctx)
			wantCode(t, err, sdk.CodeUnavailable, want)
			if !errors.Is(err, sdk.ErrUnavailable) {
				t.Errorf("errors.Is(%v, ErrUnavailable) = false", err)
			}

			again, err := h.Runtime(ctx, "fake", pluginhost.HostScope)
			if err != nil {
				t.Fatalf("relaunch: %v", err)
			}
			if again == rt {
				t.Fatal("Runtime returned the dead plugin's client")
			}
			if _, err := again.Info(ctx); err != nil {
				t.Errorf("relaunched plugin: %v", err)
			}
		})
	}
}

func TestClose(t *testing.T) {
	ctx := context.Background()
	h := newHost(t, nil, pluginhost.WithBuiltins(fakeBuiltins[0]))
	rt, err := h.Runtime(ctx, "fake", pluginhost.HostScope)
	if err != nil {
		t.Fatal(err)
	}
	st, err := rt.Inspect(ctx, sdk.Handle{})
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if err := syscall.Kill(st.Pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("plugin process %d after Close: kill 0 = %v, want ESRCH", st.Pid, err)
	}
	_, err = rt.Info(ctx)
	wantCode(t, err, sdk.CodeUnavailable)
	_, err = h.Runtime(ctx, "fake", pluginhost.HostScope)
	wantCode(t, err, sdk.CodeUnavailable, "closed")
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestLogForwarding(t *testing.T) {
	var out syncBuffer
	logger := hclog.New(&hclog.LoggerOptions{Name: "kigumi", Output: &out, Level: hclog.Info})
	h := newHost(t, logger, pluginhost.WithBuiltins(fakeBuiltins[0]))
	rt, err := h.Runtime(context.Background(), "fake", pluginhost.HostScope)
	if err != nil {
		t.Fatal(err)
	}
	if err := rt.Configure(context.Background(), sdk.ConfigureRequest{Host: "host-7"}); err != nil {
		t.Fatal(err)
	}
	h.Close() // waits until the plugin's stderr has been read to its end
	var line string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.Contains(l, "configured by host") {
			line = l
		}
	}
	for _, want := range []string{"[WARN]", "kigumi.runtime-fake", "host=host-7"} {
		if !strings.Contains(line, want) {
			t.Errorf("forwarded line %q lacks %q; log:\n%s", line, want, out.String())
		}
	}
	if strings.Contains(out.String(), "plugin address") {
		t.Errorf("a debug line of the plugin passed the host's info level:\n%s", out.String())
	}
}

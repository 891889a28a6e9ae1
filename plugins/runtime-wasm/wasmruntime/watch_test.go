package wasmruntime

import (
	"context"
	"syscall"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/sdktest"
)

// watcher is a WatchExits call under way, its exits on a channel.
type watcher struct {
	exits chan sdk.ExitEvent
}

// watchExits subscribes to r's exits and waits until it is ready.
func watchExits(t *testing.T, r sdk.ExitWatcher) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{exits: make(chan sdk.ExitEvent, 16)}
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- r.WatchExits(ctx, func() { close(ready) }, func(e sdk.ExitEvent) error {
			w.exits <- e
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("WatchExits = %v, want context.Canceled", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("WatchExits = %v before ready", err)
	}
	return w
}

// next returns the next exit the watcher reports.
func (w *watcher) next(t *testing.T) sdk.ExitEvent {
	t.Helper()
	return <-w.exits
}

// TestWatchExits: a watcher hears of every exit once, as it happens, of the
// sandboxes its plugin process started or recovered: a child killed, a
// sandbox started by another process (a plugin restarted) killed, and a
// child that exits by itself.
func TestWatchExits(t *testing.T) {
	ctx := context.Background()
	r := newRuntime(t, nil)
	fresh := newRuntime(t, nil) // a plugin restarted: its sandboxes are not its children
	wr, wf := watchExits(t, r), watchExits(t, fresh)
	wr2 := watchExits(t, r) // a second watcher sees the same exits

	reqA := request(t, "ticker", sdk.PermClock)
	reqA.Instance.Name = "a"
	a := start(t, r, reqA)
	da, _ := decodeHandle(a)
	for range 2 { // recovering twice watches once
		if _, err := fresh.Recover(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	syscall.Kill(-da.Pid, syscall.SIGKILL)
	for name, w := range map[string]*watcher{"starter": wr, "second watcher": wr2, "recoverer": wf} {
		e := w.next(t)
		if e.Instance != reqA.Instance || string(e.Handle.Data) != string(a.Data) || e.Status.State == sdk.StateRunning || e.Status.Pid != da.Pid {
			t.Errorf("%s: exit of the killed sandbox = %+v", name, e)
		}
	}

	// The next exit each hears is the next sandbox's: no duplicates.
	reqB := request(t, "echo")
	reqB.Instance.Name, reqB.Env = "b", map[string]string{"EXIT": "7"}
	b := start(t, r, reqB)
	for name, w := range map[string]*watcher{"starter": wr, "second watcher": wr2} {
		if e := w.next(t); e.Instance != reqB.Instance || e.Status.State != sdk.StateExited || e.Status.ExitCode != 7 || e.Status.Cause != sdk.CauseExit {
			t.Errorf("%s: exit of the sandbox that exited = %+v", name, e)
		}
	}
	// A sandbox recovered after it ended is reported at once.
	if _, err := fresh.Recover(ctx, b); err != nil {
		t.Fatal(err)
	}
	if e := wf.next(t); e.Instance != reqB.Instance || e.Status.ExitCode != 7 {
		t.Errorf("recoverer: exit of a sandbox recovered after its end = %+v", e)
	}
}

// TestWatchExitsOverGRPC: the runtime declares the feature, and its exits
// reach a host-side watcher through the protocol.
func TestWatchExitsOverGRPC(t *testing.T) {
	ctx := context.Background()
	rt := sdktest.Runtime(t, New())
	if err := rt.Configure(ctx, sdk.ConfigureRequest{DataDir: dataDir}); err != nil {
		t.Fatal(err)
	}
	info, err := rt.Info(ctx)
	if err != nil || !info.Capabilities.Has(sdk.FeatureWatch) {
		t.Fatalf("features %v lack %s: %v", info.Capabilities.Features, sdk.FeatureWatch, err)
	}
	w := watchExits(t, rt.(sdk.ExitWatcher))
	req := request(t, "echo")
	req.Env = map[string]string{"EXIT": "4"}
	h, err := rt.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Destroy(ctx, h)
	if e := w.next(t); e.Instance != req.Instance || e.Status.State != sdk.StateExited || e.Status.ExitCode != 4 {
		t.Errorf("exit = %+v", e)
	}
}

package wasmruntime

import (
	"context"
	"errors"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// exitWatch reports the exits of the sandboxes this plugin process started
// or recovered, for sdk.FeatureWatch. Sandboxes are detached, and recovered
// ones are not this process's children, so it cannot wait for them: it
// watches each through a pidfd (pidfd_open, Linux 5.3 and later), which
// becomes readable when the process ends whoever its parent is. The pidfds
// wait in Go's network poller, so a watched sandbox costs a parked
// goroutine, not a thread.
type exitWatch struct {
	mu sync.Mutex
	// watched holds the sandboxes being watched, so that a sandbox
	// recovered again is not watched twice.
	watched map[child]bool
	// subs are the WatchExits calls under way.
	subs map[*exitSub]bool
}

// exitSub is one WatchExits call: exits are sent on ch until done closes.
type exitSub struct {
	ch   chan sdk.ExitEvent
	done chan struct{}
}

// watch starts watching the sandbox of handle h (decoded as d) for its exit,
// unless it is watched already. A sandbox that is gone by now is reported
// at once.
func (r *Runtime) watch(d handleData, h sdk.Handle) {
	c := child{d.Pid, d.StartTicks}
	w := &r.exits
	w.mu.Lock()
	if w.watched[c] {
		w.mu.Unlock()
		return
	}
	if w.watched == nil {
		w.watched = map[child]bool{}
	}
	w.watched[c] = true
	w.mu.Unlock()
	go func() {
		waitExit(d)
		// A sandbox this process started is reaped, and what its reaper
		// records is recorded, before it is inspected.
		r.mu.Lock()
		reaped := r.children[c]
		r.mu.Unlock()
		if reaped != nil {
			<-reaped
		}
		w.mu.Lock()
		delete(w.watched, c)
		w.mu.Unlock()
		st, err := r.Inspect(context.Background(), h)
		if errors.Is(err, sdk.ErrNotFound) {
			return // destroyed: nothing to report
		}
		if err != nil {
			st = sdk.Status{State: sdk.StateUnknown, Pid: d.Pid, StartedAt: d.StartedAt, Message: err.Error()}
		}
		w.publish(sdk.ExitEvent{Instance: d.Instance, Handle: h, Status: st})
	}()
}

// waitExit returns once the sandbox of d has ended: at once if it is gone
// already, or if no pidfd can be had for it (it is then left to the
// core's periodic refresh).
func waitExit(d handleData) {
	fd, err := unix.PidfdOpen(d.Pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return // ESRCH: gone
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	// The pidfd refers to whatever process had the pid when it was opened:
	// the sandbox only if it started at the recorded time.
	if _, ticks, err := procStat(d.Pid); err != nil || ticks != d.StartTicks {
		return
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	// Read parks until the poller sees the pidfd readable, each time the
	// function says it is not yet.
	ended := func(fd uintptr, timeout int) bool {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, timeout)
		return n > 0 || (err != nil && !errors.Is(err, unix.EINTR))
	}
	if rc.Read(func(fd uintptr) bool { return ended(fd, 0) }) == nil {
		return
	}
	// The poller refused the pidfd: wait in a blocking poll instead.
	_ = rc.Control(func(fd uintptr) {
		for !ended(fd, -1) {
		}
	})
}

// publish sends e to every watcher subscribed.
func (w *exitWatch) publish(e sdk.ExitEvent) {
	w.mu.Lock()
	subs := make([]*exitSub, 0, len(w.subs))
	for s := range w.subs {
		subs = append(subs, s)
	}
	w.mu.Unlock()
	for _, s := range subs {
		select {
		case s.ch <- e:
		case <-s.done:
		}
	}
}

// WatchExits implements sdk.ExitWatcher: it reports the exits of the
// sandboxes this plugin process started or recovered.
func (r *Runtime) WatchExits(ctx context.Context, ready func(), fn func(sdk.ExitEvent) error) error {
	w := &r.exits
	s := &exitSub{ch: make(chan sdk.ExitEvent), done: make(chan struct{})}
	w.mu.Lock()
	if w.subs == nil {
		w.subs = map[*exitSub]bool{}
	}
	w.subs[s] = true
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.subs, s)
		w.mu.Unlock()
		close(s.done)
	}()
	ready()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-s.ch:
			if err := fn(e); err != nil {
				return err
			}
		}
	}
}

package ctrruntime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/typeurl/v2"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// Topics of the containerd events WatchExits follows.
const (
	topicTaskExit = "/tasks/exit"
	// topicWatchReady is the topic of the event WatchExits publishes to
	// itself: seeing it come back shows containerd's side of the
	// subscription is in place, so no later exit is missed.
	topicWatchReady = "/kigumi/watch-ready"
	// probeInterval is how often the probe is published until it is seen.
	probeInterval = 50 * time.Millisecond
)

// exitWatch holds the handles of the containers this plugin process
// started or recovered, by container id: the ones whose exits
// WatchExits reports.
type exitWatch struct {
	mu      sync.Mutex
	handles map[string]sdk.Handle
}

// track makes the exits of container id, of handle h, reported.
func (w *exitWatch) track(id string, h sdk.Handle) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.handles == nil {
		w.handles = map[string]sdk.Handle{}
	}
	w.handles[id] = h
}

// untrack stops reporting the exits of container id.
func (w *exitWatch) untrack(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.handles, id)
}

// handle returns the handle of container id, if it is tracked.
func (w *exitWatch) handle(id string) (sdk.Handle, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	h, ok := w.handles[id]
	return h, ok
}

// WatchExits implements sdk.ExitWatcher from containerd's task exit
// events in the runtime's namespace: each exit of a container's main
// process that this plugin process started or recovered is reported with
// the container's status. The stream ends with an error when containerd
// goes away; the core then subscribes again.
func (r *Runtime) WatchExits(ctx context.Context, ready func(), fn func(sdk.ExitEvent) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The shared daemon's only: a per-tenant daemon's exits are found by
	// the core's periodic refresh.
	ctx, c, err := r.connect(ctx, "")
	if err != nil {
		return err
	}
	evs, errs := c.Subscribe(ctx,
		fmt.Sprintf("topic==%q,namespace==%q", topicTaskExit, r.namespace),
		fmt.Sprintf("topic==%q,namespace==%q", topicWatchReady, r.namespace))
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	token := hex.EncodeToString(b[:])
	// The subscription is in place on containerd's side only some time
	// after Subscribe returns: the probe is published until it comes back.
	probe := func() error {
		if err := c.EventService().Publish(ctx, topicWatchReady, &eventstypes.TaskExit{ContainerID: token}); err != nil {
			return sdk.Errorf(sdk.CodeUnavailable, "containerd at %s: publish %s: %w", r.address, topicWatchReady, err)
		}
		return nil
	}
	if err := probe(); err != nil {
		return err
	}
	tick := time.NewTicker(probeInterval)
	defer tick.Stop()
	isReady := false
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if isReady {
				tick.Stop()
			} else if err := probe(); err != nil {
				return err
			}
		case err := <-errs:
			if err == nil {
				err = errors.New("event stream closed")
			}
			return sdk.Errorf(sdk.CodeUnavailable, "containerd at %s: task events: %w", r.address, err)
		case env := <-evs:
			v, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				continue // not an event of ours
			}
			e, ok := v.(*eventstypes.TaskExit)
			if !ok {
				continue
			}
			if env.Topic == topicWatchReady {
				if e.ContainerID == token && !isReady {
					isReady = true
					ready()
				}
				continue
			}
			// An exec'd process's exit is not the container's.
			if !isReady || e.ID != e.ContainerID {
				continue
			}
			h, ok := r.exits.handle(e.ContainerID)
			if !ok {
				continue
			}
			st, err := r.Inspect(ctx, h)
			if errors.Is(err, sdk.ErrNotFound) {
				continue // destroyed: nothing to report
			}
			if err != nil {
				st = sdk.Status{State: sdk.StateUnknown, Message: err.Error()}
			}
			d, _ := decodeHandle(h)
			if err := fn(sdk.ExitEvent{Instance: d.Instance, Handle: h, Status: st}); err != nil {
				return err
			}
		}
	}
}

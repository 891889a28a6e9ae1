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
	// followTimeout bounds how long PrepareTenant and WatchExits wait for a
	// per-tenant daemon's subscription to be in place: the daemon runs as
	// its tenant, who can stop it.
	followTimeout = 5 * time.Second
)

// exitWatch holds the handles of the containers this plugin process
// started or recovered, by container id: the ones whose exits
// WatchExits reports. It also holds the per-tenant daemons this process
// prepared or adopted, and the WatchExits streams that follow them.
type exitWatch struct {
	mu      sync.Mutex
	handles map[string]sdk.Handle
	// daemons are who must listen on the sockets of the per-tenant
	// daemons, by socket.
	daemons map[string]daemonPeer
	streams map[*exitStream]bool
}

// exitStream is one WatchExits call: its subscriptions, one per daemon,
// send their daemons' task exits to exits.
type exitStream struct {
	ctx   context.Context
	exits chan *eventstypes.TaskExit
	// subs are the subscriptions to the per-tenant daemons, by socket.
	subs map[string]*subscription
}

// subscription is one stream's subscription to one per-tenant daemon.
type subscription struct{ cancel context.CancelFunc }

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

// follow makes every WatchExits stream follow the per-tenant daemon at
// address, and the later ones too. It returns once each stream's
// subscription is in place (or has failed, or followTimeout passed), so
// that no exit of a container started after it is missed.
func (r *Runtime) follow(ctx context.Context, address string, peer daemonPeer) {
	w := &r.exits
	w.mu.Lock()
	if w.daemons == nil {
		w.daemons = map[string]daemonPeer{}
	}
	w.daemons[address] = peer
	var waits []<-chan struct{}
	for s := range w.streams {
		if s.subs[address] == nil {
			waits = append(waits, r.subscribe(s, address, peer))
		}
	}
	w.mu.Unlock()
	waitFollowed(ctx, waits)
}

// waitFollowed waits until the subscriptions of waits are in place or
// have ended, for at most followTimeout.
func waitFollowed(ctx context.Context, waits []<-chan struct{}) {
	timeout := time.After(followTimeout)
	for _, ready := range waits {
		select {
		case <-ready:
		case <-ctx.Done():
			return
		case <-timeout:
			return
		}
	}
}

// unfollow ends the streams' subscriptions to the daemon at address.
func (r *Runtime) unfollow(address string) {
	w := &r.exits
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.daemons, address)
	for s := range w.streams {
		if sub := s.subs[address]; sub != nil {
			sub.cancel()
			delete(s.subs, address)
		}
	}
}

// subscribe starts s's subscription to the per-tenant daemon at address,
// with w.mu held. The channel it returns is closed once the subscription
// is in place or has ended. A subscription that fails ends alone: that
// daemon's exits are then found by the core's periodic refresh.
func (r *Runtime) subscribe(s *exitStream, address string, peer daemonPeer) <-chan struct{} {
	ctx, cancel := context.WithCancel(s.ctx)
	sub := &subscription{cancel: cancel}
	s.subs[address] = sub
	ready := make(chan struct{})
	var once sync.Once
	isReady := func() { once.Do(func() { close(ready) }) }
	go func() {
		defer isReady()
		_ = r.watchDaemon(ctx, address, &peer, isReady, s.exits)
		cancel()
		r.exits.mu.Lock()
		defer r.exits.mu.Unlock()
		if s.subs[address] == sub {
			delete(s.subs, address)
		}
	}()
	return ready
}

// WatchExits implements sdk.ExitWatcher from containerd's task exit
// events in the runtime's namespace, on the shared daemon and on every
// per-tenant daemon this process prepared or adopted (those prepared
// later too, until they are released): each exit of a container's main
// process that this plugin process started or recovered is reported with
// the container's status. The stream ends with an error when the shared
// containerd goes away; the core then subscribes again.
func (r *Runtime) WatchExits(ctx context.Context, ready func(), fn func(sdk.ExitEvent) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &exitStream{ctx: ctx, exits: make(chan *eventstypes.TaskExit), subs: map[string]*subscription{}}
	w := &r.exits
	w.mu.Lock()
	if w.streams == nil {
		w.streams = map[*exitStream]bool{}
	}
	w.streams[s] = true
	var waits []<-chan struct{}
	for address, peer := range w.daemons {
		waits = append(waits, r.subscribe(s, address, peer))
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.streams, s)
	}()
	sharedReady := make(chan struct{})
	shared := make(chan error, 1)
	go func() { shared <- r.watchDaemon(ctx, "", nil, func() { close(sharedReady) }, s.exits) }()
	select {
	case <-sharedReady:
	case err := <-shared:
		return err
	}
	waitFollowed(ctx, waits)
	ready()
	for {
		select {
		case err := <-shared:
			return err
		case e := <-s.exits:
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

// watchDaemon follows the task exits of the containerd at address (the
// shared one when empty), calling ready once its subscription is in place
// and sending each later exit of a container's main process to out. It
// returns when ctx ends or the event stream fails.
func (r *Runtime) watchDaemon(ctx context.Context, address string, peer *daemonPeer, ready func(), out chan<- *eventstypes.TaskExit) error {
	ctx, c, err := r.connect(ctx, address, peer)
	if err != nil {
		return err
	}
	if address == "" {
		address = r.address
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
			return sdk.Errorf(sdk.CodeUnavailable, "containerd at %s: publish %s: %w", address, topicWatchReady, err)
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
			return sdk.Errorf(sdk.CodeUnavailable, "containerd at %s: task events: %w", address, err)
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
			select {
			case out <- e:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

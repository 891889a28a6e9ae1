package agent

import (
	"math/rand/v2"
	"sync"
	"time"
)

// Queue is a work queue of tenant names, in the way client-go's workqueue
// works: a name is never handed out twice at once (processing), and adding
// a name that waits already (dirty) does nothing, so bursts of changes
// coalesce into one reconcile. A name added while it is processed is handed
// out again once Done. It is safe for concurrent use.
type Queue struct {
	mu         sync.Mutex
	cond       *sync.Cond
	items      []string
	dirty      map[string]bool
	processing map[string]bool
	timers     map[string]*delayed
	shutdown   bool
}

// delayed is a pending AddAfter.
type delayed struct {
	at    time.Time
	timer *time.Timer
}

// NewQueue returns an empty queue.
func NewQueue() *Queue {
	q := &Queue{dirty: map[string]bool{}, processing: map[string]bool{}, timers: map[string]*delayed{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// Add queues key, unless it is queued already.
func (q *Queue) Add(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.add(key)
}

func (q *Queue) add(key string) {
	if q.shutdown || q.dirty[key] {
		return
	}
	q.dirty[key] = true
	if q.processing[key] {
		return // queued again by Done
	}
	q.items = append(q.items, key)
	q.cond.Signal()
}

// AddAfter queues key after d; of several pending delays for a key the
// earliest wins.
func (q *Queue) AddAfter(key string, d time.Duration) {
	if d <= 0 {
		q.Add(key)
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.shutdown {
		return
	}
	at := time.Now().Add(d)
	if p, ok := q.timers[key]; ok {
		if !p.at.After(at) {
			return
		}
		p.timer.Stop()
	}
	p := &delayed{at: at}
	p.timer = time.AfterFunc(d, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if q.timers[key] == p {
			delete(q.timers, key)
			q.add(key)
		}
	})
	q.timers[key] = p
}

// Get waits for a key and marks it processing; ok is false once the queue
// is shut down.
func (q *Queue) Get() (key string, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.shutdown {
		q.cond.Wait()
	}
	if q.shutdown {
		return "", false
	}
	key, q.items = q.items[0], q.items[1:]
	delete(q.dirty, key)
	q.processing[key] = true
	return key, true
}

// Done ends the processing of key, queueing it again if it was added
// meanwhile.
func (q *Queue) Done(key string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.processing, key)
	if q.dirty[key] && !q.shutdown {
		q.items = append(q.items, key)
		q.cond.Signal()
	}
}

// Len returns how many keys wait.
func (q *Queue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// ShutDown wakes every Get, which then returns false; later adds are
// dropped.
func (q *Queue) ShutDown() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.shutdown = true
	for _, p := range q.timers {
		p.timer.Stop()
	}
	q.timers = map[string]*delayed{}
	q.cond.Broadcast()
}

// Backoff is the exponential delay before retrying a tenant whose reconcile
// failed: Base * 2^(failures-1), at most Max, plus up to a quarter more of
// random jitter so that failing tenants spread out.
type Backoff struct {
	Base, Max time.Duration
}

// Delay returns the delay after failures consecutive failures; jitter is a
// number in [0, 1).
func (b Backoff) Delay(failures int, jitter float64) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := b.Base
	for i := 1; i < failures && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	return d + time.Duration(float64(d)/4*jitter)
}

// next returns the delay after failures, with random jitter.
func (b Backoff) next(failures int) time.Duration { return b.Delay(failures, rand.Float64()) }

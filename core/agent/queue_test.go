package agent

import (
	"testing"
	"time"
)

func TestQueue(t *testing.T) {
	tests := []struct {
		name string
		// ops: "+k" adds k, "get" takes the next key (want after "="),
		// "done k" ends k.
		ops  []string
		want []string // keys handed out by the gets, in order
		left int      // keys still waiting at the end
	}{
		{name: "fifo", ops: []string{"+a", "+b", "get", "get"}, want: []string{"a", "b"}},
		{name: "re-adds coalesce", ops: []string{"+a", "+a", "+b", "+a", "get", "get"}, want: []string{"a", "b"}},
		{name: "never twice at once", ops: []string{"+a", "get", "+a", "+b", "get"}, want: []string{"a", "b"}, left: 0},
		{name: "added while processing comes back after done",
			ops: []string{"+a", "get", "+a", "+a", "done a", "get"}, want: []string{"a", "a"}},
		{name: "done without re-add drops it", ops: []string{"+a", "get", "done a"}, want: []string{"a"}, left: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := NewQueue()
			var got []string
			for _, op := range tt.ops {
				switch {
				case op == "get":
					k, ok := q.Get()
					if !ok {
						t.Fatal("Get after shutdown")
					}
					got = append(got, k)
				case op[0] == '+':
					q.Add(op[1:])
				default:
					q.Done(op[len("done "):])
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
			if q.Len() != tt.left {
				t.Errorf("%d keys wait, want %d", q.Len(), tt.left)
			}
		})
	}
}

func TestQueueShutDown(t *testing.T) {
	q := NewQueue()
	got := make(chan bool)
	go func() {
		_, ok := q.Get()
		got <- ok
	}()
	q.ShutDown()
	if <-got {
		t.Fatal("Get returned a key after shutdown")
	}
	q.Add("a")
	q.AddAfter("b", time.Hour)
	if q.Len() != 0 {
		t.Fatal("a shut-down queue took keys")
	}
}

func TestQueueAddAfterEarliestWins(t *testing.T) {
	q := NewQueue()
	q.AddAfter("a", time.Hour)
	q.AddAfter("a", time.Millisecond) // earlier: replaces the hour
	q.AddAfter("a", 2*time.Hour)      // later: ignored
	if k, ok := q.Get(); !ok || k != "a" {
		t.Fatalf("Get = %q, %v", k, ok)
	}
	q.mu.Lock()
	n := len(q.timers)
	q.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d delays pending, want 0", n)
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Base: time.Second, Max: time.Minute}
	tests := []struct {
		failures int
		jitter   float64
		want     time.Duration
	}{
		{0, 0.5, 0},
		{1, 0, time.Second},
		{2, 0, 2 * time.Second},
		{3, 0, 4 * time.Second},
		{3, 0.999, 4*time.Second + 999*time.Millisecond},
		{7, 0, time.Minute},
		{100, 0, time.Minute},
		{1 << 30, 0.5, time.Minute + 7500*time.Millisecond},
	}
	for _, tt := range tests {
		if got := b.Delay(tt.failures, tt.jitter); got != tt.want {
			t.Errorf("Delay(%d, %g) = %v, want %v", tt.failures, tt.jitter, got, tt.want)
		}
	}
}

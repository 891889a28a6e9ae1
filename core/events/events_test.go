package events

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

func TestBusFanOutAndDrops(t *testing.T) {
	b := NewBus()
	fast := b.Subscribe(10)
	slow := b.Subscribe(1)
	for i := 0; i < 3; i++ {
		b.Publish(Event{Type: TypeReconcile, Tenant: "a"})
	}
	if got := len(fast.C()); got != 3 {
		t.Fatalf("fast subscriber has %d events, want 3", got)
	}
	if got := slow.Dropped(); got != 2 {
		t.Fatalf("slow subscriber dropped %d, want 2", got)
	}
	if got := b.Dropped(); got != 2 {
		t.Fatalf("bus dropped %d, want 2", got)
	}
	e := <-fast.C()
	if e.Seq != 1 || e.Version != SchemaVersion || e.Time.IsZero() {
		t.Fatalf("first event not stamped: %+v", e)
	}
	fast.Close()
	fast.Close()
	if _, ok := <-fast.C(); ok {
		// drain what was buffered before Close
		for range fast.C() {
		}
	}
	b.Close()
	if _, ok := <-slow.C(); ok {
		for range slow.C() {
		}
	}
	late := b.Subscribe(1)
	if _, ok := <-late.C(); ok {
		t.Fatal("a subscription to a closed bus must be closed")
	}
	b.Publish(Event{Type: TypeReconcile}) // must not panic on a closed bus
}

func TestBusConcurrentPublish(t *testing.T) {
	b := NewBus()
	s := b.Subscribe(1000)
	var wg sync.WaitGroup
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				b.Publish(Event{Type: TypeActionDone})
			}
		}()
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for len(s.C()) > 0 {
		e := <-s.C()
		if seen[e.Seq] {
			t.Fatalf("sequence %d delivered twice", e.Seq)
		}
		seen[e.Seq] = true
	}
	if len(seen) != 1000 {
		t.Fatalf("got %d events, want 1000", len(seen))
	}
}

func TestDiagnosticsJSON(t *testing.T) {
	diags := hcl.Diagnostics{{
		Severity: hcl.DiagError, Summary: "Unsupported argument", Detail: "no such attribute",
		Subject: &hcl.Range{Filename: "t.hcl", Start: hcl.Pos{Line: 3, Column: 5, Byte: 20}, End: hcl.Pos{Line: 3, Column: 9, Byte: 24}},
	}, {Severity: hcl.DiagWarning, Summary: "shared user"}}
	data, err := json.Marshal(Event{Type: TypeDiagnostics, Diagnostics: Diagnostics(diags)})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"severity":"error"`, `"filename":"t.hcl"`, `"start":{"line":3,"column":5,"byte":20}`, `"severity":"warning"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("JSON %s lacks %s", data, want)
		}
	}
}

package engine

import (
	"reflect"
	"sync"
	"testing"

	"github.com/kigumi/kigumi/core/engine/enginetest"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

// progressHook records the progress reports it gets.
type progressHook struct {
	NilHook
	mu   sync.Mutex
	seen []string
}

func (h *progressHook) Progress(tenant, instance string, p sdk.Progress) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, tenant+"/"+instance+" "+p.Step+" "+p.Subject)
}

// TestStartProgressHook: a runtime declaring sdk.FeatureProgress has its
// Start's reports passed to the hooks, by instance; one that does not
// declare it gets no progress sink, so its reports go nowhere.
func TestStartProgressHook(t *testing.T) {
	reports := []sdk.Progress{{Step: "pulling", Subject: "r/a:1", Parts: 2}, {Step: "pulling", Subject: "r/a:1", PartsDone: 2, Parts: 2}}
	for _, tt := range []struct {
		name     string
		declared bool
		want     []string
	}{
		{"declared", true, []string{"alice/web pulling r/a:1", "alice/web pulling r/a:1"}},
		{"not declared", false, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := enginetest.NewWorld()
			w.Progress, w.ProgressFeature = reports, tt.declared
			e := newEngine(t, testHost(t), w)
			hook := &progressHook{}
			e.hooks = append(e.hooks, hook)
			if _, err, _ := apply(t, e, desired("alice")); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(hook.seen, tt.want) {
				t.Errorf("hook saw %q, want %q", hook.seen, tt.want)
			}
		})
	}
}

package ctrruntime

import (
	"context"
	"sync"
	"time"

	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// pullReportEvery is how often a pull reports its progress.
const pullReportEvery = 250 * time.Millisecond

// pullProgress reports a pull's progress over its image's layers: those
// in the content store are done, and those being fetched count the bytes
// fetched so far.
type pullProgress struct {
	ref string
	cs  content.Store

	mu     sync.Mutex
	layers []ocispec.Descriptor
	seen   map[string]bool
}

func newPullProgress(ref string, cs content.Store) *pullProgress {
	return &pullProgress{ref: ref, cs: cs, seen: map[string]bool{}}
}

// handler records each layer of the image as the pull finds it.
func (p *pullProgress) handler() images.Handler {
	return images.HandlerFunc(func(_ context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		if images.IsLayerType(desc.MediaType) {
			p.mu.Lock()
			if !p.seen[desc.Digest.String()] {
				p.seen[desc.Digest.String()] = true
				p.layers = append(p.layers, desc)
			}
			p.mu.Unlock()
		}
		return nil, nil
	})
}

// run reports the progress every pullReportEvery until stop is closed.
func (p *pullProgress) run(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(pullReportEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.report(ctx, false)
		}
	}
}

// report reports the progress; done reports every layer done, for a pull
// that succeeded (some layers' content may never be fetched, when their
// snapshots exist already).
func (p *pullProgress) report(ctx context.Context, done bool) {
	p.mu.Lock()
	layers := append([]ocispec.Descriptor(nil), p.layers...)
	p.mu.Unlock()
	if len(layers) == 0 {
		return
	}
	fetching := map[string]int64{}
	if !done {
		statuses, err := p.cs.ListStatuses(ctx)
		if err != nil {
			return // the pull itself reports what is wrong
		}
		for _, s := range statuses {
			fetching[s.Ref] = s.Offset
		}
	}
	r := sdk.Progress{Step: "pulling", Subject: p.ref, Parts: int64(len(layers)), Unit: "layers"}
	for _, l := range layers {
		r.BytesTotal += l.Size
		if done {
			r.PartsDone, r.BytesDone = r.PartsDone+1, r.BytesDone+l.Size
		} else if _, err := p.cs.Info(ctx, l.Digest); err == nil {
			r.PartsDone, r.BytesDone = r.PartsDone+1, r.BytesDone+l.Size
		} else {
			r.BytesDone += min(fetching[remotes.MakeRefKey(ctx, l)], l.Size)
		}
	}
	sdk.ReportProgress(ctx, r)
}

package ctrruntime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"

	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/sdktest"
)

// TestPullProgress: the Start that pulls an image no namespace of it holds
// reports the pull's progress over the image's layers, across the plugin
// boundary, ending at all of them and their total size, and nothing after
// it returns; a Start of the pulled image reports nothing.
func TestPullProgress(t *testing.T) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	ns := "kigumi-progress-" + hex.EncodeToString(b)
	r := newRuntime(t, sdk.Config{"namespace": ns})
	rt := sdktest.Runtime(t, r)
	tn := newTenant(t)
	_, c := client(t)
	nctx := namespaces.WithNamespace(context.Background(), ns)
	t.Cleanup(func() {
		if err := c.ImageService().Delete(nctx, env.Image, images.SynchronousDelete()); err != nil {
			t.Errorf("delete image: %v", err)
		}
		if err := c.NamespaceService().Delete(nctx, ns); err != nil {
			t.Errorf("delete namespace %s: %v", ns, err)
		}
	})

	startReporting := func(name string) []sdk.Progress {
		t.Helper()
		req := request(t, tn, instance{name: name, args: []string{"sleep", "1000"}})
		var (
			mu       sync.Mutex
			got      []sdk.Progress
			returned bool
		)
		ctx := sdk.WithProgress(context.Background(), func(p sdk.Progress) {
			mu.Lock()
			defer mu.Unlock()
			if returned {
				t.Errorf("progress %+v after Start returned", p)
			}
			got = append(got, p)
		})
		h, err := rt.Start(ctx, req)
		mu.Lock()
		returned = true
		mu.Unlock()
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() {
			if err := r.Destroy(context.Background(), h); err != nil {
				t.Errorf("destroy %s: %v", name, err)
			}
		})
		mu.Lock()
		defer mu.Unlock()
		return append([]sdk.Progress(nil), got...)
	}

	got := startReporting("first")
	if len(got) == 0 {
		t.Fatal("the pull reported no progress")
	}
	img, err := c.GetImage(nctx, env.Image)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := images.Manifest(nctx, c.ContentStore(), img.Target(), img.Platform())
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, l := range manifest.Layers {
		total += l.Size
	}
	t.Logf("%d progress reports, the last %+v", len(got), got[len(got)-1])
	last := got[len(got)-1]
	want := sdk.Progress{Step: "pulling", Subject: env.Image, PartsDone: int64(len(manifest.Layers)), Parts: int64(len(manifest.Layers)),
		Unit: "layers", BytesDone: total, BytesTotal: total}
	if last != want {
		t.Errorf("last progress %+v, want %+v", last, want)
	}
	for i, p := range got {
		if p.BytesDone > p.BytesTotal || p.PartsDone > p.Parts || p.BytesTotal > total {
			t.Errorf("progress %d: %+v is past its totals (image: %d bytes)", i, p, total)
		}
	}

	if again := startReporting("second"); len(again) != 0 {
		t.Errorf("a Start of the pulled image reported %+v", again)
	}
}

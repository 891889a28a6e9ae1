package statefs

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// TestFUSEIORates checks that the request's I/O rates reach the helper:
// writing flat out through the mount of a state limited to 2 MiB/s gets
// at most 1.5 times that, while an unlimited state next to it takes far
// more in the same time. Negative rates are refused.
func TestFUSEIORates(t *testing.T) {
	ctx := context.Background()
	const rate = 2 << 20
	s := newFUSE()
	base := t.TempDir()
	var dirs []string
	for i, io := range []sdk.IOLimits{{WriteBPS: rate}, {}} {
		req := provisionReq(filepath.Join(base, []string{"limited", "free"}[i]))
		req.SizeBytes = 64 << 20
		req.IO = io
		h, err := s.Provision(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := newFUSE().Deprovision(ctx, h); err != nil {
				t.Error(err)
			}
		})
		if _, err := s.Mount(ctx, h); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, req.Dir)
	}
	const window = 1500 * time.Millisecond
	written := make([]int64, len(dirs))
	done := make(chan struct{})
	for i, dir := range dirs {
		go func() {
			defer func() { done <- struct{}{} }()
			f, err := os.OpenFile(filepath.Join(dir, "flood"), os.O_WRONLY|os.O_CREATE, 0o644)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			buf := make([]byte, 256<<10)
			for end := time.Now().Add(window); time.Now().Before(end); {
				n, err := f.WriteAt(buf, written[i]%(8<<20))
				written[i] += int64(n)
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	<-done
	<-done
	limit := rate * window.Seconds()
	t.Logf("in %v: limited state %d bytes (limit %.0f), unlimited %d", window, written[0], limit, written[1])
	if got := float64(written[0]); got > 1.5*limit || got < 0.25*limit {
		t.Errorf("limited state took %.0f bytes in %v, want at most 1.5 times %.0f", got, window, limit)
	}
	if got := float64(written[1]); got < 3*limit {
		t.Errorf("unlimited state took only %.0f bytes in %v", got, window)
	}

	req := provisionReq(filepath.Join(base, "bad"))
	req.IO.ReadIOPS = -1
	if _, err := s.Provision(ctx, req); err == nil {
		t.Error("a negative rate was accepted")
	}
}

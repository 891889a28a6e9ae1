package quotafs

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// floodMillis is how long each writer or reader goes flat out.
const floodMillis = 2000

// TestIORates has the tenant write (and read) flat out on a mount limited
// to a rate, while a neighbour tenant writes flat out on its own, unlimited
// mount: the tenant gets at most 1.5 times its rate, the neighbour far
// more. Buffered writes are throttled too: quotafs, not the block layer,
// enforces the rate.
func TestIORates(t *testing.T) {
	const (
		writeBPS = 4 << 20
		readBPS  = 3 << 20
		iops     = 100
	)
	limited := mountWith(t, Config{UIDs: []uint32{tenant}, IO: Rates{WriteBPS: writeBPS, ReadBPS: readBPS}}, func(backing string) {
		big := filepath.Join(backing, "big")
		if err := os.WriteFile(big, make([]byte, 32<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(big, tenant, group); err != nil {
			t.Fatal(err)
		}
	})
	free := mount(t, 0, 0, neighbour)
	opsLimited := mountWith(t, Config{UIDs: []uint32{tenant}, IO: Rates{WriteIOPS: iops}}, nil)

	var wg sync.WaitGroup
	results := map[string]int64{}
	var mu sync.Mutex
	start := func(name string, uid, gid uint32, dir, op string) {
		wg.Go(func() {
			lines, err := run(uid, gid, dir, op)
			if err != nil {
				t.Error(err)
				return
			}
			n, err := strconv.ParseInt(lines[0], 10, 64)
			if err != nil {
				t.Errorf("%s: %s", name, lines[0])
				return
			}
			mu.Lock()
			results[name] = n
			mu.Unlock()
		})
	}
	flood := fmt.Sprintf("flood:f:%d:%d", floodMillis, 1<<20)
	start("write", tenant, group, limited.mnt, flood)
	start("neighbour", neighbour, neighbour, free.mnt, flood)
	start("read", tenant, group, limited.mnt, fmt.Sprintf("slurp:big:%d", floodMillis))
	start("write ops", tenant, group, opsLimited.mnt, fmt.Sprintf("flood:f:%d:%d", floodMillis, 4096))
	wg.Wait()
	secs := float64(floodMillis) / 1000
	t.Logf("in %gs: limited writer %d bytes (limit %d/s), reader %d (limit %d/s), neighbour %d, 4 KiB writes %d (limit %d/s)",
		secs, results["write"], writeBPS, results["read"], readBPS, results["neighbour"], results["write ops"]/4096, iops)
	for _, c := range []struct {
		name  string
		got   float64
		limit float64
	}{
		{"write", float64(results["write"]), writeBPS * secs},
		{"read", float64(results["read"]), readBPS * secs},
		{"write ops", float64(results["write ops"] / 4096), iops * secs},
	} {
		if c.got > 1.5*c.limit || c.got < 0.25*c.limit {
			t.Errorf("%s: %.0f in %gs, want at most 1.5 times the limit %.0f (and more than a quarter of it)", c.name, c.got, secs, c.limit)
		}
	}
	// The neighbour is not held to the tenant's rate.
	if n := float64(results["neighbour"]); n < 3*writeBPS*secs {
		t.Errorf("neighbour wrote %.0f bytes in %gs: slowed to under 3 times the tenant's limit", n, secs)
	}
	// A bucket's depth is an eighth of a second: the first write does not
	// pass a whole second's worth at once.
	if d := newThrottle(Rates{WriteBPS: writeBPS}).writeBytes.Burst(); d != writeBPS/burstDiv {
		t.Errorf("burst %d", d)
	}
}

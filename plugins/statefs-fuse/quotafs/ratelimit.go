package quotafs

import (
	"context"
	"syscall"

	"golang.org/x/time/rate"
)

// Rates are a filesystem's I/O rate limits; zero means unlimited. Bytes
// are those of read and write requests; an operation is one read or one
// write request as the kernel sends it (a request carries up to the
// mount's max_write, 1 MiB, or a readahead window).
type Rates struct {
	ReadBPS, WriteBPS, ReadIOPS, WriteIOPS int64
}

// throttle holds the token buckets of Rates; a nil bucket is unlimited.
// Reads and writes wait for their tokens before they take any lock, so a
// throttled writer holds up no other caller, and a request the kernel
// interrupts (its caller was killed) stops waiting.
type throttle struct {
	readBytes, writeBytes, readOps, writeOps *rate.Limiter
}

// burstDiv sets each bucket's depth: an eighth of a second of its rate.
// Over an interval of T seconds a caller gets at most rate*(T+1/8).
const burstDiv = 8

func newThrottle(r Rates) throttle {
	bucket := func(perSec, least int64) *rate.Limiter {
		if perSec <= 0 {
			return nil
		}
		return rate.NewLimiter(rate.Limit(perSec), int(max(perSec/burstDiv, least)))
	}
	return throttle{
		readBytes:  bucket(r.ReadBPS, 4096),
		writeBytes: bucket(r.WriteBPS, 4096),
		readOps:    bucket(r.ReadIOPS, 1),
		writeOps:   bucket(r.WriteIOPS, 1),
	}
}

// read waits until a read of n bytes may go.
func (t throttle) read(ctx context.Context, n int) syscall.Errno {
	return waitAll(ctx, t.readOps, 1, t.readBytes, n)
}

// write waits until a write of n bytes may go.
func (t throttle) write(ctx context.Context, n int) syscall.Errno {
	return waitAll(ctx, t.writeOps, 1, t.writeBytes, n)
}

// waitAll takes one token per operation from ops and n from bytes, in
// pieces no larger than the bucket's depth. It fails with EINTR when ctx
// ends first.
func waitAll(ctx context.Context, ops *rate.Limiter, k int, bytes *rate.Limiter, n int) syscall.Errno {
	for _, b := range []struct {
		l *rate.Limiter
		n int
	}{{ops, k}, {bytes, n}} {
		if b.l == nil {
			continue
		}
		for left := b.n; left > 0; {
			step := min(left, b.l.Burst())
			if b.l.WaitN(ctx, step) != nil {
				return syscall.EINTR
			}
			left -= step
		}
	}
	return 0
}

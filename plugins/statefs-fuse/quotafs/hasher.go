package quotafs

import (
	"sync"

	"golang.org/x/sys/unix"
)

// hasher hashes the blocks files were written with ahead of Root, in a
// goroutine of its own: a writer waits for each FUSE reply, so the server
// and the writer take turns on one core, and the hashing runs on another.
// Root stays exact whatever the hasher did (merkle.Tree.Hash); an error
// here (a file closed meanwhile) only leaves the blocks to Root.
type hasher struct {
	mu      sync.Mutex
	pending map[*handle]struct{}
	kick    chan struct{}
	done    chan struct{}
	ended   sync.WaitGroup
}

func (f *FS) startHasher() {
	f.hash = &hasher{pending: map[*handle]struct{}{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
	f.hash.ended.Add(1)
	go f.hashLoop()
}

// hashLater asks for the blocks h wrote to be hashed.
func (f *FS) hashLater(h *handle) {
	f.hash.mu.Lock()
	f.hash.pending[h] = struct{}{}
	f.hash.mu.Unlock()
	select {
	case f.hash.kick <- struct{}{}:
	default:
	}
}

func (f *FS) hashLoop() {
	defer f.hash.ended.Done()
	for {
		select {
		case <-f.hash.done:
			return
		case <-f.hash.kick:
		}
		f.hash.mu.Lock()
		hs := f.hash.pending
		f.hash.pending = map[*handle]struct{}{}
		f.hash.mu.Unlock()
		for h := range hs {
			// A duplicate, so that a release meanwhile closes
			// nothing this reads from.
			h.mu.Lock()
			fd := -1
			if h.fd >= 0 {
				fd, _ = unix.FcntlInt(uintptr(h.fd), unix.F_DUPFD_CLOEXEC, 0)
			}
			h.mu.Unlock()
			if fd >= 0 {
				_ = f.tree.Hash(h.ino, fd)
				unix.Close(fd)
			}
		}
	}
}

// stopHasher ends the hasher's goroutine.
func (f *FS) stopHasher() {
	close(f.hash.done)
	f.hash.ended.Wait()
}

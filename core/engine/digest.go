package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// The content digest of a module is pinned in each instance's desired spec.
// A host of a thousand tenants naming one 2 MB module would hash it a
// thousand times per snapshot; instead, digests are kept per path, for the
// file's identity and change times: device, inode, size, mtime and ctime,
// read from the open file. A file replaced (rename over it), rewritten, or
// touched gets a new inode or a new ctime, which userspace cannot set back,
// so its digest is computed afresh.
//
// A file changed twice within one tick of the kernel's file clock, the
// second time after it was hashed and at the same size, would keep its
// times. As git does for its index, a digest is only kept once the file's
// ctime is settleTime in the past, so such a racy file is hashed on every
// call until it settles. And were a stale digest ever kept, it could not
// run the wrong module: the runtime verifies the digest against the bytes
// it loads at start, and runs those bytes (runtime-wasm seals them in a
// memfd), so a stale digest makes the start fail with an invalid-digest
// error; it never runs content other than the digest names.

// settleTime is how old a file's ctime must be before its digest is kept;
// a variable so that tests can keep digests of files they just wrote.
var settleTime = 2 * time.Second

// fileID is what identifies a file's content for the digest cache.
type fileID struct {
	dev, ino, size uint64
	mtime, ctime   syscall.Timespec
}

// digestCache holds module digests by path.
var digestCache = struct {
	sync.Mutex
	byPath map[string]cachedDigest
}{byPath: map[string]cachedDigest{}}

type cachedDigest struct {
	id     fileID
	digest string
}

// moduleDigest returns "sha256:<hex>" of the module file at path, from the
// digest cache when the file is the one hashed before.
func moduleDigest(path string) (string, error) {
	// O_NONBLOCK: a FIFO swapped in for the module must not hang the engine.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("read module: %w", err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return "", fmt.Errorf("read module %s: %w", path, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return "", fmt.Errorf("read module %s: not a regular file", path)
	}
	id := fileID{dev: st.Dev, ino: st.Ino, size: uint64(st.Size), mtime: st.Mtim, ctime: st.Ctim}
	digestCache.Lock()
	c, ok := digestCache.byPath[path]
	digestCache.Unlock()
	if ok && c.id == id {
		return c.digest, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read module %s: %w", path, err)
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if time.Since(time.Unix(st.Ctim.Unix())) >= settleTime {
		digestCache.Lock()
		digestCache.byPath[path] = cachedDigest{id: id, digest: digest}
		digestCache.Unlock()
	}
	return digest, nil
}

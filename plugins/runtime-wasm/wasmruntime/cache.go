package wasmruntime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kigumi/kigumi/core/fstree"
)

// The compilation cache is laid out as
//
//	DataDir/cache/<wazero version>/<sha256 of the module>/
//
// one directory per module's content and wazero version, each a wazero
// file cache of its own (wazero adds its own version-named directory
// inside, which holds the one module's compiled code). Keyed so, pruning a
// module is removing one directory, and pruning what an older wazero
// compiled is removing its version's directory; nothing has to be read to
// know what an entry belongs to. The digest is the plugin's sha256 of the
// bytes it seals in the sandbox's memfd, the bytes the sandbox compiles, so
// an instance compiles only into the directory of exactly its module: no
// module lands where another's is looked up (and wazero keys each entry by
// the module's hash inside, too). The whole tree is root 0700: sandboxes
// compile while still root and drop to the tenant's user only after, so
// no tenant ever writes to it, or reads it.
//
// Which instances use which module is recorded in
// DataDir/instances/<sha256 of the RunDir>, a JSON instanceRecord that
// Start writes before the sandbox compiles and Destroy removes. An
// instance is live while its RunDir exists (the engine removes it on
// destroy; Destroy does too), so a record whose RunDir is gone, left by a
// plugin that crashed, counts for nothing.
//
// prune, on Destroy and on Configure, removes the cache directories of
// modules no live instance uses, and the module store's blobs and records
// of images no live instance runs (oci.go), except what was used within
// the grace period (pruneGrace): a module just compiled or an image just
// pulled by a Validate is kept for the apply that follows, and an
// instance that is destroyed and started again soon, as an update of
// another field does, does not recompile.
//
// Start marks its module live (the record, and the cache directory made
// or touched) under a shared lock on DataDir/prune.lock, and prune holds
// it exclusively: a prune either ran before the mark, and the sandbox then
// compiles into a directory made afresh, or it sees the record and keeps
// the directory. The lock is a file lock, so that it holds between the
// plugin processes the CLI's commands start.

// pruneGrace is how long a module's compiled code and a pulled image are
// kept after their last use when no live instance uses them. It outlasts
// a pull (ociPullTimeout) with the read of its module after it, which
// nothing else protects from a prune.
const pruneGrace = 10 * time.Minute

// Where the cache's parts are in DataDir.
const (
	cacheDirName     = "cache"
	instancesDirName = "instances"
	pruneLockName    = "prune.lock"
)

// wazeroVersion is the name of the current wazero version's directory in
// the cache: the version of the wazero module linked in, as wazero itself
// finds it, made safe as one path element.
var wazeroVersion = func() string {
	v := ""
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/tetratelabs/wazero" {
				v = dep.Version
				if dep.Replace != nil && dep.Replace.Version != "" {
					v = dep.Replace.Version
				}
			}
		}
	}
	if v == "" || v == "(devel)" {
		return "dev"
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(".-+_", r) {
			return r
		}
		return '_'
	}, v)
}()

// instanceRecord is what DataDir/instances records of a started instance.
type instanceRecord struct {
	RunDir string `json:"run_dir"`
	// Module is the hex sha256 of the module the instance runs.
	Module string `json:"module"`
}

// moduleCacheDir is the cache directory of the module whose sha256 is sum.
func (r *Runtime) moduleCacheDir(sum string) string {
	return filepath.Join(r.cacheDir, wazeroVersion, sum)
}

// instancePath is where the record of the instance in runDir is.
func (r *Runtime) instancePath(runDir string) string {
	sum := sha256.Sum256([]byte(runDir))
	return filepath.Join(r.dataDir, instancesDirName, hex.EncodeToString(sum[:]))
}

// lockPrune takes the prune lock, shared or exclusive, and returns its
// release.
func (r *Runtime) lockPrune(how int) (func(), error) {
	f, err := os.OpenFile(filepath.Join(r.dataDir, pruneLockName), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open prune lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("take prune lock: %w", err)
	}
	return func() { f.Close() }, nil
}

// markUsed records that the instance in runDir, which exists, runs the
// module whose sha256 is sum, and makes (or touches) the module's cache
// directory, which it returns, under the shared prune lock.
func (r *Runtime) markUsed(runDir string, sum [sha256.Size]byte) (string, error) {
	unlock, err := r.lockPrune(unix.LOCK_SH)
	if err != nil {
		return "", err
	}
	defer unlock()
	hexSum := hex.EncodeToString(sum[:])
	if err := writeFileAtomic(r.instancePath(runDir), instanceRecord{RunDir: runDir, Module: hexSum}); err != nil {
		return "", fmt.Errorf("record instance: %w", err)
	}
	dir := r.moduleCacheDir(hexSum)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create compilation cache: %w", err)
	}
	if err := touch(dir); err != nil {
		return "", fmt.Errorf("touch compilation cache: %w", err)
	}
	return dir, nil
}

// forget removes the record of the instance in runDir.
func (r *Runtime) forget(runDir string) error {
	if err := os.Remove(r.instancePath(runDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove instance record: %w", err)
	}
	return nil
}

// pruneOrWarn prunes, and logs a warning if that fails: housekeeping,
// which must not fail the Destroy or Configure it follows (a Destroy that
// failed so would fail again on every retry, the instance long gone).
func (r *Runtime) pruneOrWarn(ctx context.Context) {
	if err := r.prune(ctx); err != nil {
		r.log.Warn("pruning the compilation cache and the module store failed; it is tried again at the next Destroy", "error", err.Error())
	}
}

// prune removes, under the exclusive prune lock, the records of instances
// whose RunDir is gone, then the cache directories and the module store's
// entries that no live instance uses and that were not used within the
// grace period.
func (r *Runtime) prune(ctx context.Context) error {
	unlock, err := r.lockPrune(unix.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	live, err := r.liveModules()
	if err != nil {
		return err
	}
	old := time.Now().Add(-r.grace)
	if err := pruneCache(ctx, r.cacheDir, live, old); err != nil {
		return fmt.Errorf("prune compilation cache: %w", err)
	}
	if err := r.oci.prune(live, old); err != nil {
		return fmt.Errorf("prune module store: %w", err)
	}
	return nil
}

// liveModules returns the hex sha256 of every module a live instance
// runs, and removes the records of instances that are gone.
func (r *Runtime) liveModules() (map[string]bool, error) {
	dir := filepath.Join(r.dataDir, instancesDirName)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read instance records: %w", err)
	}
	live := map[string]bool{}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		var rec instanceRecord
		b, err := os.ReadFile(p)
		if err == nil {
			err = json.Unmarshal(b, &rec)
		}
		// A record is named after its RunDir: one that is not, or not a
		// record at all (a temporary file of a crashed write), goes.
		if err != nil || !filepath.IsAbs(rec.RunDir) || r.instancePath(rec.RunDir) != p || !isDigestHex(rec.Module) {
			if err := os.RemoveAll(p); err != nil {
				return nil, fmt.Errorf("remove instance record: %w", err)
			}
			continue
		}
		_, err = os.Lstat(rec.RunDir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if err := os.Remove(p); err != nil {
				return nil, fmt.Errorf("remove instance record: %w", err)
			}
		case err != nil:
			return nil, fmt.Errorf("instance record %s: %w", rec.RunDir, err)
		default:
			live[rec.Module] = true
		}
	}
	return live, nil
}

// pruneCache removes from the cache in dir every directory of another
// wazero version, and every module's directory that no live instance
// uses; both only when last changed before old.
func pruneCache(ctx context.Context, dir string, live map[string]bool, old time.Time) error {
	remove := func(p string) error {
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) || err == nil && fi.ModTime().After(old) {
			return nil
		}
		if err != nil {
			return err
		}
		return fstree.RemoveAll(ctx, p)
	}
	versions, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, v := range versions {
		// Another version's compiled code is of no use to this one; so
		// is the layout before this one, a wazero cache at the top.
		if v.Name() != wazeroVersion {
			if err := remove(filepath.Join(dir, v.Name())); err != nil {
				return err
			}
		}
	}
	mods, err := os.ReadDir(filepath.Join(dir, wazeroVersion))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, m := range mods {
		if !live[m.Name()] {
			if err := remove(filepath.Join(dir, wazeroVersion, m.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// isDigestHex reports whether s is a hex sha256, in lower case.
func isDigestHex(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// writeFileAtomic writes v as JSON to p through a temporary file in its
// directory, renamed over p.
func writeFileAtomic(p string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := tmp.Write(b); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), p)
}

package wasmruntime

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// pruningRuntime returns a Runtime on dir that prunes with the given grace
// period: the tests' other runtimes keep pruneGrace, so that they share
// what they compile.
func pruningRuntime(t *testing.T, dir string, grace time.Duration, settings sdk.Config) *Runtime {
	t.Helper()
	r := New()
	r.grace = grace
	if err := r.Configure(context.Background(), sdk.ConfigureRequest{Host: "test", Settings: settings, DataDir: dir}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return r
}

// moduleSum returns the hex sha256 of a module file.
func moduleSum(t *testing.T, module string) string {
	t.Helper()
	sum := sha256.Sum256(readFile(t, modules[module]))
	return hex.EncodeToString(sum[:])
}

// cachedFiles returns the files in a module's cache directory, none when
// it is gone.
func cachedFiles(t *testing.T, r *Runtime, sum string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(r.moduleCacheDir(sum), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return files
}

// startUntilEnd starts req, waits until its module has ended and destroys
// the instance at the end of the test, if the test has not.
func startUntilEnd(t *testing.T, r *Runtime, req *sdk.StartRequest) sdk.Handle {
	t.Helper()
	h := start(t, r, req)
	if st := waitEnded(t, r, h); st.ExitCode != 0 && req.Artifact.Module != modules["trap"] {
		t.Fatalf("%s ended %+v", req.Artifact.Module, st)
	}
	return h
}

// TestPruneDestroy: module A runs in two tenants' instances, B in one;
// destroying an instance removes its module's compiled code once no other
// instance uses it, and its record at once.
func TestPruneDestroy(t *testing.T) {
	r := pruningRuntime(t, t.TempDir(), 0, nil)
	a, b := moduleSum(t, "tiny"), moduleSum(t, "trap")
	reqA1, reqA2, reqB := request(t, "tiny"), request(t, "tiny"), request(t, "trap")
	reqA2.Instance = sdk.Instance{Tenant: "bob", Name: "web"}
	handles := map[string]sdk.Handle{
		"A1": startUntilEnd(t, r, reqA1),
		"A2": startUntilEnd(t, r, reqA2),
		"B":  startUntilEnd(t, r, reqB),
	}
	for _, step := range []struct {
		destroy      string
		wantA, wantB bool
		records      int
	}{
		{"", true, true, 3},
		{"B", true, false, 2},
		{"A1", true, false, 1},
		{"A2", false, false, 0},
	} {
		if step.destroy != "" {
			if err := r.Destroy(context.Background(), handles[step.destroy]); err != nil {
				t.Fatalf("Destroy %s: %v", step.destroy, err)
			}
		}
		if got := len(cachedFiles(t, r, a)) > 0; got != step.wantA {
			t.Errorf("after destroying %q: A cached %v, want %v", step.destroy, got, step.wantA)
		}
		if got := len(cachedFiles(t, r, b)) > 0; got != step.wantB {
			t.Errorf("after destroying %q: B cached %v, want %v", step.destroy, got, step.wantB)
		}
		if recs, _ := os.ReadDir(filepath.Join(r.dataDir, instancesDirName)); len(recs) != step.records {
			t.Errorf("after destroying %q: %d instance records, want %d", step.destroy, len(recs), step.records)
		}
	}
}

// TestPruneAfterCrash: a new Runtime on the DataDir of a plugin that
// crashed prunes what that one left: the code of a module whose
// instance's RunDir went without a Destroy, another wazero version's, the
// cache layout before this one's, and torn records; not what a live
// instance uses.
func TestPruneAfterCrash(t *testing.T) {
	dir := t.TempDir()
	r := pruningRuntime(t, dir, 0, nil)
	a, b := moduleSum(t, "tiny"), moduleSum(t, "trap")
	reqA := request(t, "tiny")
	startUntilEnd(t, r, reqA)
	reqB := request(t, "trap")
	startUntilEnd(t, r, reqB)
	// The plugin crashed in B's Destroy, after its RunDir went.
	if err := os.RemoveAll(reqB.RunDir); err != nil {
		t.Fatal(err)
	}
	left := []string{
		filepath.Join(dir, cacheDirName, "v0.0.1", b, "wazero-v0.0.1-amd64-linux", "entry"),
		filepath.Join(dir, cacheDirName, "wazero-v1.8.0-amd64-linux", "entry"),
		filepath.Join(dir, cacheDirName, wazeroVersion, strings.Repeat("0", 64), "entry"),
		filepath.Join(dir, cacheDirName, wazeroVersion, "not-a-digest", "entry"),
		filepath.Join(dir, instancesDirName, ".tmp-123"),
		filepath.Join(dir, instancesDirName, strings.Repeat("1", 64)),
	}
	for _, p := range left {
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(`{"run_dir":"/","module":"`+a+`"}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if len(cachedFiles(t, r, b)) == 0 {
		t.Fatal("B is not cached before the restart")
	}

	r = pruningRuntime(t, dir, 0, nil)
	if len(cachedFiles(t, r, a)) == 0 {
		t.Error("the restart pruned A, which a live instance uses")
	}
	if files := cachedFiles(t, r, b); len(files) != 0 {
		t.Errorf("the restart left B's %v", files)
	}
	for _, p := range left {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("the restart left %s (%v)", p, err)
		}
	}
	recs, _ := os.ReadDir(filepath.Join(dir, instancesDirName))
	if len(recs) != 1 || recs[0].Name() != filepath.Base(r.instancePath(reqA.RunDir)) {
		t.Errorf("instance records %v, want A's alone", recs)
	}
	if versions, _ := os.ReadDir(filepath.Join(dir, cacheDirName)); len(versions) != 1 || versions[0].Name() != wazeroVersion {
		t.Errorf("cache holds %v, want %s alone", versions, wazeroVersion)
	}
}

// TestPruneGrace: what no live instance uses is kept until its grace
// period has passed since its last use, and what one uses past it.
func TestPruneGrace(t *testing.T) {
	dir := t.TempDir()
	r := pruningRuntime(t, dir, pruneGrace, nil)
	liveRun := t.TempDir()
	liveSum := strings.Repeat("a", 64)
	if _, err := r.markUsed(liveRun, mustDecodeSum(t, liveSum)); err != nil {
		t.Fatal(err)
	}
	oci := filepath.Join(dir, "oci")
	keptRecord := &ociRecord{Reference: "reg.test/kept:v1", Manifest: digest.FromString("m1"), Module: digest.FromString("kept")}
	oldRecord := &ociRecord{Reference: "reg.test/old:v1", Manifest: digest.FromString("m2"), Module: digest.FromString("old")}
	liveRecord := &ociRecord{Reference: "reg.test/live:v1", Manifest: digest.FromString("m3"), Module: digest.Digest("sha256:" + liveSum)}
	for _, rec := range []*ociRecord{keptRecord, oldRecord, liveRecord} {
		if err := r.oci.writeRecord(rec); err != nil {
			t.Fatal(err)
		}
	}
	blob := func(d digest.Digest) string { return r.oci.blobPath(d) }
	tests := []struct {
		name string
		path string
		age  time.Duration
		kept bool
	}{
		{"unused module, recent", r.moduleCacheDir(strings.Repeat("b", 64)), time.Minute, true},
		{"unused module, past grace", r.moduleCacheDir(strings.Repeat("c", 64)), pruneGrace + time.Minute, false},
		{"live module, past grace", r.moduleCacheDir(liveSum), pruneGrace + time.Hour, true},
		{"other wazero, recent", filepath.Join(r.cacheDir, "v0.0.1"), time.Minute, true},
		{"other wazero, past grace", filepath.Join(r.cacheDir, "v0.0.2"), pruneGrace + time.Minute, false},
		{"record used recently", r.oci.recordPath(keptRecord.Reference), time.Minute, true},
		{"recent record's blob, past grace", blob(keptRecord.Module), pruneGrace + time.Hour, true},
		{"record past grace", r.oci.recordPath(oldRecord.Reference), pruneGrace + time.Minute, false},
		{"old record's blob, past grace", blob(oldRecord.Module), pruneGrace + time.Minute, false},
		{"live record, past grace", r.oci.recordPath(liveRecord.Reference), pruneGrace + time.Hour, true},
		{"live blob, past grace", blob(liveRecord.Module), pruneGrace + time.Hour, true},
		{"blob without record, being pulled", blob(digest.FromString("pulling")), time.Minute, true},
		{"blob without record, past grace", blob(digest.FromString("orphan")), pruneGrace + time.Minute, false},
		{"pull's temporary file, pulling", filepath.Join(oci, "tmp", "blob-1"), ociPullTimeout - time.Minute, true},
		{"pull's temporary file, past the pull timeout", filepath.Join(oci, "tmp", "blob-2"), ociPullTimeout + time.Minute, false},
	}
	for _, tt := range tests {
		if strings.HasPrefix(tt.path, r.cacheDir) {
			if err := os.MkdirAll(tt.path, 0o700); err != nil {
				t.Fatal(err)
			}
		} else if _, err := os.Stat(tt.path); os.IsNotExist(err) {
			if err := os.WriteFile(tt.path, nil, 0o400); err != nil {
				t.Fatal(err)
			}
		}
		when := time.Now().Add(-tt.age)
		if err := os.Chtimes(tt.path, when, when); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := os.Stat(tt.path)
			if kept := err == nil; kept != tt.kept {
				t.Errorf("%s: kept %v, want %v (%v)", tt.path, kept, tt.kept, err)
			}
		})
	}
}

func mustDecodeSum(t *testing.T, s string) [sha256.Size]byte {
	t.Helper()
	var sum [sha256.Size]byte
	if n, err := hex.Decode(sum[:], []byte(s)); err != nil || n != sha256.Size {
		t.Fatalf("decode %q: %v", s, err)
	}
	return sum
}

// TestPruneRace starts instances of a module while prunes run without
// pause: every Start compiles into its module's directory and finds it
// there when it is ready, and once the last instance is destroyed it goes.
func TestPruneRace(t *testing.T) {
	r := pruningRuntime(t, t.TempDir(), 0, nil)
	sum := moduleSum(t, "tiny")
	for i := range 8 {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var prunes int
		var pruneErr error
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := r.prune(context.Background()); err != nil {
					pruneErr = err
					return
				}
				prunes++
			}
		})
		h := startUntilEnd(t, r, request(t, "tiny"))
		close(stop)
		wg.Wait()
		if pruneErr != nil {
			t.Fatalf("prune: %v", pruneErr)
		}
		files := cachedFiles(t, r, sum)
		if len(files) != 1 || strings.HasSuffix(files[0], ".tmp") {
			t.Fatalf("round %d (%d prunes): cache holds %v, want the compiled module", i, prunes, files)
		}
		if err := r.Destroy(context.Background(), h); err != nil {
			t.Fatal(err)
		}
		if files := cachedFiles(t, r, sum); len(files) != 0 {
			t.Fatalf("round %d: cache holds %v after the last instance", i, files)
		}
	}
}

// TestOCIPrune: a pulled image stays while an instance runs it, goes with
// the last one, and is pulled again at its next use.
func TestOCIPrune(t *testing.T) {
	reg := startRegistry(t)
	image := reg.Addr + "/apps/tiny:v1"
	pushModule(t, image, imageConfig, runwasiLayer, tinyModule)
	dir := t.TempDir()
	r := pruningRuntime(t, dir, 0, nil)
	blob := filepath.Join(dir, "oci", "blobs", "sha256", digest.FromBytes(tinyModule).Encoded())
	stored := func() (blobs, refs int) {
		b, _ := os.ReadDir(filepath.Dir(blob))
		rs, _ := os.ReadDir(filepath.Join(dir, "oci", "refs"))
		return len(b), len(rs)
	}

	h1 := startUntilEnd(t, r, imageRequest(t, image, ""))
	h2 := startUntilEnd(t, r, imageRequest(t, image, ""))
	if err := r.Destroy(context.Background(), h1); err != nil {
		t.Fatal(err)
	}
	if blobs, refs := stored(); blobs != 1 || refs != 1 {
		t.Fatalf("while an instance runs the image, the store holds %d blobs and %d records", blobs, refs)
	}
	if err := r.Destroy(context.Background(), h2); err != nil {
		t.Fatal(err)
	}
	if blobs, refs := stored(); blobs != 0 || refs != 0 {
		t.Fatalf("after the last instance, the store holds %d blobs and %d records", blobs, refs)
	}

	// Pulled again: the tag now names another module, which runs.
	trap := pushModule(t, image, imageConfig, runwasiLayer, trapModule)
	req := imageRequest(t, image, trap.String())
	h := start(t, r, req)
	if st := waitEnded(t, r, h); st.Cause != sdk.CauseTrap {
		t.Errorf("the image pulled again ended %+v, want the new module's trap", st)
	}
	if blobs, refs := stored(); blobs != 1 || refs != 1 {
		t.Errorf("after the pull again, the store holds %d blobs and %d records", blobs, refs)
	}

	// What a Validate pulled outlasts a prune, within the grace period, for
	// the Start that follows: that Start needs no registry.
	r = pruningRuntime(t, t.TempDir(), pruneGrace, nil)
	if err := r.Validate(context.Background(), imageRequest(t, image, "")); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if err := r.prune(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg.Close()
	h = start(t, r, imageRequest(t, image, ""))
	if st := waitEnded(t, r, h); st.Cause != sdk.CauseTrap {
		t.Errorf("the image Validate pulled ended %+v, want its trap", st)
	}
}

// TestCompileCachedByDigest: the sandbox caches a module's code only in
// a directory named after the module's sha256.
func TestCompileCachedByDigest(t *testing.T) {
	sum := sha256.Sum256(tinyModule)
	other := sha256.Sum256(trapModule)
	for _, tt := range []struct {
		name   string
		dir    string
		cached bool
	}{
		{"its digest", hex.EncodeToString(sum[:]), true},
		{"another module's digest", hex.EncodeToString(other[:]), false},
		{"not a digest", "cache", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			dir := filepath.Join(t.TempDir(), tt.dir)
			rt, _, err := compileCached(ctx, sandboxConfig{CacheDir: dir}, tinyModule)
			if err != nil {
				t.Fatal(err)
			}
			rt.Close(ctx)
			var files []string
			_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
				if err == nil && !e.IsDir() {
					files = append(files, p)
				}
				return nil
			})
			if cached := len(files) > 0; cached != tt.cached {
				t.Errorf("cached %v (%v), want %v", cached, files, tt.cached)
			}
		})
	}
}

// TestPruneFailureKeepsDestroy: a prune that fails (here, an entry of the
// module store that cannot be removed) leaves Destroy and Configure
// successful, the instance gone and its record too; pruning is tried again
// at the next Destroy.
func TestPruneFailureKeepsDestroy(t *testing.T) {
	dir := t.TempDir()
	r := pruningRuntime(t, dir, 0, nil)
	h := startUntilEnd(t, r, request(t, "tiny"))
	// A non-empty directory where a record goes: os.Remove fails on it.
	stuck := filepath.Join(r.oci.dir, "refs", "stuck")
	if err := os.MkdirAll(filepath.Join(stuck, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := r.prune(context.Background()); err == nil {
		t.Fatal("prune succeeded with an entry it cannot remove")
	}
	if err := r.Destroy(context.Background(), h); err != nil {
		t.Fatalf("Destroy: %v", err)
	}
	d, err := decodeHandle(h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(r.instancePath(d.RunDir)); !os.IsNotExist(err) {
		t.Errorf("the instance's record is still there (%v)", err)
	}
	pruningRuntime(t, dir, 0, nil) // Configure does not fail either
}

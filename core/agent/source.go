package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/hcl/v2"

	"github.com/kigumi/kigumi/core/engine"
	"github.com/kigumi/kigumi/core/spec"
)

// Snapshot is the full desired state of one source: every tenant it owns.
type Snapshot struct {
	// Kind is the source's kind, such as "file".
	Kind string
	// Generation numbers the snapshots of a source, from 1.
	Generation uint64
	// Files holds each spec file, by source name ("file:tenants/a.hcl").
	Files map[string]*FileSpec
	// Resync is set on a periodic full resync: every tenant is
	// reconciled, changed or not.
	Resync bool
}

// FileSpec is one spec file of a snapshot.
type FileSpec struct {
	// Source is the file's source name.
	Source string
	// Tenants are the file's tenants; nil when it is invalid.
	Tenants []*spec.Tenant
	// Diags are the file's diagnostics; with errors the file is invalid.
	Diags hcl.Diagnostics
	// Files are the parsed files, for rendering Diags; of a file decoded
	// without diagnostics, only its bytes.
	Files map[string]*hcl.File
}

// Invalid reports whether the file could not be used.
func (f *FileSpec) Invalid() bool { return f.Diags.HasErrors() }

// Settle is how long the file source waits after a change before it reads
// the directory, so that a burst of writes is read once, complete.
const Settle = 100 * time.Millisecond

// FileSource watches a host's tenant spec directory and emits a snapshot
// each time it changes, and every Resync as a safety net.
type FileSource struct {
	Host   *spec.Host
	Resync time.Duration
	// Plugins, when set, checks each newly decoded file's instances
	// against the runtimes that will run them: their settings blocks
	// (decoded in place), their permissions, and the runtime's Validate.
	Plugins PluginChecker
	gen     uint64
	// parsed holds each file's last decoding, by path, for its content.
	parsed map[string]*parsedFile
}

// PluginChecker checks decoded tenants against the plugins that will run
// them, as engine.Engine.CheckTenants does: it decodes each instance's
// settings in place, and returns diagnostics for what the plugins refuse,
// or an error when a plugin could not be asked.
type PluginChecker interface {
	CheckTenants(ctx context.Context, tenants []*spec.Tenant) (hcl.Diagnostics, error)
}

// parsedFile is a spec file's decoding (spec.Parser.ParseTenant), which
// depends on the file's path and content alone. The checks against the host
// (spec.Checker) are not kept: they run on every scan.
type parsedFile struct {
	sum     [sha256.Size]byte
	tenants []*spec.Tenant
	diags   hcl.Diagnostics
	files   map[string]*hcl.File
	// retry is set when a plugin could not check the file: it is decoded
	// and checked again at the next scan, and held until then.
	retry bool
}

// Run emits snapshots into out until ctx ends: one at once, one after
// every change in the directory, and one every Resync.
func (s *FileSource) Run(ctx context.Context, out chan<- Snapshot) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch tenant specs: %w", err)
	}
	defer w.Close()
	if err := w.Add(s.Host.TenantDir); err != nil {
		return fmt.Errorf("watch tenant specs in %s: %w", s.Host.TenantDir, err)
	}
	tick := time.NewTicker(s.Resync)
	defer tick.Stop()
	emit := func(resync bool) bool {
		snap := s.Scan(ctx)
		snap.Resync = resync
		select {
		case out <- snap:
			return true
		case <-ctx.Done():
			return false
		}
	}
	if !emit(true) {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if !emit(true) {
				return nil
			}
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if !isSpecFile(ev.Name) {
				continue
			}
			// Coalesce a burst of events (an editor's truncate, write and
			// rename) into one scan, after the writer has had a moment.
			select {
			case <-time.After(Settle):
			case <-ctx.Done():
				return nil
			}
			drain(w.Events)
			if !emit(false) {
				return nil
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// An overflow loses events: the next scan sees everything.
			if errors.Is(err, fsnotify.ErrEventOverflow) && !emit(true) {
				return nil
			}
		}
	}
}

func drain(c <-chan fsnotify.Event) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

func isSpecFile(path string) bool {
	base := filepath.Base(path)
	return strings.HasSuffix(base, ".hcl") && !strings.HasPrefix(base, ".")
}

// Scan reads every spec file of the directory into a snapshot. Each file is
// read afresh, safely (spec.ReadTenantFile), but decoded only when its
// content changed since the last scan; a file's tenants are then the same
// *spec.Tenant values as last time, which the agent's caches of policy
// decisions and desired state key on. The checks against the host (modules
// inside the artifacts directory, capacity) run on every scan, for every
// file.
func (s *FileSource) Scan(ctx context.Context) Snapshot {
	s.gen++
	snap := Snapshot{Kind: "file", Generation: s.gen, Files: map[string]*FileSpec{}}
	entries, err := os.ReadDir(s.Host.TenantDir)
	if err != nil {
		// An unreadable directory is no evidence that tenants are gone:
		// report it on the host spec and change nothing.
		snap.Files[""] = &FileSpec{Diags: hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Cannot read tenant specs",
			Detail: err.Error(), Subject: s.Host.DeclRange.Ptr()}}}
		return snap
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if isSpecFile(e.Name()) {
			names = append(names, filepath.Join(s.Host.TenantDir, e.Name()))
		}
	}
	slices.Sort(names)
	// Files are read and decoded in parallel; the checks, which share
	// what they found of each module, run in order after.
	loaded := make([]*parsedFile, len(names))
	readDiags := make([]hcl.Diagnostics, len(names))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(names)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(names); i = int(next.Add(1) - 1) {
				loaded[i], readDiags[i] = s.decode(ctx, names[i])
			}
		})
	}
	wg.Wait()
	parsed := make(map[string]*parsedFile, len(names))
	check := spec.NewChecker(s.Host)
	for i, path := range names {
		f := s.check(path, loaded[i], readDiags[i], check)
		snap.Files[f.Source] = f
		if loaded[i] != nil && !loaded[i].retry {
			parsed[path] = loaded[i]
		}
	}
	s.parsed = parsed // files gone or unreadable are forgotten
	return snap
}

// decode reads one spec file, as spec.Parser.LoadTenantFile reads it (only
// a regular file inside the tenant directory, through a size cap), and
// decodes it unless its content is that of the last scan. It returns the
// decoding, or nil and the diagnostics when the file cannot be read. It
// only reads s.parsed, so files are decoded in parallel.
func (s *FileSource) decode(ctx context.Context, path string) (*parsedFile, hcl.Diagnostics) {
	src, diags := spec.ReadTenantFile(s.Host, path)
	if diags.HasErrors() {
		return nil, diags
	}
	sum := sha256.Sum256(src)
	if p := s.parsed[path]; p != nil && p.sum == sum {
		return p, nil
	}
	parser := spec.NewParser()
	p := &parsedFile{sum: sum}
	p.tenants, p.diags = parser.ParseTenant(path, src)
	p.files = parser.Files()
	if s.Plugins != nil && !p.diags.HasErrors() {
		// The decoding is fresh, not yet shared: settings are decoded
		// into it in place.
		ds, err := s.Plugins.CheckTenants(ctx, p.tenants)
		p.diags = append(p.diags, ds...)
		if err != nil {
			p.retry = true
			p.diags = append(p.diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Cannot check the spec with its plugins",
				Detail:  err.Error() + ". The file's tenants are left as they run; the agent tries again at the next scan.",
				Subject: &hcl.Range{Filename: path, Start: hcl.InitialPos, End: hcl.InitialPos}})
		}
		if p.diags.HasErrors() {
			p.tenants = nil
		}
	}
	if len(p.diags) == 0 {
		// The syntax tree is kept for a file with diagnostics alone: the
		// bytes are enough for the snippets of the checks' diagnostics,
		// and a thousand trees would double the agent's heap.
		p.files = map[string]*hcl.File{path: {Body: hcl.EmptyBody(), Bytes: src}}
	}
	return p, nil
}

// check makes the file at path of a scan from its decoding p (nil when it
// could not be read, with readDiags), checking its tenants with check.
func (s *FileSource) check(path string, p *parsedFile, readDiags hcl.Diagnostics, check *spec.Checker) *FileSpec {
	f := &FileSpec{Source: engine.FileSource(s.Host, path)}
	if p == nil {
		f.Diags = readDiags
		return f
	}
	f.Files = p.files
	f.Diags = slices.Clone(p.diags)
	if !p.diags.HasErrors() {
		var ds hcl.Diagnostics
		f.Tenants, ds = check.Check(p.tenants)
		f.Diags = append(f.Diags, ds...)
	}
	if !f.Diags.HasErrors() && len(f.Tenants) == 0 {
		// An empty file is most likely one being written (truncated, then
		// filled): it holds its tenants. Delete the file to delete them.
		f.Diags = append(f.Diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "No tenant",
			Detail:  "The file declares no tenant. To destroy a file's tenants, delete the file.",
			Subject: &hcl.Range{Filename: path, Start: hcl.InitialPos, End: hcl.InitialPos}})
	}
	return f
}

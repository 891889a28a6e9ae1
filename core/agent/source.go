package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
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
	// Files are the parsed files, for rendering Diags.
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
	gen    uint64
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
		snap := s.Scan()
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

// Scan reads every spec file of the directory into a snapshot.
func (s *FileSource) Scan() Snapshot {
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
	for _, path := range names {
		f := s.load(path)
		snap.Files[f.Source] = f
	}
	return snap
}

// load reads and decodes one spec file, as spec.Parser.LoadTenantFile reads
// it: only a regular file inside the tenant directory, through a size cap.
func (s *FileSource) load(path string) *FileSpec {
	f := &FileSpec{Source: engine.FileSource(s.Host, path)}
	p := spec.NewParser()
	f.Tenants, f.Diags = p.LoadTenantFile(s.Host, path)
	f.Files = p.Files()
	if !f.Diags.HasErrors() && len(f.Tenants) == 0 {
		// An empty file is most likely one being written (truncated, then
		// filled): it holds its tenants. Delete the file to delete them.
		f.Diags = append(f.Diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "No tenant",
			Detail:  "The file declares no tenant. To destroy a file's tenants, delete the file.",
			Subject: &hcl.Range{Filename: path, Start: hcl.InitialPos, End: hcl.InitialPos}})
	}
	return f
}

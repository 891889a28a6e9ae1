package wasmruntime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"
)

// limitWatch is what Start records of the instance's cgroup, so that
// Inspect can tell, once the sandbox has ended without an exit record,
// whether a cgroup limit ended it: the cgroup directories of the memory and
// pids controllers, and their event counters when the sandbox started. Only
// counts that grew since then are the sandbox's: an earlier run's OOM kill
// is not blamed again. A field is empty when the host cannot tell (no such
// controller, or a kernel without the counter).
type limitWatch struct {
	// MemoryRoot and PidsRoot are the roots of the hierarchies of
	// MemoryDir and PidsDir: no limit above them is the instance's.
	MemoryRoot string `json:"memory_root,omitempty"`
	MemoryDir  string `json:"memory_dir,omitempty"`
	// OOMKills is the cgroup's count of processes the kernel's OOM killer
	// killed in it.
	OOMKills uint64 `json:"oom_kills,omitempty"`
	PidsRoot string `json:"pids_root,omitempty"`
	PidsDir  string `json:"pids_dir,omitempty"`
	// PidsMax is the count of forks (and threads) refused in the cgroup
	// for its pids limit, or an ancestor's.
	PidsMax uint64 `json:"pids_max,omitempty"`
}

// watchLimits finds the memory and pids cgroups of the cgroup whose
// cgroup.procs files are procsFiles, at cgroup path, and reads their event
// counters. It knows v1 (memory.oom_control's oom_kill, kernel 4.13 and
// later; pids.events) and v2 (memory.events and pids.events).
func watchLimits(path string, procsFiles []string) (limitWatch, error) {
	var w limitWatch
	for _, p := range procsFiles {
		dir := filepath.Dir(p)
		root := strings.TrimSuffix(dir, filepath.Clean("/"+path))
		if root == dir || path == "" || path == "/" {
			root = dir // not below the path: look at this cgroup alone
		}
		if n, ok, err := oomKills(dir); err != nil {
			return w, err
		} else if ok && w.MemoryDir == "" {
			w.MemoryRoot, w.MemoryDir, w.OOMKills = root, dir, n
		}
		if n, ok, err := eventCount(filepath.Join(dir, "pids.events"), "max"); err != nil {
			return w, err
		} else if ok && w.PidsDir == "" {
			w.PidsRoot, w.PidsDir, w.PidsMax = root, dir, n
		}
	}
	return w, nil
}

// oomKills reads a memory cgroup's count of OOM kills; ok is false when dir
// is no memory cgroup or the kernel does not count them.
func oomKills(dir string) (n uint64, ok bool, err error) {
	n, ok, err = eventCount(filepath.Join(dir, "memory.events"), "oom_kill") // v2
	if ok || err != nil {
		return n, ok, err
	}
	return eventCount(filepath.Join(dir, "memory.oom_control"), "oom_kill") // v1
}

// eventCount reads the "key N" line of a cgroup's flat keyed file; ok is
// false when the file or the line does not exist.
func eventCount(file, key string) (n uint64, ok bool, err error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	} else if err != nil {
		return 0, false, fmt.Errorf("read cgroup events: %w", err)
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		k, v, _ := strings.Cut(s.Text(), " ")
		if k != key {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("%s: %s: %w", file, key, err)
		}
		return n, true, nil
	}
	return 0, false, nil
}

// limitEnd is how a cgroup limit ended a sandbox.
type limitEnd struct {
	// oom is set when the OOM killer killed it; else a pids limit refused
	// it a thread, which the sandbox does not survive.
	oom     bool
	message string
}

// ended reports whether one of the cgroup's limits ended the sandbox since
// w was taken: an OOM kill, or a refused fork (the Go runtime dies when it
// cannot start a thread).
func (w limitWatch) ended() (limitEnd, bool) {
	if w.MemoryDir != "" {
		if n, ok, err := oomKills(w.MemoryDir); err == nil && ok && n > w.OOMKills {
			limit := describeLimit(w.MemoryRoot, w.MemoryDir, []string{"memory.max", "memory.limit_in_bytes"}, "memory limit", humanize.IBytes)
			if limit == "" {
				return limitEnd{oom: true, message: "killed by the kernel's OOM killer, with no memory limit on its cgroup: the host ran out of memory"}, true
			}
			return limitEnd{oom: true, message: "killed by the kernel's OOM killer at " + limit}, true
		}
	}
	if w.PidsDir != "" {
		if n, ok, err := eventCount(filepath.Join(w.PidsDir, "pids.events"), "max"); err == nil && ok && n > w.PidsMax {
			count := func(n uint64) string { return strconv.FormatUint(n, 10) + " processes and threads" }
			// A refusal counts here whichever limit refused: one exists.
			return limitEnd{message: "the sandbox could not start a thread, at " +
				describeLimit(w.PidsRoot, w.PidsDir, []string{"pids.max"}, "limit", count)}, true
		}
	}
	return limitEnd{}, false
}

// describeLimit names the tightest of the limits in files of dir and its
// ancestors below root, such as "its memory limit of 64 MiB" or "the memory
// limit of 64 MiB of its parent cgroup /kigumi/alice"; it returns "" when
// there is none.
func describeLimit(root, dir string, files []string, what string, format func(uint64) string) string {
	best, bestDir := uint64(math.MaxUint64), ""
	for d := dir; len(d) > len(root) || d == dir; d = filepath.Dir(d) {
		for _, f := range files {
			if n, ok := readLimit(filepath.Join(d, f)); ok && n < best {
				best, bestDir = n, d
			}
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	switch bestDir {
	case "":
		return ""
	case dir:
		return "its " + what + " of " + format(best)
	default:
		return "the " + what + " of " + format(best) + " of its parent cgroup " + strings.TrimPrefix(bestDir, root)
	}
}

// readLimit reads a cgroup limit file; ok is false when it is missing or
// unlimited ("max", or v1's page-aligned maximum).
func readLimit(file string) (uint64, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n >= 1<<62 {
		return 0, false
	}
	return n, true
}

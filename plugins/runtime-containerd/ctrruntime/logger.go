package ctrruntime

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/kigumi/kigumi/core/logfile"
)

// LogCommand is the first argument that makes an executable embedding this
// runtime act as a container's logging process: it must then call LogMain.
const LogCommand = "__containerd-log"

// The files of an instance's run dir.
const (
	stdoutFile  = logfile.Stdout
	stderrFile  = logfile.Stderr
	specFile    = "config.json"
	stoppedFile = "stopped"
)

// maxLogBytes caps each output stream of an instance, so that no workload
// fills the host's disk with output.
const maxLogBytes = 8 << 20

// logLimitNote ends a log that reached maxLogBytes.
const logLimitNote = "\n[kigumi: this instance reached its log limit; further output is dropped]\n"

// LogMain is a container's logging process, started by the containerd
// shim with the container's stdout and stderr as fds 3 and 4 and a pipe to
// close once ready as fd 5. args holds the run dir. It copies each stream
// into its file in the run dir, up to maxLogBytes, and drains the rest.
func LogMain(args []string) int {
	if len(args) != 1 || !filepath.IsAbs(args[0]) {
		fmt.Fprintln(os.Stderr, "usage: "+LogCommand+" RUNDIR")
		return 2
	}
	dir := args[0]
	var wg sync.WaitGroup
	for fd, name := range map[uintptr]string{3: stdoutFile, 4: stderrFile} {
		out, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		in := os.NewFile(fd, name)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer out.Close()
			copyCapped(out, in, maxLogBytes)
		}()
	}
	// Ready: the shim waits for this pipe to close.
	os.NewFile(5, "ready").Close()
	wg.Wait()
	return 0
}

// copyCapped copies r into w: the first limit bytes, then a note, and
// drains the rest. A file that already holds output (a restarted logger)
// counts against the limit.
func copyCapped(w *os.File, r io.Reader, limit int64) {
	if fi, err := w.Stat(); err == nil {
		limit -= fi.Size()
	}
	if limit > 0 {
		n, _ := io.CopyN(w, r, limit)
		if n < limit {
			return
		}
	}
	_, _ = io.WriteString(w, logLimitNote)
	_, _ = io.Copy(io.Discard, r)
}

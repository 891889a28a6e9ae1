// Package logfile streams an instance's captured output from the files a
// runtime keeps in the instance's run directory (stdout.log, stderr.log),
// as the runtimes' Logs calls do.
package logfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// The files of an instance's output, in its run directory.
const (
	Stdout = "stdout.log"
	Stderr = "stderr.log"
)

// Stream sends the output stream that opts name, from its file in runDir,
// to fn in chunks. With opts.Follow it polls for more every interval while
// alive reports true, then sends what was written last and returns. A
// missing file is sdk.CodeNotFound, naming instance.
func Stream(ctx context.Context, runDir string, instance sdk.Instance, opts sdk.LogOptions, interval time.Duration, alive func(context.Context) bool, fn func([]byte) error) error {
	name := Stdout
	switch opts.Stream {
	case sdk.Stdout, "":
	case sdk.Stderr:
		name = Stderr
	default:
		return sdk.Errorf(sdk.CodeInvalid, "unknown log stream %q", opts.Stream)
	}
	f, err := os.OpenFile(filepath.Join(runDir, name), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return sdk.Errorf(sdk.CodeNotFound, "instance %s: %w", instance, err)
	} else if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 32<<10)
	gone := !opts.Follow
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if err := fn(bytes.Clone(buf[:n])); err != nil {
				return err
			}
			continue
		}
		if err != nil && err != io.EOF {
			return fmt.Errorf("read log: %w", err)
		}
		if gone {
			return nil
		}
		// Read once more after the instance ended, to drain what it wrote last.
		if gone = !alive(ctx); gone {
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

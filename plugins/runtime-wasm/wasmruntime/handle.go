package wasmruntime

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kigumi/kigumi/core/logfile"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// handleVersion is the only handle version this runtime produces.
const handleVersion = 1

// The files the runtime keeps in an instance's RunDir.
const (
	stdoutFile = logfile.Stdout
	stderrFile = logfile.Stderr
	statusFile = "status.json"
	// sandboxLogFile is the sandbox process's own stderr: empty unless the
	// Go runtime of the sandbox dies with a message.
	sandboxLogFile = "sandbox.log"
)

// handleData is what a handle's Data holds.
type handleData struct {
	Pid int `json:"pid"`
	// StartTicks is the sandbox's start time (field 22 of /proc/<pid>/stat),
	// which tells the sandbox from a later process that reuses its pid.
	StartTicks uint64       `json:"start_ticks"`
	StartedAt  time.Time    `json:"started_at"`
	RunDir     string       `json:"run_dir"`
	Instance   sdk.Instance `json:"instance"`
	// Limits is what Inspect needs to tell whether a cgroup limit ended
	// the sandbox.
	Limits limitWatch `json:"limits,omitzero"`
}

func (d handleData) encode() (sdk.Handle, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return sdk.Handle{}, fmt.Errorf("encode handle: %w", err)
	}
	return sdk.Handle{Version: handleVersion, Data: b}, nil
}

func decodeHandle(h sdk.Handle) (handleData, error) {
	var d handleData
	if h.Version != handleVersion {
		return d, sdk.Errorf(sdk.CodeInvalid, "unknown handle version %d", h.Version)
	}
	if err := json.Unmarshal(h.Data, &d); err != nil {
		return d, sdk.Errorf(sdk.CodeInvalid, "decode handle: %w", err)
	}
	if d.Pid <= 0 || !filepath.IsAbs(d.RunDir) {
		return d, sdk.Errorf(sdk.CodeInvalid, "malformed handle")
	}
	return d, nil
}

// checkRunDir fails with CodeNotFound when the instance's RunDir is gone.
func (d handleData) checkRunDir() error {
	if _, err := os.Stat(d.RunDir); errors.Is(err, fs.ErrNotExist) {
		return sdk.Errorf(sdk.CodeNotFound, "instance %s: %w", d.Instance, err)
	} else if err != nil {
		return fmt.Errorf("instance %s: %w", d.Instance, err)
	}
	return nil
}

// alive reports whether the handle's sandbox is running: its pid exists,
// was started at the recorded time, and is not a zombie.
func (d handleData) alive() bool {
	state, start, err := procStat(d.Pid)
	return err == nil && start == d.StartTicks && state != 'Z'
}

// procStat returns a process's state letter and start time (fields 3 and
// 22 of /proc/<pid>/stat).
func procStat(pid int) (state byte, startTicks uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) may hold spaces and parentheses; the fields
	// after its closing parenthesis start with field 3.
	i := bytes.LastIndexByte(b, ')')
	fields := bytes.Fields(b[i+1:])
	if i < 0 || len(fields) < 20 || len(fields[0]) != 1 {
		return 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	startTicks, err = strconv.ParseUint(string(fields[19]), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat start time: %w", pid, err)
	}
	return fields[0][0], startTicks, nil
}

// exitStatus is what the status file holds once an instance has ended.
type exitStatus struct {
	ExitCode   int       `json:"exit_code"`
	FinishedAt time.Time `json:"finished_at"`
	Message    string    `json:"message,omitempty"`
	// Cause is how the module ended (sdk.CauseExit or sdk.CauseTrap, or
	// sdk.CauseLimit over its time budget), or
	// sdk.CauseSignal for a signal the sandbox recorded, or
	// sdk.CauseKilled when Stop killed it.
	Cause sdk.Cause `json:"cause,omitempty"`
	// Stopped is set when Stop killed the sandbox, with Signal.
	Stopped bool `json:"stopped,omitempty"`
	Signal  int  `json:"signal,omitempty"`
}

// readStatus returns the status recorded in dir; ok is false while none is.
func readStatus(dir string) (st exitStatus, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, statusFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return st, false, nil
	case err != nil:
		return st, false, fmt.Errorf("read status: %w", err)
	case len(b) == 0:
		return st, false, nil
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, false, fmt.Errorf("read status: %w", err)
	}
	return st, true, nil
}

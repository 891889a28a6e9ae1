package tenant

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// killUIDs kills every live process with a real, effective, saved or
// filesystem uid for which match reports true, and waits until none is left.
func killUIDs(ctx context.Context, match func(uid uint64) bool) error {
	for {
		pids, err := uidProcs(match)
		if err != nil || len(pids) == 0 {
			return err
		}
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("kill %d: %w", pid, err)
			}
		}
		if err := sleep(ctx, pollInterval); err != nil {
			return fmt.Errorf("kill user processes: %w", err)
		}
	}
}

// uidProcs returns the live (not zombie) processes with a uid match accepts.
func uidProcs(match func(uid uint64) bool) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 || pid == os.Getpid() {
			continue
		}
		status, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue // gone meanwhile
		}
		if procMatches(string(status), match) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// procMatches reports whether the /proc/PID/status text is of a live
// process with a uid match accepts.
func procMatches(status string, match func(uint64) bool) bool {
	live, hit := true, false
	for line := range strings.Lines(status) {
		key, val, _ := strings.Cut(strings.TrimSpace(line), ":")
		switch key {
		case "State":
			state := strings.TrimSpace(val)
			live = !strings.HasPrefix(state, "Z") && !strings.HasPrefix(state, "X")
		case "Uid":
			for _, f := range strings.Fields(val) {
				if uid, err := strconv.ParseUint(f, 10, 32); err == nil && match(uid) {
					hit = true
				}
			}
		}
	}
	return live && hit
}

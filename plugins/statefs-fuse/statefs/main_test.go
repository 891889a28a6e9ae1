package statefs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// envTry makes the test binary try to enter the directory it names
// (list it, then write a file into it) and print "ok" or the errno.
const envTry = "STATEFS_TEST_TRY"

// The test binary doubles as the helper that serves a FUSE state, and as
// a process of another uid trying a state (envTry).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == HelperCommand {
		os.Exit(HelperMain(os.Args[2:]))
	}
	if dir := os.Getenv(envTry); dir != "" {
		_, err := os.ReadDir(dir)
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, fmt.Sprintf("by-%d", os.Getuid())), []byte("x"), 0o600)
		}
		var errno syscall.Errno
		switch {
		case err == nil:
			fmt.Println("ok")
		case errors.As(err, &errno):
			fmt.Println(unix.ErrnoName(errno))
		default:
			fmt.Println(err)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

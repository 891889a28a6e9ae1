package statefs

import (
	"os"
	"testing"
)

// The test binary doubles as the helper that serves a FUSE state.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == HelperCommand {
		os.Exit(HelperMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

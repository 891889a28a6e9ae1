package pluginhost_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/sdk/v2"
)

func TestOldProtocolPlugin(t *testing.T) {
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "kigumi-runtime-foo"), "./testdata/v1plugin").CombinedOutput()
	if err != nil {
		t.Fatalf("build the v1 plugin: %v\n%s", err, out)
	}
	h := newHost(t, nil, pluginhost.WithPluginDir(dir))
	_, err = h.Runtime(context.Background(), "foo", pluginhost.HostScope)
	want := fmt.Sprintf("plugin kigumi-runtime-foo speaks plugin protocol 1; this kigumi speaks %d; "+
		"rebuild it against github.com/kigumi/kigumi/core/sdk/v2", sdk.ProtocolVersion)
	wantCode(t, err, sdk.CodeInvalid, want)
}

package statefs

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/conformance"
)

func TestConformance(t *testing.T) {
	conformance.StateFS(t, func(t *testing.T) (sdk.StateFS, *sdk.ProvisionRequest) {
		fs := New()
		if err := fs.Configure(context.Background(), sdk.ConfigureRequest{Settings: sdk.Config{}}); err != nil {
			t.Fatal(err)
		}
		return fs, provisionReq(filepath.Join(t.TempDir(), "state"))
	})
}

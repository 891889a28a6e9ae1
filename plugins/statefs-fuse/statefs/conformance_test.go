package statefs

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/conformance"
)

func TestConformance(t *testing.T) {
	for _, mode := range []string{modeDirectory, modeFUSE} {
		t.Run(mode, func(t *testing.T) {
			conformance.StateFS(t, func(t *testing.T) (sdk.StateFS, *sdk.ProvisionRequest) {
				fs := New()
				if err := fs.Configure(context.Background(), sdk.ConfigureRequest{Settings: sdk.Config{"mode": mode}}); err != nil {
					t.Fatal(err)
				}
				req := provisionReq(filepath.Join(t.TempDir(), "state"))
				// Some cases leave the state mounted.
				t.Cleanup(func() {
					if err := (handleData{Dir: req.Dir}).stop(context.Background()); err != nil {
						t.Error(err)
					}
				})
				return fs, req
			})
		})
	}
}

// Package sdktest connects plugin implementations to SDK clients over real
// gRPC inside a test process, so a plugin's tests exercise the same wire
// protocol as a host does.
package sdktest

import (
	"testing"

	"github.com/hashicorp/go-plugin"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// Runtime returns an sdk.Runtime that calls impl over in-process gRPC. The
// connection is closed when the test ends.
func Runtime(t testing.TB, impl sdk.Runtime) sdk.Runtime {
	t.Helper()
	return dispense[sdk.Runtime](t, sdk.KindRuntime, &sdk.RuntimePlugin{Impl: impl})
}

// StateFS returns an sdk.StateFS that calls impl over in-process gRPC. The
// connection is closed when the test ends.
func StateFS(t testing.TB, impl sdk.StateFS) sdk.StateFS {
	t.Helper()
	return dispense[sdk.StateFS](t, sdk.KindStateFS, &sdk.StateFSPlugin{Impl: impl})
}

// Ledger returns an sdk.Ledger that calls impl over in-process gRPC. The
// connection is closed when the test ends.
func Ledger(t testing.TB, impl sdk.Ledger) sdk.Ledger {
	t.Helper()
	return dispense[sdk.Ledger](t, sdk.KindLedger, &sdk.LedgerPlugin{Impl: impl})
}

func dispense[T any](t testing.TB, kind sdk.Kind, p plugin.Plugin) T {
	t.Helper()
	client, server := plugin.TestPluginGRPCConn(t, false, plugin.PluginSet{string(kind): p})
	t.Cleanup(func() {
		// Stopping the server first keeps the client's shutdown request
		// from stopping it a second time, concurrently.
		server.Stop()
		_ = client.Close()
	})
	raw, err := client.Dispense(string(kind))
	if err != nil {
		t.Fatalf("sdktest: dispense %s: %v", kind, err)
	}
	return raw.(T)
}

package conformance_test

import (
	"context"
	"sync"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/conformance"
)

// memFS is a StateFS that keeps states in memory and declares no optional
// feature, so the suite checks that its optional calls are unsupported.
type memFS struct {
	mu     sync.Mutex
	states map[string]bool
}

func (m *memFS) Info(context.Context) (sdk.Info, error) {
	return sdk.Info{Name: "mem", Kind: sdk.KindStateFS}, nil
}
func (m *memFS) Configure(context.Context, sdk.ConfigureRequest) error { return nil }
func (m *memFS) Provision(_ context.Context, req *sdk.ProvisionRequest) (sdk.Handle, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states[req.Dir] = true
	return sdk.Handle{Version: 1, Data: []byte(req.Dir)}, nil
}
func (m *memFS) check(h sdk.Handle) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case h.Version != 1:
		return sdk.Errorf(sdk.CodeInvalid, "unknown handle version %d", h.Version)
	case !m.states[string(h.Data)]:
		return sdk.Errorf(sdk.CodeNotFound, "no state %s", h.Data)
	}
	return nil
}
func (m *memFS) Mount(_ context.Context, h sdk.Handle) (sdk.Mount, error) {
	return sdk.Mount{Source: string(h.Data), Type: sdk.MountDir}, m.check(h)
}
func (m *memFS) Unmount(context.Context, sdk.Handle) error { return nil }
func (m *memFS) Hash(_ context.Context, h sdk.Handle) ([]byte, error) {
	return []byte{1}, m.check(h)
}
func (m *memFS) Usage(context.Context, sdk.Handle) (sdk.Usage, error) {
	return sdk.Usage{}, sdk.ErrUnsupported
}
func (m *memFS) Checkpoint(context.Context, sdk.Handle, string) (sdk.Checkpoint, error) {
	return sdk.Checkpoint{}, sdk.ErrUnsupported
}
func (m *memFS) Checkpoints(context.Context, sdk.Handle) ([]sdk.Checkpoint, error) {
	return nil, sdk.ErrUnsupported
}
func (m *memFS) Rollback(context.Context, sdk.Handle, string) error { return sdk.ErrUnsupported }
func (m *memFS) Recover(_ context.Context, h sdk.Handle) (sdk.Handle, error) {
	return h, m.check(h)
}
func (m *memFS) Deprovision(_ context.Context, h sdk.Handle) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.states, string(h.Data))
	return nil
}

func TestStateFSSuiteWithoutFeatures(t *testing.T) {
	conformance.StateFS(t, func(t *testing.T) (sdk.StateFS, *sdk.ProvisionRequest) {
		return &memFS{states: map[string]bool{}}, &sdk.ProvisionRequest{Dir: t.Name()}
	})
}

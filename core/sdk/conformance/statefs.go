// Package conformance holds test suites that check a plugin against the
// SDK's contract, directly and over the plugin protocol. A plugin's tests
// call them with a factory; capabilities, not plugin names, decide which
// optional parts run.
package conformance

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/sdktest"
)

// StateFSFactory returns a configured StateFS for one subtest, and a
// request that provisions a fresh state with it.
type StateFSFactory func(t *testing.T) (sdk.StateFS, *sdk.ProvisionRequest)

// StateFS runs the StateFS suite against the implementations newFS makes,
// called directly and through sdktest's in-process gRPC.
func StateFS(t *testing.T, newFS StateFSFactory) {
	t.Helper()
	for _, via := range []struct {
		name string
		wrap func(*testing.T, sdk.StateFS) sdk.StateFS
	}{
		{"direct", func(_ *testing.T, fs sdk.StateFS) sdk.StateFS { return fs }},
		{"grpc", func(t *testing.T, fs sdk.StateFS) sdk.StateFS { return sdktest.StateFS(t, fs) }},
	} {
		t.Run(via.name, func(t *testing.T) {
			for _, tc := range stateFSCases {
				t.Run(tc.name, func(t *testing.T) {
					fs, req := newFS(t)
					fs = via.wrap(t, fs)
					info, err := fs.Info(context.Background())
					if err != nil {
						t.Fatalf("Info: %v", err)
					}
					if info.Kind != sdk.KindStateFS {
						t.Fatalf("Info says kind %q", info.Kind)
					}
					h, err := fs.Provision(context.Background(), req)
					if err != nil {
						t.Fatalf("Provision: %v", err)
					}
					tc.run(t, fs, info.Capabilities, h)
				})
			}
		})
	}
}

var stateFSCases = []struct {
	name string
	run  func(t *testing.T, fs sdk.StateFS, caps sdk.Capabilities, h sdk.Handle)
}{
	{"mount-is-idempotent", func(t *testing.T, fs sdk.StateFS, _ sdk.Capabilities, h sdk.Handle) {
		ctx := context.Background()
		first, err := fs.Mount(ctx, h)
		if err != nil || first.Source == "" {
			t.Fatalf("Mount = %+v, %v; want a source", first, err)
		}
		again, err := fs.Mount(ctx, h)
		if err != nil || again.Source != first.Source || again.Type != first.Type {
			t.Errorf("second Mount = %+v, %v; want %+v", again, err, first)
		}
		for range 2 {
			if err := fs.Unmount(ctx, h); err != nil {
				t.Errorf("Unmount: %v", err)
			}
		}
	}},
	{"recover-is-idempotent", func(t *testing.T, fs sdk.StateFS, _ sdk.Capabilities, h sdk.Handle) {
		ctx := context.Background()
		for range 2 {
			got, err := fs.Recover(ctx, h)
			if err != nil {
				t.Fatalf("Recover: %v", err)
			}
			h = got
		}
		if _, err := fs.Mount(ctx, h); err != nil {
			t.Errorf("Mount of a recovered handle: %v", err)
		}
	}},
	{"deprovision-twice", func(t *testing.T, fs sdk.StateFS, _ sdk.Capabilities, h sdk.Handle) {
		ctx := context.Background()
		for range 2 {
			if err := fs.Deprovision(ctx, h); err != nil {
				t.Errorf("Deprovision: %v", err)
			}
		}
		if _, err := fs.Recover(ctx, h); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("Recover after Deprovision = %v, want not found", err)
		}
	}},
	{"hash-is-stable", func(t *testing.T, fs sdk.StateFS, _ sdk.Capabilities, h sdk.Handle) {
		ctx := context.Background()
		a, err := fs.Hash(ctx, h)
		if err != nil || len(a) == 0 {
			t.Fatalf("Hash = %x, %v", a, err)
		}
		if b, err := fs.Hash(ctx, h); err != nil || !bytes.Equal(a, b) {
			t.Errorf("second Hash = %x, %v; want %x", b, err, a)
		}
	}},
	{"bad-handle", func(t *testing.T, fs sdk.StateFS, _ sdk.Capabilities, _ sdk.Handle) {
		bad := sdk.Handle{Version: 1 << 30, Data: []byte("not a handle")}
		if _, err := fs.Mount(context.Background(), bad); !errors.Is(err, sdk.ErrInvalid) {
			t.Errorf("Mount of a foreign handle = %v, want invalid", err)
		}
	}},
	{"usage", func(t *testing.T, fs sdk.StateFS, caps sdk.Capabilities, h sdk.Handle) {
		u, err := fs.Usage(context.Background(), h)
		if !caps.Has(sdk.FeatureUsage) {
			if !errors.Is(err, sdk.ErrUnsupported) {
				t.Errorf("Usage without %s = %v, want unsupported", sdk.FeatureUsage, err)
			}
			return
		}
		if err != nil || u.Bytes < 0 || u.Inodes < 0 || (u.BytesLimit > 0 && u.Bytes > u.BytesLimit) {
			t.Errorf("Usage of fresh state = %+v, %v", u, err)
		}
	}},
	{"checkpoints", func(t *testing.T, fs sdk.StateFS, caps sdk.Capabilities, h sdk.Handle) {
		ctx := context.Background()
		if !caps.Has(sdk.FeatureCheckpoint) {
			if _, err := fs.Checkpoint(ctx, h, "c1"); !errors.Is(err, sdk.ErrUnsupported) {
				t.Errorf("Checkpoint without %s = %v, want unsupported", sdk.FeatureCheckpoint, err)
			}
			return
		}
		sum, err := fs.Hash(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		cp, err := fs.Checkpoint(ctx, h, "c1")
		if err != nil || cp.Name != "c1" || !bytes.Equal(cp.Root, sum) {
			t.Fatalf("Checkpoint = %+v, %v; want root %x", cp, err, sum)
		}
		if _, err := fs.Checkpoint(ctx, h, "c1"); !errors.Is(err, sdk.ErrInvalid) {
			t.Errorf("Checkpoint of a taken name = %v, want invalid", err)
		}
		list, err := fs.Checkpoints(ctx, h)
		if err != nil || len(list) != 1 || list[0].Name != "c1" {
			t.Errorf("Checkpoints = %+v, %v; want c1", list, err)
		}
		if err := fs.Rollback(ctx, h, "c1"); err != nil {
			t.Errorf("Rollback: %v", err)
		}
		if after, err := fs.Hash(ctx, h); err != nil || !bytes.Equal(after, sum) {
			t.Errorf("Hash after rollback = %x, %v; want %x", after, err, sum)
		}
		if err := fs.Rollback(ctx, h, "never-made"); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("Rollback to an unknown checkpoint = %v, want not found", err)
		}
	}},
	{"checkpoint-mount", func(t *testing.T, fs sdk.StateFS, caps sdk.Capabilities, h sdk.Handle) {
		ctx := context.Background()
		cm, ok := fs.(sdk.CheckpointMounter)
		if !caps.Has(sdk.FeatureCheckpointMount) {
			if ok {
				if _, err := cm.MountCheckpoint(ctx, h, "m1"); !errors.Is(err, sdk.ErrUnsupported) {
					t.Errorf("MountCheckpoint without %s = %v, want unsupported", sdk.FeatureCheckpointMount, err)
				}
			}
			return
		}
		if !ok {
			t.Fatalf("%s declared, but %T is no sdk.CheckpointMounter", sdk.FeatureCheckpointMount, fs)
		}
		if _, err := fs.Checkpoint(ctx, h, "m1"); err != nil {
			t.Fatal(err)
		}
		m, err := cm.MountCheckpoint(ctx, h, "m1")
		if err != nil || m.Source == "" || !m.ReadOnly {
			t.Fatalf("MountCheckpoint = %+v, %v; want a read-only mount", m, err)
		}
		t.Cleanup(func() { cm.UnmountCheckpoint(ctx, h, "m1") })
		if err := os.WriteFile(filepath.Join(m.Source, "written"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("writing into the mounted checkpoint: %v, want EROFS", err)
		}
		if list, err := fs.Checkpoints(ctx, h); err != nil || len(list) != 1 || list[0].Mount != m.Source {
			t.Errorf("Checkpoints = %+v, %v; want m1 mounted at %s", list, err, m.Source)
		}
		if _, err := cm.MountCheckpoint(ctx, h, "never-made"); !errors.Is(err, sdk.ErrNotFound) {
			t.Errorf("MountCheckpoint of an unknown checkpoint = %v, want not found", err)
		}
		if err := cm.UnmountCheckpoint(ctx, h, "m1"); err != nil {
			t.Fatal(err)
		}
		if list, err := fs.Checkpoints(ctx, h); err != nil || len(list) != 1 || list[0].Mount != "" {
			t.Errorf("Checkpoints after UnmountCheckpoint = %+v, %v", list, err)
		}
	}},
}

package sdktest_test

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/sdk/v2/sdktest"
)

// testProgress are the reports progressRuntime's Start makes.
var testProgress = []sdk.Progress{
	{Step: "pulling", Subject: "registry.local/web:1", Parts: 3, Unit: "layers", BytesTotal: 2 << 20},
	{Step: "pulling", Subject: "registry.local/web:1", PartsDone: 2, Parts: 3, Unit: "layers", BytesDone: 1 << 20, BytesTotal: 2 << 20},
	{Step: "pulling", Subject: "registry.local/web:1", PartsDone: 3, Parts: 3, Unit: "layers", BytesDone: 2 << 20, BytesTotal: 2 << 20},
}

// progressRuntime is a fakeRuntime whose Start reports testProgress, then
// fails with err if it is set.
type progressRuntime struct {
	fakeRuntime
	err error
}

func (f *progressRuntime) Start(ctx context.Context, req *sdk.StartRequest) (sdk.Handle, error) {
	for _, p := range testProgress {
		sdk.ReportProgress(ctx, p)
	}
	if f.err != nil {
		return sdk.Handle{}, f.err
	}
	return f.fakeRuntime.Start(ctx, req)
}

// TestStartProgress: a Start's progress crosses the plugin boundary when
// the host asks for it, in order and before the handle; a runtime that
// reports none, and a host that asks for none, start as before; a failed
// Start keeps its typed error.
func TestStartProgress(t *testing.T) {
	invalid := sdk.InvalidAttribute("image", "no such image")
	tests := []struct {
		name    string
		impl    sdk.Runtime
		sink    bool
		want    []sdk.Progress
		wantErr error
	}{
		{"reported", &progressRuntime{}, true, testProgress, nil},
		{"not asked for", &progressRuntime{}, false, nil, nil},
		{"runtime without the feature", &fakeRuntime{}, true, nil, nil},
		{"failed start", &progressRuntime{err: invalid}, true, testProgress, invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt := sdktest.Runtime(t, tt.impl)
			ctx := context.Background()
			var got []sdk.Progress
			if tt.sink {
				ctx = sdk.WithProgress(ctx, func(p sdk.Progress) { got = append(got, p) })
			}
			h, err := rt.Start(ctx, &testStart)
			if tt.wantErr != nil {
				var e *sdk.Error
				if !errors.As(err, &e) || e.Code != sdk.CodeInvalid || e.Attribute != "image" {
					t.Fatalf("Start = %v, want %v", err, tt.wantErr)
				}
			} else if err != nil || !reflect.DeepEqual(h, testHandle) {
				t.Fatalf("Start = %v, %v; want %v", h, err, testHandle)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("progress = %+v, want %+v", got, tt.want)
			}
		})
	}
}

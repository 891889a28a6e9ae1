package sdk

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestFromStatusWithoutDetail(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	own := &Error{Code: CodeUnavailable, Message: `plugin runtime "wasm" exited: exit status 3`}
	tests := []struct {
		name     string
		ctx      context.Context
		err      error
		wantIs   error
		contains string
	}{
		{"unavailable", context.Background(), status.Error(codes.Unavailable, "error reading from server: EOF"), ErrUnavailable, "plugin exited or is unreachable: error reading from server: EOF"},
		{"connection-closing", context.Background(), status.Error(codes.Canceled, "grpc: the client connection is closing"), ErrUnavailable, "plugin exited or is unreachable"},
		{"eof", context.Background(), io.ErrUnexpectedEOF, ErrUnavailable, "plugin exited or is unreachable: unexpected EOF"},
		{"deadline", context.Background(), status.Error(codes.DeadlineExceeded, "deadline"), context.DeadlineExceeded, "deadline exceeded"},
		{"unimplemented", context.Background(), status.Error(codes.Unimplemented, "unknown method Usage"), ErrUnsupported, "does not implement this call: unknown method Usage"},
		{"not-a-status", context.Background(), errors.New("boom"), ErrInternal, "boom"},
		{"caller-cancelled", cancelled, status.Error(codes.Canceled, "context canceled"), context.Canceled, "context canceled"},
		{"interceptor-error", context.Background(), own, own, own.Message},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := fromStatus(tt.ctx, tt.err)
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("fromStatus = %v (%T), want errors.Is %v", err, err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("fromStatus = %q, want it to contain %q", err, tt.contains)
			}
		})
	}
}

func TestStoppedPluginIsUnavailable(t *testing.T) {
	client, server := plugin.TestPluginGRPCConn(t, false, PluginSets()[ProtocolVersion])
	raw, err := client.Dispense(string(KindStateFS))
	if err != nil {
		t.Fatal(err)
	}
	server.Stop()
	t.Cleanup(func() { _ = client.Close() })
	_, err = raw.(StateFS).Mount(context.Background(), Handle{})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "plugin exited or is unreachable") {
		t.Errorf("call to a stopped plugin = %v, want an unavailable error saying so", err)
	}
}

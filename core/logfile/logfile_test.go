package logfile

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

func TestStream(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{Stdout: "out", Stderr: "err"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	inst := sdk.Instance{Tenant: "t", Name: "i"}
	dead := func(context.Context) bool { return false }
	tests := []struct {
		name    string
		dir     string
		opts    sdk.LogOptions
		want    string
		wantErr error
	}{
		{"stdout by default", dir, sdk.LogOptions{}, "out", nil},
		{"stderr", dir, sdk.LogOptions{Stream: sdk.Stderr}, "err", nil},
		{"follow of an ended instance returns", dir, sdk.LogOptions{Follow: true}, "out", nil},
		{"unknown stream", dir, sdk.LogOptions{Stream: "stdin"}, "", sdk.ErrInvalid},
		{"no log file", t.TempDir(), sdk.LogOptions{}, "", sdk.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []byte
			err := Stream(context.Background(), tt.dir, inst, tt.opts, time.Millisecond, dead, func(b []byte) error {
				got = append(got, b...)
				return nil
			})
			if !errors.Is(err, tt.wantErr) || string(got) != tt.want {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestStreamFollowDrains checks that Follow sends what is written while the
// instance runs and what it wrote last, after it ended.
func TestStreamFollowDrains(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, Stdout)
	if err := os.WriteFile(path, []byte("a"), 0o600); err != nil {
		t.Fatal(err)
	}
	var polls atomic.Int32
	alive := func(context.Context) bool {
		switch polls.Add(1) {
		case 1:
			appendFile(t, path, "b")
			return true
		case 2:
			appendFile(t, path, "c") // written just before the end
			return false
		}
		return false
	}
	var got []byte
	err := Stream(context.Background(), dir, sdk.Instance{Tenant: "t", Name: "i"}, sdk.LogOptions{Follow: true}, time.Millisecond, alive, func(b []byte) error {
		got = append(got, b...)
		return nil
	})
	if err != nil || string(got) != "abc" {
		t.Fatalf("got %q, %v; want abc", got, err)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

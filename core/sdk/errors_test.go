package sdk

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"cancelled", fmt.Errorf("start: %w", context.Canceled), false},
		{"deadline", context.DeadlineExceeded, true},
		{"plain", errors.New("disk on fire"), true},
		{"invalid", InvalidAttribute("memory", "too small"), false},
		{"wrapped-invalid", fmt.Errorf("start: %w", ErrInvalid), false},
		{"not-found", Errorf(CodeNotFound, "gone"), false},
		{"unsupported", Errorf(CodeUnsupported, "no checkpoints"), false},
		{"transient-invalid", &Error{Code: CodeInvalid, Attribute: "module", Message: "not yet there", Transient: true}, true},
		{"unavailable", &Error{Code: CodeUnavailable, Message: "plugin exited"}, true},
		{"internal", &Error{Code: CodeInternal, Message: "bug"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Retryable(tt.err); got != tt.want {
				t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestTransientIsNoSentinel(t *testing.T) {
	err := &Error{Code: CodeInvalid, Message: "x"}
	if errors.Is(err, &Error{Code: CodeInvalid, Transient: true}) {
		t.Error("a transient template matched as the invalid sentinel")
	}
	if !errors.Is(err, ErrInvalid) {
		t.Error("an invalid error is not ErrInvalid")
	}
}

func TestCapabilitiesAndPermissions(t *testing.T) {
	c := Capabilities{
		Features:    []string{FeatureCheckpoint},
		Permissions: []PermissionSpec{{Name: PermClock}, {Name: "net", Params: []PermissionParam{{Name: "host"}}}},
	}
	ps := Permissions{{Name: PermClock}, {Name: "net", Params: map[string]string{"host": "a"}}}
	tests := []struct {
		name      string
		got, want bool
	}{
		{"has-feature", c.Has(FeatureCheckpoint), true},
		{"lacks-feature", c.Has(FeatureUsage), false},
		{"declares", func() bool { p, ok := c.Permission("net"); return ok && p.Params[0].Name == "host" }(), true},
		{"does-not-declare", func() bool { _, ok := c.Permission("random"); return ok }(), false},
		{"granted", ps.Has(PermClock), true},
		{"not-granted", ps.Has(PermRandom), false},
		{"params", func() bool { p, ok := ps.Get("net"); return ok && p.Params["host"] == "a" }(), true},
		{"names", fmt.Sprint(ps.Names()) == "[clock net]", true},
		{"string", fmt.Sprint(Permissions{{Name: "clock"}, {Name: "net", Params: map[string]string{"port": "1", "host": "a\"b"}}}) == `[clock net{host="a\"b", port="1"}]`, true},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

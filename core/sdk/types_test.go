package sdk

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckCheckpointName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"c1", true},
		{"before-upgrade_2.0", true},
		{"-dash", true},
		{strings.Repeat("a", 64), true},
		{"", false},
		{".hidden", false},
		{"..", false},
		{strings.Repeat("a", 65), false},
		{"a/b", false},
		{"a b", false},
		{"caf\xc3\xa9", false},
		{"nul\x00", false},
		{"new\nline", false},
	}
	for _, tt := range tests {
		err := CheckCheckpointName(tt.name)
		var e *Error
		switch {
		case tt.ok && err != nil:
			t.Errorf("CheckCheckpointName(%q) = %v, want nil", tt.name, err)
		case !tt.ok && (!errors.As(err, &e) || e.Code != CodeInvalid || e.Attribute != "name"):
			t.Errorf("CheckCheckpointName(%q) = %v, want invalid name", tt.name, err)
		}
	}
}

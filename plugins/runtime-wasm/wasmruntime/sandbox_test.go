package wasmruntime

import (
	"bytes"
	"strings"
	"testing"
)

func TestCappedWriter(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		left   int64
		want   string
	}{
		{"under the cap", []string{"ab", "cd"}, 10, "abcd"},
		{"exactly the cap", []string{"abcd"}, 4, "abcd" + "\n[kigumi"},
		{"over the cap in one write", []string{"abcdef"}, 4, "abcd\n[kigumi"},
		{"over the cap later", []string{"ab", "cd", "ef", "gh"}, 3, "abc\n[kigumi"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			w := &cappedWriter{w: &b, left: tt.left}
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", s, n, err)
				}
			}
			if !strings.HasPrefix(b.String(), tt.want) || strings.Count(b.String(), "[kigumi") > 1 {
				t.Errorf("wrote %q, want prefix %q and one notice at most", b.String(), tt.want)
			}
			if strings.Contains(tt.want, "[kigumi") != strings.Contains(b.String(), "[kigumi") {
				t.Errorf("notice presence wrong in %q", b.String())
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	long := strings.Repeat("é", maxMessage)
	tests := []struct {
		name, in, want string
	}{
		{"plain", "wasm error: unreachable", "wasm error: unreachable"},
		{"lines", "wasm error: unreachable\nwasm stack trace:\n\t.$0()\n\n", "wasm error: unreachable; wasm stack trace:; .$0()"},
		{"terminal escapes", "f\x1b[2J\x07()\r", `f\x1b[2J\a()`},
		{"invalid UTF-8", "a\xffb", "a\ufffdb"},
		{"too long", long, long[:maxMessage] + "..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := oneLine(tt.in); got != tt.want {
				t.Errorf("oneLine(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

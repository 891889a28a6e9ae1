package main

import (
	"bytes"
	"testing"
)

func TestEscapeWriter(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   string
	}{
		{"plain text", []string{"hello, wörld 日本\n\tnext\n"}, "hello, wörld 日本\n\tnext\n"},
		{"terminal title and clear", []string{"\x1b]0;pwned\x07\x1b[2J"}, `\x1b]0;pwned\x07\x1b[2J`},
		{"carriage return", []string{"ok\rfake"}, `ok\x0dfake`},
		{"delete and NUL", []string{"a\x7f\x00b"}, `a\x7f\x00b`},
		{"C1 CSI", []string{"a\u009b2Jb"}, `a\u009b2Jb`},
		{"bidi override", []string{"a\u202eb"}, `a\u202eb`},
		{"invalid UTF-8", []string{"a\xff\xfeb"}, `a\xff\xfeb`},
		{"backslash stays unambiguous", []string{`\x1b`}, `\\x1b`},
		{"rune split across writes", []string{"\xe6\x97", "\xa5\n"}, "日\n"},
		{"truncated rune at the end", []string{"a\xe6\x97"}, `a\xe6\x97`},
		{"escape split across writes", []string{"\x1b", "[2J"}, `\x1b[2J`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			w := &escapeWriter{w: &b}
			for _, c := range tt.chunks {
				if n, err := w.Write([]byte(c)); err != nil || n != len(c) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Errorf("got %q, want %q", b.String(), tt.want)
			}
		})
	}
}

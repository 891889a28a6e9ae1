package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kigumi/kigumi/core/events"
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

// TestLogEventsEscaped: the agent's event lines carry text from tenants
// (diagnostics of their specs, exit messages); none of it reaches the
// operator's terminal raw.
func TestLogEventsEscaped(t *testing.T) {
	var out bytes.Buffer
	bus := events.NewBus()
	sub := bus.Subscribe(8)
	bus.Publish(events.Event{Type: events.TypeDiagnostics, Tenant: "t\x1b[2J",
		Diagnostics: []events.Diagnostic{{Summary: "Unsupported argument \x1b]0;pwned\x07", Detail: "x\ry"}}})
	bus.Publish(events.Event{Type: events.TypeInstanceExited, Tenant: "t", Instance: "i", Message: "trap: \x1b[31mred"})
	bus.Close()
	logEvents(&cli{stdout: &out}, sub)
	got := out.String()
	if strings.ContainsAny(got, "\x1b\x07\r") {
		t.Errorf("raw control bytes in the event lines:\n%q", got)
	}
	for _, want := range []string{`t\x1b[2J`, `Unsupported argument \x1b]0;pwned\x07`, `x\x0dy`, `trap: \x1b[31mred`} {
		if !strings.Contains(got, want) {
			t.Errorf("event lines lack %s:\n%s", want, got)
		}
	}
}

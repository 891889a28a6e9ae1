package main

import (
	"fmt"
	"io"
	"unicode"
	"unicode/utf8"
)

// escapeWriter writes what a tenant's instance printed so that it cannot
// control the operator's terminal: printable text, newlines and tabs pass;
// other control characters (ESC, CR, C0, DEL, C1), invisible formatting
// characters and invalid UTF-8 are written as Go-style escapes. A UTF-8
// sequence split across writes is held until it completes.
type escapeWriter struct {
	w       io.Writer
	pending []byte
}

// Write implements io.Writer.
func (e *escapeWriter) Write(p []byte) (int, error) {
	n := len(p)
	data := append(e.pending, p...)
	e.pending = nil
	out := make([]byte, 0, len(data))
	for len(data) > 0 {
		r, size := utf8.DecodeRune(data)
		if r == utf8.RuneError && size <= 1 {
			if !utf8.FullRune(data) {
				e.pending = append([]byte(nil), data...)
				break
			}
			out = fmt.Appendf(out, `\x%02x`, data[0])
			data = data[1:]
			continue
		}
		switch {
		case r == '\n' || r == '\t':
			out = append(out, byte(r))
		case r == '\\':
			out = append(out, '\\', '\\')
		case r < 0x80 && (r < 0x20 || r == 0x7f):
			out = fmt.Appendf(out, `\x%02x`, r)
		case !unicode.IsPrint(r) && r != ' ':
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			out = append(out, data[:size]...)
		}
		data = data[size:]
	}
	if _, err := e.w.Write(out); err != nil {
		return 0, err
	}
	return n, nil
}

// Close writes, escaped, an incomplete UTF-8 sequence left at the end.
func (e *escapeWriter) Close() error {
	var out []byte
	for _, b := range e.pending {
		out = fmt.Appendf(out, `\x%02x`, b)
	}
	e.pending = nil
	_, err := e.w.Write(out)
	return err
}

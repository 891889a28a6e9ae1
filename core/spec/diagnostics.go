package spec

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/hcl/v2"
)

// MaxPrintedDiagnostics is how many diagnostics WriteDiagnostics prints;
// it counts the rest.
const MaxPrintedDiagnostics = 20

// maxLineWidth is the longest line WriteDiagnostics prints, in bytes; a
// longer one, such as a snippet of a file written on one line, is cut.
const maxLineWidth = 500

// WriteDiagnostics renders diags to w, each headed by its "file:line,col"
// location and showing a source snippet from files (see Parser.Files).
// color enables terminal colors. It prints the first MaxPrintedDiagnostics
// and then how many more errors and warnings there are, and cuts lines
// longer than maxLineWidth. No control
// character of a spec reaches w: they are replaced, in summaries, details,
// file names and snippets, by printable characters of the same width and
// length, so that columns stay right.
func WriteDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics, color bool) error {
	w = &lineCutter{w: w, color: color}
	clean := map[string]*hcl.File{}
	cleanName := func(r *hcl.Range) *hcl.Range {
		if r == nil {
			return nil
		}
		c := *r
		c.Filename = sanitize(r.Filename, false)
		if _, done := clean[c.Filename]; !done {
			if f := files[r.Filename]; f != nil {
				clean[c.Filename] = &hcl.File{Body: hcl.EmptyBody(), Bytes: []byte(sanitize(string(f.Bytes), true))}
			}
		}
		return &c
	}
	tw := hcl.NewDiagnosticTextWriter(w, clean, 0, color)
	for i, d := range diags {
		if i == MaxPrintedDiagnostics {
			return writeRest(w, diags[i:])
		}
		c := &hcl.Diagnostic{
			Severity: d.Severity,
			Summary:  sanitize(d.Summary, false),
			Detail:   sanitize(d.Detail, true),
			Subject:  cleanName(d.Subject),
			Context:  cleanName(d.Context),
		}
		if c.Subject != nil {
			if _, err := fmt.Fprintf(w, "%s: ", at(*c.Subject)); err != nil {
				return fmt.Errorf("write diagnostics: %w", err)
			}
		}
		if err := tw.WriteDiagnostic(c); err != nil {
			return fmt.Errorf("write diagnostics: %w", err)
		}
	}
	return nil
}

// lineCutter writes to w all but the part of each line beyond
// maxLineWidth, which it replaces by an ellipsis (and, with color, a reset
// of the terminal's attributes, in case the cut removed one).
type lineCutter struct {
	w     io.Writer
	color bool
	width int // of the line being written
}

func (c *lineCutter) Write(p []byte) (int, error) {
	out := make([]byte, 0, len(p))
	for _, b := range p {
		switch {
		case b == '\n':
			c.width = 0
		case c.width == maxLineWidth:
			c.width++
			out = append(out, "…"...)
			if c.color {
				out = append(out, "\x1b[0m"...)
			}
			continue
		case c.width > maxLineWidth:
			continue
		default:
			c.width++
		}
		out = append(out, b)
	}
	if _, err := c.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeRest writes how many errors and warnings rest holds.
func writeRest(w io.Writer, rest hcl.Diagnostics) error {
	var errs, warns int
	for _, d := range rest {
		if d.Severity == hcl.DiagError {
			errs++
		} else {
			warns++
		}
	}
	var parts []string
	if errs > 0 {
		parts = append(parts, plural(errs, "more error"))
	}
	if warns > 0 {
		parts = append(parts, plural(warns, "more warning"))
	}
	if _, err := fmt.Fprintf(w, "... and %s, not shown.\n", strings.Join(parts, " and ")); err != nil {
		return fmt.Errorf("write diagnostics: %w", err)
	}
	return nil
}

// plural formats n things.
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}

// sanitize returns s with every control character and invalid UTF-8 byte
// replaced, keeping its length in bytes and its width: a C0 control, DEL or
// invalid byte becomes '?', a C1 control (two bytes) becomes '¿'. Tabs are
// kept, and newlines when lines is set.
func sanitize(s string, lines bool) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= 0x80 {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteByte('?')
		case r == '\t', r == '\n' && lines:
			b.WriteRune(r)
		case r < 0x20, r == 0x7f:
			b.WriteByte('?')
		case r >= 0x80 && r < 0xa0:
			b.WriteRune('¿') // two bytes, as the control was
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Package spec decodes Kigumi's HCL specs: the operator's host spec and the
// tenants' specs. Every problem is reported as an hcl.Diagnostic pointing at
// the offending source range; callers must not proceed when the returned
// diagnostics hold errors.
package spec

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// Parser loads spec files and keeps every file it parsed, by name, so that
// diagnostics can show source snippets. Its own methods always parse afresh,
// replacing a file of the same name; the embedded hclparse.Parser's methods
// instead return the file they parsed first under a name.
type Parser struct {
	*hclparse.Parser
}

// NewParser returns an empty Parser.
func NewParser() *Parser {
	return &Parser{Parser: hclparse.NewParser()}
}

// parse parses src as the HCL file filename, replacing any file of that
// name parsed before, so that a reload sees the current content.
func (p *Parser) parse(filename string, src []byte) (*hcl.File, hcl.Diagnostics) {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	p.AddFile(filename, f)
	return f, diags
}

// parseFile reads and parses the HCL file filename.
func (p *Parser) parseFile(filename string) (*hcl.File, hcl.Diagnostics) {
	src, err := os.ReadFile(filename)
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Failed to read file",
			Detail:   fmt.Sprintf("Cannot read %s: %v.", filename, err),
		}}
	}
	return p.parse(filename, src)
}

// WriteDiagnostics renders diags to w, each headed by its "file:line,col"
// location and showing a source snippet from files (see Parser.Files).
// color enables terminal colors.
func WriteDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics, color bool) error {
	tw := hcl.NewDiagnosticTextWriter(w, files, 0, color)
	for _, d := range diags {
		if d.Subject != nil {
			if _, err := fmt.Fprintf(w, "%s: ", at(*d.Subject)); err != nil {
				return fmt.Errorf("write diagnostics: %w", err)
			}
		}
		if err := tw.WriteDiagnostic(d); err != nil {
			return fmt.Errorf("write diagnostics: %w", err)
		}
	}
	return nil
}

// at formats the start of r as "file:line,col".
func at(r hcl.Range) string {
	return fmt.Sprintf("%s:%d,%d", r.Filename, r.Start.Line, r.Start.Column)
}

// sorted returns diags sorted by file and position, those without a subject
// first, for a stable, readable order.
func sorted(diags hcl.Diagnostics) hcl.Diagnostics {
	slices.SortStableFunc(diags, func(a, b *hcl.Diagnostic) int {
		switch {
		case a.Subject == nil || b.Subject == nil:
			return cmp.Compare(subjectRank(a), subjectRank(b))
		case a.Subject.Filename != b.Subject.Filename:
			return cmp.Compare(a.Subject.Filename, b.Subject.Filename)
		}
		return cmp.Compare(a.Subject.Start.Byte, b.Subject.Start.Byte)
	})
	return diags
}

// subjectRank is 1 for a diagnostic with a subject and 0 for one without.
func subjectRank(d *hcl.Diagnostic) int {
	if d.Subject == nil {
		return 0
	}
	return 1
}

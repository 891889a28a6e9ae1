// Package spec decodes Kigumi's HCL specs: the operator's host spec and the
// tenants' specs. Every problem is reported as an hcl.Diagnostic pointing at
// the offending source range; callers must not proceed when the returned
// diagnostics hold errors.
package spec

import (
	"cmp"
	"fmt"
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

// parse checks src, the HCL file filename, against the syntax limits and
// parses it, replacing any file of that name parsed before, so that a
// reload sees the current content.
func (p *Parser) parse(filename string, src []byte) (*hcl.File, hcl.Diagnostics) {
	f, kept, diags := parseSource(filename, src)
	p.AddFile(filename, kept)
	return f, diags
}

// parseSource checks src, the HCL file filename, against the syntax limits
// and parses it. It returns the parsed file (nil when src fails the syntax
// limits), the file to keep for rendering diagnostics, and the diagnostics.
// It touches no Parser, so files can be parsed in parallel.
func parseSource(filename string, src []byte) (f, kept *hcl.File, diags hcl.Diagnostics) {
	if diags := checkSyntax(filename, src); diags.HasErrors() {
		// Keep the bytes for the diagnostic's snippet; they are not parsed.
		return nil, &hcl.File{Body: hcl.EmptyBody(), Bytes: src}, diags
	}
	f, diags = hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	return f, f, diags
}

// ParseHCLFile reads and parses the HCL file filename as the host spec is:
// only a regular file within MaxFileSize, and within the syntax limits. It
// satisfies policy.FileParser.
func (p *Parser) ParseHCLFile(filename string) (*hcl.File, hcl.Diagnostics) {
	src, err := readSpecFile(filename, "")
	if err != nil {
		return nil, hcl.Diagnostics{readFailure(filename, err, "")}
	}
	return p.parse(filename, src)
}

// readFailure is the diagnostic for err, returned by readSpecFile for the
// file filename; it points at the file's start.
func readFailure(filename string, err error, root string) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Failed to read file",
		Detail:   readDetail(err, root),
		Subject:  &hcl.Range{Filename: filename, Start: hcl.InitialPos, End: hcl.InitialPos},
	}
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

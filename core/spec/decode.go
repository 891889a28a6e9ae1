package spec

import (
	"fmt"
	"math"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/dustin/go-humanize"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

// decoder decodes spec values, collecting diagnostics. Its methods return
// zero values for invalid input, having recorded why.
type decoder struct {
	diags hcl.Diagnostics
}

// errorAt records an error diagnostic about subject.
func (d *decoder) errorAt(subject hcl.Range, summary, format string, args ...any) {
	d.diags = append(d.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   fmt.Sprintf(format, args...),
		Subject:  subject.Ptr(),
	})
}

// invalid records that expr, the value of the argument name, is invalid.
func (d *decoder) invalid(expr hcl.Expression, name, format string, args ...any) {
	d.errorAt(expr.Range(), fmt.Sprintf("Invalid value for %q", name), format, args...)
}

// content decodes body against schema, and reports each of the required
// arguments that is absent at the block header def.
func (d *decoder) content(body hcl.Body, schema *hcl.BodySchema, def hcl.Range, required ...string) *hcl.BodyContent {
	c, diags := body.Content(schema)
	d.diags = append(d.diags, diags...)
	for _, name := range required {
		if c.Attributes[name] == nil {
			d.errorAt(def, "Missing required argument", "The argument %q is required, but no definition was found.", name)
		}
	}
	return c
}

// single returns the first block of type typ, reporting any further one.
// It returns nil if there is none.
func (d *decoder) single(blocks hcl.Blocks, typ string) *hcl.Block {
	var first *hcl.Block
	for _, b := range blocks {
		if b.Type != typ {
			continue
		}
		if first != nil {
			d.errorAt(b.DefRange, fmt.Sprintf("Duplicate %s block", typ), "Only one %s block is allowed; the first is at %s.", typ, at(first.DefRange))
			continue
		}
		first = b
	}
	return first
}

// name reports label, the name of a kind of thing at r, unless it matches re.
func (d *decoder) name(label string, r hcl.Range, kind string, re *regexp.Regexp, maxLen int) {
	if !re.MatchString(label) {
		d.errorAt(r, fmt.Sprintf("Invalid %s name", kind),
			"%q is not a valid %s name: a name starts with a lowercase letter, holds only lowercase letters, digits and dashes, and is at most %d characters long.",
			label, kind, maxLen)
	}
}

// value evaluates expr, the value of the argument name, as type ty.
// It returns cty.NilVal if it cannot.
func (d *decoder) value(expr hcl.Expression, name string, ty cty.Type) cty.Value {
	v, diags := expr.Value(nil)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return cty.NilVal
	}
	if v.IsNull() {
		d.invalid(expr, name, "The value must not be null.")
		return cty.NilVal
	}
	v, err := convert.Convert(v, ty)
	if err != nil {
		d.errorAt(expr.Range(), "Incorrect attribute value type", "Inappropriate value for attribute %q: %s.", name, err)
		return cty.NilVal
	}
	return v
}

// str decodes a string argument.
func (d *decoder) str(a *hcl.Attribute) string {
	v := d.value(a.Expr, a.Name, cty.String)
	if v == cty.NilVal {
		return ""
	}
	return v.AsString()
}

// bool decodes a bool argument.
func (d *decoder) bool(a *hcl.Attribute) bool {
	v := d.value(a.Expr, a.Name, cty.Bool)
	return v != cty.NilVal && v.True()
}

// whole decodes a whole-number argument in [min, max].
func (d *decoder) whole(a *hcl.Attribute, min, max int64) int64 {
	v := d.value(a.Expr, a.Name, cty.Number)
	if v == cty.NilVal {
		return 0
	}
	f := v.AsBigFloat()
	if !f.IsInt() {
		d.invalid(a.Expr, a.Name, "%s is not a whole number.", f.Text('g', -1))
		return 0
	}
	n, acc := f.Int64()
	if acc != big.Exact || n < min || n > max {
		if max == math.MaxInt64 {
			d.invalid(a.Expr, a.Name, "%s is out of range: the value must be at least %d and fit in 64 bits.", f.Text('g', -1), min)
		} else {
			d.invalid(a.Expr, a.Name, "%s is out of range: the value must be between %d and %d.", f.Text('g', -1), min, max)
		}
		return 0
	}
	return n
}

// size decodes a size argument of at least min bytes: a string such as
// "64MiB", or a whole number of bytes.
func (d *decoder) size(a *hcl.Attribute, min int64) int64 {
	v, diags := a.Expr.Value(nil)
	d.diags = append(d.diags, diags...)
	if diags.HasErrors() {
		return 0
	}
	var n int64
	switch {
	case v.IsNull():
		d.invalid(a.Expr, a.Name, "The value must not be null.")
		return 0
	case v.Type() == cty.String:
		var err error
		if n, err = parseSize(v.AsString()); err != nil {
			d.invalid(a.Expr, a.Name, "%s.", err)
			return 0
		}
	case v.Type() == cty.Number:
		f := v.AsBigFloat()
		if !f.IsInt() {
			d.invalid(a.Expr, a.Name, "%s is not a whole number of bytes.", f.Text('g', -1))
			return 0
		}
		var acc big.Accuracy
		if n, acc = f.Int64(); acc != big.Exact {
			d.invalid(a.Expr, a.Name, "%s is out of range: a size must fit in 64 bits.", f.Text('g', -1))
			return 0
		}
	default:
		d.invalid(a.Expr, a.Name, "A size is a string such as \"64MiB\" or a whole number of bytes, not a %s.", v.Type().FriendlyName())
		return 0
	}
	switch {
	case n <= 0 && min > 0:
		d.invalid(a.Expr, a.Name, "The size must be greater than zero.")
	case n < 0:
		d.invalid(a.Expr, a.Name, "The size must not be negative.")
	case n < min:
		d.invalid(a.Expr, a.Name, "The size must be at least %s.", humanize.IBytes(uint64(min)))
	default:
		return n
	}
	return 0
}

// parseSize parses a size such as "64MiB", "1.5GB" or "-1KiB".
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	neg := strings.HasPrefix(t, "-")
	if neg {
		t = t[1:]
	}
	if t == "" || !strings.ContainsRune("0123456789.", rune(t[0])) {
		return 0, fmt.Errorf("%q is not a size: write a number and a unit, such as \"64MiB\"", s)
	}
	u, err := humanize.ParseBytes(t)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size (%v): use a unit such as \"KiB\", \"MiB\" or \"GiB\"", s, err)
	}
	if u > math.MaxInt64 {
		return 0, fmt.Errorf("%q is out of range: a size must be less than 8EiB", s)
	}
	if neg {
		return -int64(u), nil
	}
	return int64(u), nil
}

// milliCPU decodes a CPU argument, a positive number of cores, into
// thousandths of a core, rounded to the nearest.
func (d *decoder) milliCPU(a *hcl.Attribute) int64 {
	v := d.value(a.Expr, a.Name, cty.Number)
	if v == cty.NilVal {
		return 0
	}
	f := v.AsBigFloat()
	m := new(big.Float).Mul(f, big.NewFloat(1000))
	m.Add(m, big.NewFloat(0.5))
	switch {
	case f.Sign() <= 0:
		d.invalid(a.Expr, a.Name, "The number of cores must be greater than zero.")
	case m.Cmp(new(big.Float).SetInt64(math.MaxInt64)) > 0:
		d.invalid(a.Expr, a.Name, "%s cores is out of range.", f.Text('g', -1))
	case m.Cmp(big.NewFloat(1)) < 0:
		d.invalid(a.Expr, a.Name, "The number of cores must be at least 0.001.")
	default:
		n, _ := m.Int64()
		return n
	}
	return 0
}

// strings decodes a list(string) argument written as a list, returning
// each element with its range.
func (d *decoder) strings(a *hcl.Attribute) ([]string, []hcl.Range) {
	exprs, diags := hcl.ExprList(a.Expr)
	if diags.HasErrors() {
		d.invalid(a.Expr, a.Name, "A list such as [\"a\", \"b\"] is required.")
	}
	list := make([]string, 0, len(exprs))
	ranges := make([]hcl.Range, 0, len(exprs))
	for _, e := range exprs {
		v := d.value(e, a.Name, cty.String)
		if v == cty.NilVal {
			continue
		}
		list = append(list, v.AsString())
		ranges = append(ranges, e.Range())
	}
	return list, ranges
}

// path decodes a path argument, resolved against dir.
func (d *decoder) path(a *hcl.Attribute, dir string) string {
	p := d.str(a)
	if p == "" {
		d.invalid(a.Expr, a.Name, "The path must not be empty.")
		return ""
	}
	return resolve(dir, p)
}

// resolve returns p, made absolute against dir when relative.
func resolve(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

// hclFiles lists the *.hcl files in dir, sorted, leaving out hidden ones.
func hclFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") || filepath.Ext(e.Name()) != ".hcl" {
			continue
		}
		files = append(files, filepath.Join(dir, e.Name()))
	}
	return files, nil
}

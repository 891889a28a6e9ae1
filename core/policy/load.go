// Package policy loads CEL policies from HCL files and evaluates them against
// a host and its tenants' desired instances. policies/README.md describes the
// policy format for reviewers.
package policy

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// Scope says what a policy is evaluated for, and so which variables it sees.
type Scope string

// The scopes.
const (
	// ScopeHost policies run once per evaluation and see host.
	ScopeHost Scope = "host"
	// ScopeTenant policies run once per tenant and see host and tenant.
	ScopeTenant Scope = "tenant"
	// ScopeInstance policies run once per instance and see host, tenant and
	// instance.
	ScopeInstance Scope = "instance"
)

// Enforcement says what a policy's false rule does.
type Enforcement string

// The enforcements.
const (
	// EnforcementDeny refuses the spec.
	EnforcementDeny Enforcement = "deny"
	// EnforcementWarn reports a warning and lets the spec through.
	EnforcementWarn Enforcement = "warn"
)

// Limits on evaluation. Every CEL expression is evaluated with costLimit;
// at load time its cost is estimated assuming strings of at most
// estimatedStringSize characters and lists and maps of at most
// estimatedCollectionSize entries, and an estimate over costLimit is refused.
// cost.go holds the cost model.
const (
	costLimit               = 1_000_000
	interruptCheckFrequency = 100
	estimatedStringSize     = 4096
	estimatedCollectionSize = 256
)

// FileParser parses an HCL file. *hclparse.Parser satisfies it; parsing
// through the caller's parser lets its diagnostic writer show snippets.
type FileParser interface {
	ParseHCLFile(filename string) (*hcl.File, hcl.Diagnostics)
}

// Set is a set of compiled policies, safe for concurrent use.
type Set struct {
	policies []*policy
	adapter  types.Adapter
}

// policy is one compiled policy.
type policy struct {
	name        string
	scope       Scope
	enforcement Enforcement
	match       cel.Program // nil: always applies
	rule        cel.Program
	message     string
	messageExpr cel.Program // nil: message is used
	// subjects are the instance attributes the rule reads, as keys of
	// spec.Instance.Ranges, in the order they appear.
	subjects  []string
	declRange hcl.Range
}

var (
	fileSchema = &hcl.BodySchema{
		Blocks: []hcl.BlockHeaderSchema{{Type: "policy", LabelNames: []string{"name"}}},
	}
	policySchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "description"},
			{Name: "scope"},
			{Name: "enforcement", Required: true},
			{Name: "match"},
			{Name: "rule", Required: true},
			{Name: "message"},
			{Name: "message_expr"},
		},
	}
	nameRE = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
)

// Load parses and compiles the policies in files. Policy names must be
// unique across all files. Every problem is reported as a diagnostic on the
// offending attribute; the Set is nil if there are errors.
func Load(p FileParser, files []string) (*Set, hcl.Diagnostics) {
	envs, err := sharedEnvs()
	if err != nil {
		return nil, hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot set up the policy language",
			Detail:   err.Error(),
		}}
	}
	s := &Set{adapter: envs[ScopeHost].CELTypeAdapter()}
	var diags hcl.Diagnostics
	seen := map[string]hcl.Range{}
	for _, name := range files {
		f, ds := p.ParseHCLFile(name)
		diags = append(diags, ds...)
		if ds.HasErrors() {
			continue
		}
		content, ds := f.Body.Content(fileSchema)
		diags = append(diags, ds...)
		for _, b := range content.Blocks {
			pol, ds := decodePolicy(envs, f.Bytes, b)
			diags = append(diags, ds...)
			if pol == nil {
				continue
			}
			if first, dup := seen[pol.name]; dup {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Duplicate policy name",
					Detail:   fmt.Sprintf("A policy named %q is already defined at %s.", pol.name, first),
					Subject:  b.LabelRanges[0].Ptr(),
				})
				continue
			}
			seen[pol.name] = b.DefRange
			s.policies = append(s.policies, pol)
		}
	}
	if diags.HasErrors() {
		return nil, diags
	}
	return s, diags
}

// Len returns the number of policies in the set.
func (s *Set) Len() int { return len(s.policies) }

// Names returns the policies' names, in load order.
func (s *Set) Names() []string {
	names := make([]string, len(s.policies))
	for i, p := range s.policies {
		names[i] = p.name
	}
	return names
}

// sharedEnvs returns the CEL environments of the scopes, built once: they
// are immutable and safe for concurrent use, and building them costs more
// than compiling a typical policy file. Building them anew on every Load
// also ranged over cel-go's maps each time, in random order, which made
// the fuzzer see new coverage on most runs and spend its time minimizing.
var sharedEnvs = sync.OnceValues(newEnvs)

func newEnvs() (map[Scope]*cel.Env, error) {
	base, err := cel.NewEnv(
		ext.NativeTypes(reflect.TypeFor[host](), reflect.TypeFor[tenant](), reflect.TypeFor[instance](),
			ext.ParseStructTags(true)),
		ext.Strings(),
		ext.Sets(),
		cel.CrossTypeNumericComparisons(true),
		cel.Variable("host", cel.ObjectType("policy.host")),
	)
	if err != nil {
		return nil, fmt.Errorf("host scope: %w", err)
	}
	guarded, err := guards(base)
	if err != nil {
		return nil, fmt.Errorf("guard functions: %w", err)
	}
	if base, err = base.Extend(guarded...); err != nil {
		return nil, fmt.Errorf("guard functions: %w", err)
	}
	tenantEnv, err := base.Extend(cel.Variable("tenant", cel.ObjectType("policy.tenant")))
	if err != nil {
		return nil, fmt.Errorf("tenant scope: %w", err)
	}
	instanceEnv, err := tenantEnv.Extend(cel.Variable("instance", cel.ObjectType("policy.instance")))
	if err != nil {
		return nil, fmt.Errorf("instance scope: %w", err)
	}
	return map[Scope]*cel.Env{ScopeHost: base, ScopeTenant: tenantEnv, ScopeInstance: instanceEnv}, nil
}

// decodePolicy decodes and compiles one policy block. It returns nil if
// there are errors.
func decodePolicy(envs map[Scope]*cel.Env, src []byte, b *hcl.Block) (*policy, hcl.Diagnostics) {
	pol := &policy{name: b.Labels[0], scope: ScopeInstance, declRange: b.DefRange}
	diags := hcl.Diagnostics{}
	if !nameRE.MatchString(pol.name) {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid policy name",
			Detail:   fmt.Sprintf("Policy name %q must match [a-z][a-z0-9-]*.", pol.name),
			Subject:  b.LabelRanges[0].Ptr(),
		})
	}
	content, ds := b.Body.Content(policySchema)
	diags = append(diags, ds...)
	if ds.HasErrors() {
		return nil, diags
	}
	attrs := content.Attributes
	if a := attrs["description"]; a != nil {
		_, ds := stringValue(a)
		diags = append(diags, ds...)
	}
	if a := attrs["scope"]; a != nil {
		v, ds := oneOf(a, ScopeHost, ScopeTenant, ScopeInstance)
		diags = append(diags, ds...)
		pol.scope = v
	}
	enforcement, ds := oneOf(attrs["enforcement"], EnforcementDeny, EnforcementWarn)
	diags = append(diags, ds...)
	pol.enforcement = enforcement
	if diags.HasErrors() {
		return nil, diags
	}

	env := envs[pol.scope]
	if a := attrs["match"]; a != nil {
		pol.match, _, ds = compile(env, src, a, cel.BoolType)
		diags = append(diags, ds...)
	}
	var ruleAST *cel.Ast
	pol.rule, ruleAST, ds = compile(env, src, attrs["rule"], cel.BoolType)
	diags = append(diags, ds...)
	if ruleAST != nil && pol.scope == ScopeInstance {
		pol.subjects = instanceFields(ruleAST)
	}

	msg, msgExpr := attrs["message"], attrs["message_expr"]
	switch {
	case msg != nil && msgExpr != nil:
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Conflicting message attributes",
			Detail:   "Set exactly one of message and message_expr.",
			Subject:  msgExpr.NameRange.Ptr(),
		})
	case msg != nil:
		pol.message, ds = stringValue(msg)
		diags = append(diags, ds...)
	case msgExpr != nil:
		pol.messageExpr, _, ds = compile(env, src, msgExpr, cel.StringType)
		diags = append(diags, ds...)
	default:
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Missing message",
			Detail:   "Set exactly one of message and message_expr.",
			Subject:  b.DefRange.Ptr(),
		})
	}
	if diags.HasErrors() {
		return nil, diags
	}
	return pol, diags
}

// stringValue returns the value of an attribute that must be a literal string.
func stringValue(a *hcl.Attribute) (string, hcl.Diagnostics) {
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		return "", diags
	}
	if v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
		return "", hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Incorrect attribute value type",
			Detail:   fmt.Sprintf("Attribute %q must be a string.", a.Name),
			Subject:  a.Expr.Range().Ptr(),
		}}
	}
	return v.AsString(), nil
}

// oneOf returns the value of a string attribute that must be one of choices.
func oneOf[T ~string](a *hcl.Attribute, choices ...T) (T, hcl.Diagnostics) {
	s, diags := stringValue(a)
	if diags.HasErrors() {
		return "", diags
	}
	if !slices.Contains(choices, T(s)) {
		return "", hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Invalid %s", a.Name),
			Detail:   fmt.Sprintf("%s must be one of %q, not %q.", a.Name, choices, s),
			Subject:  a.Expr.Range().Ptr(),
		}}
	}
	return T(s), nil
}

// compile compiles the CEL expression held by attribute a, checks that it
// has type want and that its estimated cost is within costLimit.
func compile(env *cel.Env, src []byte, a *hcl.Attribute, want *cel.Type) (cel.Program, *cel.Ast, hcl.Diagnostics) {
	text, diags := stringValue(a)
	if diags.HasErrors() {
		return nil, nil, diags
	}
	bad := func(r hcl.Range, format string, args ...any) hcl.Diagnostics {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  fmt.Sprintf("Invalid %s expression", a.Name),
			Detail:   fmt.Sprintf(format, args...),
			Subject:  r.Ptr(),
			Context:  a.Range.Ptr(),
		}}
	}
	checked, iss := env.Compile(text)
	if iss.Err() != nil {
		for _, e := range iss.Errors() {
			diags = append(diags, bad(celRange(src, a.Expr.Range(), text, e.Location), "%s", e.Message)...)
		}
		return nil, nil, diags
	}
	if !checked.OutputType().IsExactType(want) {
		return nil, nil, bad(a.Expr.Range(), "The expression must have type %s, not %s.",
			want, checked.OutputType())
	}
	est, err := env.EstimateCost(checked, sizeEstimator{})
	if err != nil {
		return nil, nil, bad(a.Expr.Range(), "Cannot estimate the expression's cost: %s.", err)
	}
	if est.Max > costLimit {
		return nil, nil, bad(a.Expr.Range(),
			"The expression may cost up to %d, more than the limit of %d (estimated with strings of up to %d characters and lists and maps of up to %d entries).",
			est.Max, costLimit, estimatedStringSize, estimatedCollectionSize)
	}
	prg, err := env.Program(checked,
		cel.CostLimit(costLimit),
		cel.CostTracking(sizeCharger{}),
		cel.InterruptCheckFrequency(interruptCheckFrequency),
		cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, nil, bad(a.Expr.Range(), "%s", err)
	}
	return prg, checked, nil
}

// celRange maps loc, a position in the CEL expression text held by the HCL
// string expression at r, to a one-character range in the HCL file. That is
// exact when the expression is written as a quoted string without escapes or
// as a heredoc; otherwise it returns r.
func celRange(src []byte, r hcl.Range, text string, loc common.Location) hcl.Range {
	lines := strings.Split(text, "\n")
	n, col := loc.Line(), loc.Column() // 1-based line, 0-based column in characters
	if n == len(lines) && n > 1 && lines[n-1] == "" {
		// The end of a heredoc's text, after its last newline: point at the
		// end of the last line instead of at the closing marker.
		n, col = n-1, utf8.RuneCountInString(lines[n-2])
	}
	if n < 1 || n > len(lines) || col < 0 || col > utf8.RuneCountInString(lines[n-1]) || r.End.Byte > len(src) {
		return r
	}
	line := lines[n-1]
	source := string(src[r.Start.Byte:r.End.Byte])
	var start hcl.Pos // where line starts in the file
	switch {
	case strings.HasPrefix(source, `"`):
		if len(lines) != 1 || !strings.HasPrefix(source[1:], line) {
			return r
		}
		start = hcl.Pos{Line: r.Start.Line, Column: r.Start.Column + 1, Byte: r.Start.Byte + 1}
	case strings.HasPrefix(source, "<<"):
		// The heredoc's n-th body line holds line, after any indentation
		// that <<- strips.
		srcLines := strings.Split(source, "\n")
		if n >= len(srcLines) || !strings.HasSuffix(srcLines[n], line) {
			return r
		}
		indent := srcLines[n][:len(srcLines[n])-len(line)]
		offset := r.Start.Byte + len(indent)
		for _, l := range srcLines[:n] {
			offset += len(l) + 1
		}
		start = hcl.Pos{Line: r.Start.Line + n, Column: 1 + utf8.RuneCountInString(indent), Byte: offset}
	default:
		return r
	}
	b := 0
	for range col {
		_, size := utf8.DecodeRuneInString(line[b:])
		b += size
	}
	pos := hcl.Pos{Line: start.Line, Column: start.Column + col, Byte: start.Byte + b}
	end := pos
	if b < len(line) {
		_, size := utf8.DecodeRuneInString(line[b:])
		end.Column++
		end.Byte += size
	}
	return hcl.Range{Filename: r.Filename, Start: pos, End: end}
}

// instanceFields returns the instance attributes that an expression reads,
// as keys of spec.Instance.Ranges ("resources.memory", "state.size"), in the
// order they appear.
func instanceFields(a *cel.Ast) []string {
	var keys []string
	ast.PreOrderVisit(a.NativeRep().Expr(), ast.NewExprVisitor(func(e ast.Expr) {
		var path []string
		for e.Kind() == ast.SelectKind {
			path = append(path, e.AsSelect().FieldName())
			e = e.AsSelect().Operand()
		}
		if len(path) == 0 || e.Kind() != ast.IdentKind || e.AsIdent() != "instance" {
			return
		}
		slices.Reverse(path)
		key := strings.Join(path, ".")
		switch key {
		case "state_size":
			key = "state.size"
		case "state_guest":
			key = "state.guest"
		case "state_seed":
			key = "state.seed"
		}
		if !slices.Contains(keys, key) {
			keys = append(keys, key)
		}
	}))
	return keys
}

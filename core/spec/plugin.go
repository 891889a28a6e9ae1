package spec

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// DecodePluginConfig decodes the body of the plugin block b against the
// schema s that the plugin declared. Unknown arguments and blocks, wrong
// types, missing required arguments and blocks, and repeated single blocks
// or map keys are reported; the values are as sdk.Config describes. It
// returns nil and the diagnostics when the block is invalid.
func DecodePluginConfig(b PluginBlock, s sdk.Schema) (sdk.Config, hcl.Diagnostics) {
	d := &decoder{}
	d.checkSchema(s, b.DeclRange, fmt.Sprintf("The %s plugin %q", b.Kind, b.Name), "")
	if d.diags.HasErrors() {
		return nil, sorted(d.diags)
	}
	cfg := d.config(b.Body, s, fmt.Sprintf("%s %q block", b.Kind, b.Name), b.DeclRange)
	if d.diags.HasErrors() {
		return nil, sorted(d.diags)
	}
	return cfg, sorted(d.diags)
}

// checkSchema reports what a plugin-declared schema s gets wrong: unknown
// types and nestings, and names declared twice. who names the plugin,
// path is the prefix of nested names.
func (d *decoder) checkSchema(s sdk.Schema, at hcl.Range, who, path string) {
	seen := map[string]bool{}
	for _, a := range s.Attributes {
		if _, ok := ctyType(a.Type); !ok {
			d.errorAt(at, "Invalid plugin schema", "%s declares the setting %q with the unknown type %q.", who, path+a.Name, a.Type)
		}
		if seen[a.Name] || a.Name == "" {
			d.errorAt(at, "Invalid plugin schema", "%s declares the setting %q twice or without a name.", who, path+a.Name)
		}
		seen[a.Name] = true
	}
	for _, b := range s.Blocks {
		switch b.Nesting {
		case sdk.NestingSingle, sdk.NestingList, sdk.NestingMap:
		default:
			d.errorAt(at, "Invalid plugin schema", "%s declares the block %q with the unknown nesting %q.", who, path+b.Name, b.Nesting)
		}
		if seen[b.Name] || b.Name == "" {
			d.errorAt(at, "Invalid plugin schema", "%s declares the setting %q twice or without a name.", who, path+b.Name)
		}
		seen[b.Name] = true
		d.checkSchema(b.Schema, at, who, path+b.Name+".")
	}
}

// config decodes body against s, which checkSchema found valid. what names
// the body in messages ("runtime \"wasm\" block"); def is its header.
func (d *decoder) config(body hcl.Body, s sdk.Schema, what string, def hcl.Range) sdk.Config {
	bs := &hcl.BodySchema{}
	for _, b := range s.Blocks {
		h := hcl.BlockHeaderSchema{Type: b.Name}
		if b.Nesting == sdk.NestingMap {
			h.LabelNames = []string{"key"}
		}
		bs.Blocks = append(bs.Blocks, h)
	}
	c, rest, diags := body.PartialContent(bs)
	d.diags = append(d.diags, diags...)
	cfg := d.attributes(rest, s.Attributes, what, def)
	if cfg == nil {
		cfg = sdk.Config{}
	}
	for _, b := range s.Blocks {
		var blocks hcl.Blocks
		for _, blk := range c.Blocks {
			if blk.Type == b.Name {
				blocks = append(blocks, blk)
			}
		}
		if b.Required && len(blocks) == 0 {
			detail := fmt.Sprintf("The %s needs a %s block.", what, b.Name)
			if b.Description != "" {
				detail += " " + b.Name + ": " + b.Description
			}
			d.errorAt(def, "Missing required block", "%s", detail)
		}
		switch b.Nesting {
		case sdk.NestingSingle:
			if blk := d.single(blocks, b.Name); blk != nil {
				cfg[b.Name] = d.config(blk.Body, b.Schema, b.Name+" block", blk.DefRange)
			}
		case sdk.NestingList:
			list := make([]sdk.Config, 0, len(blocks))
			for _, blk := range blocks {
				list = append(list, d.config(blk.Body, b.Schema, b.Name+" block", blk.DefRange))
			}
			cfg[b.Name] = list
		case sdk.NestingMap:
			m := make(map[string]sdk.Config, len(blocks))
			first := map[string]hcl.Range{}
			for _, blk := range blocks {
				key := blk.Labels[0]
				if r, ok := first[key]; ok {
					d.errorAt(blk.DefRange, fmt.Sprintf("Duplicate %s block", b.Name), "A %s block %q is already defined at %s.", b.Name, key, at(r))
					continue
				}
				first[key] = blk.DefRange
				m[key] = d.config(blk.Body, b.Schema, fmt.Sprintf("%s %q block", b.Name, key), blk.DefRange)
			}
			cfg[b.Name] = m
		}
	}
	return cfg
}

// attributes decodes the arguments of body with hcldec, reporting unknown
// ones and missing required ones (at def).
func (d *decoder) attributes(body hcl.Body, attrs []sdk.Attribute, what string, def hcl.Range) sdk.Config {
	spec := hcldec.ObjectSpec{}
	for _, a := range attrs {
		ty, _ := ctyType(a.Type)
		spec[a.Name] = &hcldec.AttrSpec{Name: a.Name, Type: ty}
	}
	v, diags := hcldec.Decode(body, spec, nil)
	d.diags = append(d.diags, diags...)
	cfg := sdk.Config{}
	for _, a := range attrs {
		av := cty.NullVal(cty.DynamicPseudoType)
		if v.IsKnown() && !v.IsNull() {
			av = v.GetAttr(a.Name)
		}
		switch {
		case !av.IsKnown():
			// Decode reported why.
		case av.IsNull():
			if a.Required {
				detail := fmt.Sprintf("The %s needs the argument %q.", what, a.Name)
				if a.Description != "" {
					detail += " " + a.Name + ": " + a.Description
				}
				d.errorAt(def, "Missing required argument", "%s", detail)
			}
		default:
			g, err := goValue(av, a.Type)
			if err != nil {
				d.errorAt(attrRange(body, a.Name, def), fmt.Sprintf("Invalid value for %q", a.Name), "%v.", err)
				continue
			}
			cfg[a.Name] = g
		}
	}
	return cfg
}

// PluginConfigDiagnostic turns err, returned by the Configure method of the
// plugin of block b, into a diagnostic. When err is an *sdk.Error naming an
// attribute, the diagnostic points at that attribute's value, else at the
// block header.
func PluginConfigDiagnostic(b PluginBlock, err error) *hcl.Diagnostic {
	diag := &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("Failed to configure %s %q", b.Kind, b.Name),
		Detail:   err.Error(),
		Subject:  b.DeclRange.Ptr(),
	}
	var e *sdk.Error
	if !errors.As(err, &e) {
		return diag
	}
	diag.Detail = errorMessage(e)
	if e.Attribute != "" {
		diag.Summary = fmt.Sprintf("Invalid %s %q setting %q", b.Kind, b.Name, e.Attribute)
		diag.Subject = pathRange(b.Body, e.Attribute, b.DeclRange).Ptr()
	}
	return diag
}

// DecodeInstanceSettings decodes the settings block of in against s, the
// instance schema of its runtime, and sets in.Settings. An instance without
// a settings block decodes as an empty one. It returns the diagnostics.
func DecodeInstanceSettings(in *Instance, s sdk.Schema) hcl.Diagnostics {
	d := &decoder{}
	d.checkSchema(s, in.DeclRange, fmt.Sprintf("The runtime %q", in.Runtime), "")
	if d.diags.HasErrors() {
		return sorted(d.diags)
	}
	body, def := in.SettingsBody, in.DeclRange
	if r, ok := in.Ranges["settings"]; ok {
		def = r
	}
	if body == nil {
		body = hcl.EmptyBody()
	}
	cfg := d.config(body, s, fmt.Sprintf("settings block of instance %q (runtime %q)", in.Name, in.Runtime), def)
	if !d.diags.HasErrors() {
		in.Settings = cfg
	}
	return sorted(d.diags)
}

// CheckPermissions reports each permission granted to in that its runtime,
// whose capabilities are caps, does not declare, and each parameter that
// the permission does not declare or requires and lacks.
func CheckPermissions(in *Instance, caps sdk.Capabilities) hcl.Diagnostics {
	d := &decoder{}
	var offered []string
	for _, p := range caps.Permissions {
		offered = append(offered, strconv.Quote(p.Name))
	}
	list := "none"
	if len(offered) > 0 {
		list = strings.Join(offered, ", ")
	}
	for _, p := range in.Permissions {
		r := in.Ranges["permission."+p.Name]
		ps, ok := caps.Permission(p.Name)
		if !ok {
			d.errorAt(r, "Unknown permission", "The runtime %q offers no permission %q; it offers %s.", in.Runtime, p.Name, list)
			continue
		}
		declared := map[string]bool{}
		for _, param := range ps.Params {
			declared[param.Name] = true
			if _, set := p.Params[param.Name]; param.Required && !set {
				detail := fmt.Sprintf("The permission %q needs the parameter %q: write it in a permission %q block.", p.Name, param.Name, p.Name)
				if param.Description != "" {
					detail += " " + param.Name + ": " + param.Description
				}
				d.errorAt(r, "Missing permission parameter", "%s", detail)
			}
		}
		for name := range p.Params {
			if !declared[name] {
				d.errorAt(in.Ranges["permission."+p.Name+"."+name], "Unknown permission parameter",
					"The permission %q of runtime %q takes no parameter %q.", p.Name, in.Runtime, name)
			}
		}
	}
	return sorted(d.diags)
}

// InstanceDiagnostic turns err, returned by the runtime's Validate for in,
// into a diagnostic. When err is an *sdk.Error naming an attribute
// ("module", "permission.NAME", "settings.port"), the diagnostic points at
// it in the spec, else at the instance block's header.
func InstanceDiagnostic(in *Instance, err error) *hcl.Diagnostic {
	diag := &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("Runtime %q refuses instance %q", in.Runtime, in.Name),
		Detail:   err.Error(),
		Subject:  in.DeclRange.Ptr(),
	}
	var e *sdk.Error
	if !errors.As(err, &e) {
		return diag
	}
	diag.Detail = errorMessage(e)
	switch attr := e.Attribute; {
	case attr == "":
	case strings.HasPrefix(attr, "settings."):
		def := in.DeclRange
		if r, ok := in.Ranges["settings"]; ok {
			def = r
		}
		body := in.SettingsBody
		if body == nil {
			body = hcl.EmptyBody()
		}
		diag.Summary = fmt.Sprintf("Invalid setting %q of instance %q", strings.TrimPrefix(attr, "settings."), in.Name)
		diag.Subject = pathRange(body, strings.TrimPrefix(attr, "settings."), def).Ptr()
	default:
		diag.Summary = fmt.Sprintf("Invalid %q of instance %q", attr, in.Name)
		if r, ok := in.Ranges[attr]; ok {
			diag.Subject = r.Ptr()
		}
	}
	return diag
}

// errorMessage is e's message without its code and attribute.
func errorMessage(e *sdk.Error) string {
	switch {
	case e.Message != "":
		return e.Message
	case e.Err != nil:
		return e.Err.Error()
	}
	return string(e.Code)
}

// attrRange returns the range of the value of body's attribute name, or
// fallback if body has no such attribute.
func attrRange(body hcl.Body, name string, fallback hcl.Range) hcl.Range {
	c, _, _ := body.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: name}}})
	if a := c.Attributes[name]; a != nil {
		return a.Expr.Range()
	}
	return fallback
}

// pathRange returns the range that the setting path names inside body:
// "a" is an argument's value, "b.a" an argument of the single block b,
// "b[1].a" of the second block b, and `b["k"].a` of the block b labeled k.
// It goes as deep as body has the path and returns the range found there:
// a block's header, or fallback.
func pathRange(body hcl.Body, path string, fallback hcl.Range) hcl.Range {
	segs, ok := parsePath(path)
	if !ok {
		return fallback
	}
	r := fallback
	for i, s := range segs {
		if i == len(segs)-1 && s.index < 0 && !s.keyed {
			return attrRange(body, s.name, r)
		}
		h := hcl.BlockHeaderSchema{Type: s.name}
		if s.keyed {
			h.LabelNames = []string{"key"}
		}
		c, _, _ := body.PartialContent(&hcl.BodySchema{Blocks: []hcl.BlockHeaderSchema{h}})
		var found *hcl.Block
		n := 0
		for _, b := range c.Blocks {
			switch {
			case s.keyed && b.Labels[0] == s.key, !s.keyed && s.index < 0 && n == 0, !s.keyed && n == s.index:
				found = b
			}
			if found != nil {
				break
			}
			n++
		}
		if found == nil {
			return r
		}
		body, r = found.Body, found.DefRange
	}
	return r
}

// pathSeg is one segment of a setting path: a name, optionally indexed.
type pathSeg struct {
	name  string
	index int // -1 when not indexed by number
	keyed bool
	key   string
}

// parsePath splits a setting path such as `a.b[0].c["k"].d` into segments.
func parsePath(path string) ([]pathSeg, bool) {
	var segs []pathSeg
	for path != "" {
		end := strings.IndexAny(path, ".[")
		if end < 0 {
			end = len(path)
		}
		s := pathSeg{name: path[:end], index: -1}
		if s.name == "" {
			return nil, false
		}
		path = path[end:]
		if strings.HasPrefix(path, "[") {
			if strings.HasPrefix(path, `["`) {
				q, err := strconv.QuotedPrefix(path[1:])
				if err != nil || !strings.HasPrefix(path[1+len(q):], "]") {
					return nil, false
				}
				s.keyed, s.key = true, mustUnquote(q)
				path = path[len(q)+2:]
			} else {
				close := strings.IndexByte(path, ']')
				n, err := strconv.Atoi(path[1:max(close, 1)])
				if close < 0 || err != nil || n < 0 {
					return nil, false
				}
				s.index = n
				path = path[close+1:]
			}
		}
		segs = append(segs, s)
		if path != "" {
			if path[0] != '.' {
				return nil, false
			}
			path = path[1:]
			if path == "" {
				return nil, false
			}
		}
	}
	return segs, len(segs) > 0
}

func mustUnquote(q string) string {
	s, _ := strconv.Unquote(q)
	return s
}

// ctyType returns the cty type of a setting type.
func ctyType(t sdk.AttrType) (cty.Type, bool) {
	switch t {
	case sdk.TypeString:
		return cty.String, true
	case sdk.TypeNumber:
		return cty.Number, true
	case sdk.TypeBool:
		return cty.Bool, true
	case sdk.TypeStringList:
		return cty.List(cty.String), true
	case sdk.TypeStringMap:
		return cty.Map(cty.String), true
	}
	return cty.NilType, false
}

// goValue converts v, a known non-null value of type t, to its Go value.
func goValue(v cty.Value, t sdk.AttrType) (any, error) {
	switch t {
	case sdk.TypeString:
		return v.AsString(), nil
	case sdk.TypeNumber:
		f, _ := v.AsBigFloat().Float64()
		if math.IsInf(f, 0) {
			return nil, fmt.Errorf("%s is out of range", v.AsBigFloat().Text('g', -1))
		}
		return f, nil
	case sdk.TypeBool:
		return v.True(), nil
	case sdk.TypeStringList:
		list := make([]string, 0, v.LengthInt())
		for i, e := range v.AsValueSlice() {
			if e.IsNull() {
				return nil, fmt.Errorf("element %d is null", i)
			}
			list = append(list, e.AsString())
		}
		return list, nil
	default:
		m := make(map[string]string, v.LengthInt())
		for k, e := range v.AsValueMap() {
			if e.IsNull() {
				return nil, fmt.Errorf("element %q is null", k)
			}
			m[k] = e.AsString()
		}
		return m, nil
	}
}

package spec

import (
	"errors"
	"fmt"
	"math"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/zclconf/go-cty/cty"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// DecodePluginConfig decodes the body of the plugin block b against the
// schema s that the plugin declared. Unknown arguments, wrong types and
// missing required arguments are reported; the values are string, float64,
// bool, []string or map[string]string as s declares. It returns nil and the
// diagnostics when the block is invalid.
func DecodePluginConfig(b PluginBlock, s sdk.Schema) (sdk.Config, hcl.Diagnostics) {
	d := &decoder{}
	spec := hcldec.ObjectSpec{}
	for _, a := range s.Attributes {
		ty, ok := ctyType(a.Type)
		if !ok {
			d.errorAt(b.DeclRange, "Invalid plugin schema", "The %s plugin %q declares the setting %q with the unknown type %q.", b.Kind, b.Name, a.Name, a.Type)
			continue
		}
		spec[a.Name] = &hcldec.AttrSpec{Name: a.Name, Type: ty}
	}
	if d.diags.HasErrors() {
		return nil, sorted(d.diags)
	}
	v, diags := hcldec.Decode(b.Body, spec, nil)
	d.diags = append(d.diags, diags...)
	cfg := sdk.Config{}
	for _, a := range s.Attributes {
		av := v.GetAttr(a.Name)
		switch {
		case !av.IsKnown():
			// Decode reported why.
		case av.IsNull():
			if a.Required {
				detail := fmt.Sprintf("The %s %q block needs the argument %q.", b.Kind, b.Name, a.Name)
				if a.Description != "" {
					detail += " " + a.Name + ": " + a.Description
				}
				d.errorAt(b.DeclRange, "Missing required argument", "%s", detail)
			}
		default:
			g, err := goValue(av, a.Type)
			if err != nil {
				d.errorAt(attrRange(b, a.Name), fmt.Sprintf("Invalid value for %q", a.Name), "%v.", err)
				continue
			}
			cfg[a.Name] = g
		}
	}
	if d.diags.HasErrors() {
		return nil, sorted(d.diags)
	}
	return cfg, sorted(d.diags)
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
	switch {
	case e.Message != "":
		diag.Detail = e.Message
	case e.Err != nil:
		diag.Detail = e.Err.Error()
	}
	if e.Attribute != "" {
		diag.Summary = fmt.Sprintf("Invalid %s %q setting %q", b.Kind, b.Name, e.Attribute)
		diag.Subject = attrRange(b, e.Attribute).Ptr()
	}
	return diag
}

// attrRange returns the range of the value of b's attribute name, or the
// range of b's header if b has no such attribute.
func attrRange(b PluginBlock, name string) hcl.Range {
	c, _, _ := b.Body.PartialContent(&hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: name}}})
	if a := c.Attributes[name]; a != nil {
		return a.Expr.Range()
	}
	return b.DeclRange
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

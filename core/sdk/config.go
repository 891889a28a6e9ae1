package sdk

import (
	"encoding/json"
	"fmt"
)

// The tags of Config's JSON encoding, one per value type.
const (
	jsonString   = "string"
	jsonNumber   = "number"
	jsonBool     = "bool"
	jsonList     = "list"
	jsonMap      = "map"
	jsonBlock    = "block"
	jsonBlocks   = "blocks"
	jsonBlockMap = "block_map"
)

// MarshalJSON encodes c so that UnmarshalJSON restores each value's Go type:
// every value is an object with one key naming its type, such as
// {"port": {"number": 8080}}. Hosts and plugins can so store a Config. Map
// keys are sorted, which makes the encoding canonical.
func (c Config) MarshalJSON() ([]byte, error) {
	if c == nil {
		return []byte("null"), nil
	}
	out := make(map[string]map[string]any, len(c))
	for k, v := range c {
		var tag string
		switch v.(type) {
		case string:
			tag = jsonString
		case float64:
			tag = jsonNumber
		case bool:
			tag = jsonBool
		case []string:
			tag = jsonList
		case map[string]string:
			tag = jsonMap
		case Config:
			tag = jsonBlock
		case []Config:
			tag = jsonBlocks
		case map[string]Config:
			tag = jsonBlockMap
		default:
			return nil, InvalidAttribute(k, "unsupported setting value type %T", v)
		}
		out[k] = map[string]any{tag: v}
	}
	return json.Marshal(out)
}

// UnmarshalJSON decodes what MarshalJSON encoded.
func (c *Config) UnmarshalJSON(b []byte) error {
	var in map[string]map[string]json.RawMessage
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	if in == nil {
		*c = nil
		return nil
	}
	out := make(Config, len(in))
	for k, tagged := range in {
		if len(tagged) != 1 {
			return fmt.Errorf("setting %q: want one type tag, got %d", k, len(tagged))
		}
		for tag, raw := range tagged {
			var err error
			switch tag {
			case jsonString:
				out[k], err = decodeAs[string](raw)
			case jsonNumber:
				out[k], err = decodeAs[float64](raw)
			case jsonBool:
				out[k], err = decodeAs[bool](raw)
			case jsonList:
				out[k], err = decodeAs[[]string](raw)
			case jsonMap:
				out[k], err = decodeAs[map[string]string](raw)
			case jsonBlock:
				out[k], err = decodeAs[Config](raw)
			case jsonBlocks:
				out[k], err = decodeAs[[]Config](raw)
			case jsonBlockMap:
				out[k], err = decodeAs[map[string]Config](raw)
			default:
				err = fmt.Errorf("unknown type tag %q", tag)
			}
			if err != nil {
				return fmt.Errorf("setting %q: %w", k, err)
			}
		}
	}
	*c = out
	return nil
}

// decodeAs decodes raw as a T, which must not be null.
func decodeAs[T any](raw json.RawMessage) (T, error) {
	var v T
	if string(raw) == "null" {
		return v, fmt.Errorf("null value")
	}
	err := json.Unmarshal(raw, &v)
	return v, err
}

// permissionJSON is the object form of a Permission's JSON encoding.
type permissionJSON struct {
	Name   string            `json:"name"`
	Params map[string]string `json:"params,omitempty"`
}

// MarshalJSON encodes a permission without parameters as its name, a JSON
// string, and one with parameters as {"name": ..., "params": {...}}.
func (p Permission) MarshalJSON() ([]byte, error) {
	if len(p.Params) == 0 {
		return json.Marshal(p.Name)
	}
	return json.Marshal(permissionJSON(p))
}

// UnmarshalJSON decodes either form MarshalJSON makes.
func (p *Permission) UnmarshalJSON(b []byte) error {
	var name string
	if err := json.Unmarshal(b, &name); err == nil {
		*p = Permission{Name: name}
		return nil
	}
	var o permissionJSON
	if err := json.Unmarshal(b, &o); err != nil {
		return fmt.Errorf("permission: %w", err)
	}
	*p = Permission(o)
	return nil
}

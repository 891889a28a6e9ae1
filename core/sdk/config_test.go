package sdk

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestConfigJSON(t *testing.T) {
	tests := []struct {
		name string
		c    Config
	}{
		{"nil", nil},
		{"empty", Config{}},
		{"scalars", Config{"s": "", "n": -1.5, "b": false}},
		{"lists-and-maps", Config{"l": []string{}, "l2": []string{"a", ""}, "m": map[string]string{}, "m2": map[string]string{"": "x"}}},
		{"blocks", Config{
			"single": Config{"inner": Config{}},
			"list":   []Config{{}, {"n": 1.0}},
			"none":   []Config{},
			"map":    map[string]Config{"a": {"l": []string{"x"}}, "": {}},
			"nomap":  map[string]Config{},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.c)
			if err != nil {
				t.Fatal(err)
			}
			var got Config
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("decode %s: %v", b, err)
			}
			if !reflect.DeepEqual(got, tt.c) {
				t.Errorf("round trip of %s = %#v, want %#v", b, got, tt.c)
			}
			again, _ := json.Marshal(got)
			if string(again) != string(b) {
				t.Errorf("encoding is not stable: %s then %s", b, again)
			}
		})
	}
}

func TestConfigJSONErrors(t *testing.T) {
	tests := []struct {
		name, json, want string
	}{
		{"untagged", `{"a": "x"}`, "cannot unmarshal"},
		{"two-tags", `{"a": {"string": "x", "bool": true}}`, "one type tag"},
		{"unknown-tag", `{"a": {"int": 1}}`, `unknown type tag "int"`},
		{"null", `{"a": {"block": null}}`, "null value"},
		{"wrong-type", `{"a": {"list": "x"}}`, "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c Config
			if err := json.Unmarshal([]byte(tt.json), &c); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("decode = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := json.Marshal(Config{"i": 3}); err == nil || !strings.Contains(err.Error(), "unsupported setting value type int") {
		t.Errorf("encode of an int = %v, want an error", err)
	}
}

func TestPermissionJSON(t *testing.T) {
	tests := []struct {
		name string
		p    Permissions
		json string
	}{
		{"names", Permissions{{Name: "clock"}, {Name: "state.write"}}, `["clock","state.write"]`},
		{"params", Permissions{{Name: "net", Params: map[string]string{"port": "1", "host": "a"}}}, `[{"name":"net","params":{"host":"a","port":"1"}}]`},
		{"empty", Permissions{}, `[]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.p)
			if err != nil || string(b) != tt.json {
				t.Fatalf("encode = %s, %v; want %s", b, err, tt.json)
			}
			var got Permissions
			if err := json.Unmarshal(b, &got); err != nil || !reflect.DeepEqual(got, tt.p) {
				t.Errorf("decode = %#v, %v; want %#v", got, err, tt.p)
			}
		})
	}
	var p Permission
	if err := json.Unmarshal([]byte(`7`), &p); err == nil {
		t.Error("a number decoded as a permission")
	}
}

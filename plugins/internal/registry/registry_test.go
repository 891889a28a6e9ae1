package registry

import (
	"errors"
	"strings"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// TestParse checks the registry blocks' decoding and its refusals.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    any
		attr string
	}{
		{"not blocks", "r:5000", "registry"},
		{"no label", map[string]sdk.Config{"": {}}, "registry"},
		{"not a bool", map[string]sdk.Config{"r:5000": {"plain_http": "yes"}}, `registry["r:5000"].plain_http`},
		{"unknown setting", map[string]sdk.Config{"r:5000": {"insecure": true}}, `registry["r:5000"].insecure`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.v)
			var se *sdk.Error
			if !errors.As(err, &se) || se.Code != sdk.CodeInvalid || se.Attribute != tc.attr {
				t.Errorf("Parse(%v) = %v, want an invalid %s", tc.v, err, tc.attr)
			}
		})
	}
	s, err := Parse(map[string]sdk.Config{"a:1": {"plain_http": true}, "b:2": {"skip_verify": true}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Host("a:1") != (Host{PlainHTTP: true}) || s.Host("b:2") != (Host{SkipVerify: true}) || s.Host("c:3") != (Host{}) {
		t.Errorf("settings %+v", s)
	}
	if _, err := Parse(nil); err != nil {
		t.Errorf("Parse(nil) = %v", err)
	}
}

// TestHosts checks the scheme each host is reached by.
func TestHosts(t *testing.T) {
	s, err := Parse(map[string]sdk.Config{"r.example:5000": {"plain_http": true}})
	if err != nil {
		t.Fatal(err)
	}
	for host, scheme := range map[string]string{"r.example:5000": "http", "127.0.0.1:5000": "http", "other.example": "https"} {
		hosts, err := s.Hosts()(host)
		if err != nil || len(hosts) == 0 || hosts[0].Scheme != scheme {
			t.Errorf("%s: %+v %v, want %s", host, hosts, err, scheme)
		}
	}
}

// TestReference checks the references artifacts are pulled by.
func TestReference(t *testing.T) {
	dg := "sha256:" + strings.Repeat("a", 64)
	other := "sha256:" + strings.Repeat("b", 64)
	for _, tc := range []struct {
		a    sdk.Artifact
		want string
		attr string
	}{
		{sdk.Artifact{Image: "busybox"}, "docker.io/library/busybox:latest", ""},
		{sdk.Artifact{Image: "127.0.0.1:5000/app:v1"}, "127.0.0.1:5000/app:v1", ""},
		{sdk.Artifact{Image: "127.0.0.1:5000/app:v1", Digest: dg}, "127.0.0.1:5000/app@" + dg, ""},
		{sdk.Artifact{Image: "127.0.0.1:5000/app@" + dg, Digest: dg}, "127.0.0.1:5000/app@" + dg, ""},
		{sdk.Artifact{Image: "127.0.0.1:5000/app@" + dg, Digest: other}, "", "digest"},
		{sdk.Artifact{Image: "app", Digest: "md5:00"}, "", "digest"},
		{sdk.Artifact{Image: "Bad//Ref"}, "", "image"},
	} {
		got, err := Reference(tc.a)
		var se *sdk.Error
		switch {
		case tc.attr == "" && (err != nil || got != tc.want):
			t.Errorf("Reference(%+v) = %q, %v, want %q", tc.a, got, err, tc.want)
		case tc.attr != "" && (!errors.As(err, &se) || se.Attribute != tc.attr):
			t.Errorf("Reference(%+v) = %q, %v, want an error on %s", tc.a, got, err, tc.attr)
		}
	}
}

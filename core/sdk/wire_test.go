package sdk

import (
	"reflect"
	"testing"
)

// TestStartArtifactWire checks that each kind of artifact crosses the
// plugin boundary unchanged.
func TestStartArtifactWire(t *testing.T) {
	for _, a := range []Artifact{
		{Module: "/a/m.wasm", Digest: "sha256:1"},
		{Image: "r:5000/app:1", Digest: "sha256:2"},
		{Archive: "/a/app.tar", Digest: "sha256:3"},
	} {
		m, err := startToPB(&StartRequest{Artifact: a})
		if err != nil {
			t.Fatal(err)
		}
		r, err := startFromPB(m)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(r.Artifact, a) {
			t.Errorf("artifact %+v crossed as %+v", a, r.Artifact)
		}
	}
}

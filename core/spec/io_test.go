package spec

import (
	"strings"
	"testing"

	"github.com/kigumi/kigumi/core/sdk/v2"
)

// ioTenant is a tenant spec whose resources block holds body.
func ioTenant(body string) string {
	return "tenant \"a\" {\n  instance \"i\" {\n    runtime = \"wasm\"\n    module  = \"m.wasm\"\n    resources {\n" + body + "\n    }\n  }\n}\n"
}

func TestIOLimits(t *testing.T) {
	p := NewParser()
	ts, diags := p.ParseTenant("/srv/t/a.hcl", []byte(ioTenant(`      io_read_bps   = "20MiB"
      io_write_bps  = 1048576
      io_read_iops  = 2000
      io_write_iops = 500`)))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	want := sdk.IOLimits{ReadBPS: 20 << 20, WriteBPS: 1 << 20, ReadIOPS: 2000, WriteIOPS: 500}
	if got := ts[0].Instances[0].Resources.IO; got != want {
		t.Errorf("IO = %+v, want %+v", got, want)
	}
	if r, ok := ts[0].Instances[0].Ranges["resources.io_write_iops"]; !ok || r.Start.Line != 9 {
		t.Errorf("range of io_write_iops: %v", r)
	}
	ts, diags = p.ParseTenant("/srv/t/b.hcl", []byte(ioTenant(`      memory = "32MiB"`)))
	if diags.HasErrors() || ts[0].Instances[0].Resources.IO != (sdk.IOLimits{}) {
		t.Errorf("unset rates: %+v, %v", ts[0].Instances[0].Resources.IO, diags)
	}

	for _, tt := range []struct {
		body, summary, detail string
		col                   int
	}{
		{`      io_read_bps = "1KiB"`, `Invalid value for "io_read_bps"`, "at least 4.0 KiB", 21},
		{`      io_write_bps = "-1MiB"`, `Invalid value for "io_write_bps"`, "greater than zero", 22},
		{`      io_write_bps = "fast"`, `Invalid value for "io_write_bps"`, "not a size", 22},
		{`      io_read_iops = 0`, `Invalid value for "io_read_iops"`, "between 1 and 1073741824", 22},
		{`      io_write_iops = 2.5`, `Invalid value for "io_write_iops"`, "2.5 is not a whole number", 23},
		{`      io_write_iops = "many"`, "Incorrect attribute value type", "a number is required", 23},
	} {
		_, diags := p.ParseTenant("/srv/t/bad.hcl", []byte(ioTenant(tt.body)))
		if len(diags) != 1 {
			t.Errorf("%s: diagnostics %v, want one", tt.body, diags)
			continue
		}
		dg := diags[0]
		if dg.Summary != tt.summary || !strings.Contains(dg.Detail, tt.detail) || dg.Subject == nil ||
			dg.Subject.Filename != "/srv/t/bad.hcl" || dg.Subject.Start.Line != 6 || dg.Subject.Start.Column != tt.col {
			t.Errorf("%s: %s: %s at %v, want %s (%q) at 6:%d", tt.body, dg.Summary, dg.Detail, dg.Subject, tt.summary, tt.detail, tt.col)
		}
	}
}

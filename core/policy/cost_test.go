package policy

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// rule returns a deny policy with the rule expr.
func rule(expr string) string {
	return fmt.Sprintf("policy \"p\" {\n  enforcement = \"deny\"\n  rule = %q\n  message = \"no\"\n}\n", expr)
}

// chain returns start followed by n copies of call.
func chain(start, call string, n int) string {
	return start + strings.Repeat(call, n)
}

func TestCostRejectedAtLoad(t *testing.T) {
	tests := []struct{ name, expr string }{
		{"replace-20", chain("'aaaa'", ".replace('a', 'aaaa')", 20) + " != ''"},
		{"replace-n-20", chain("'aaaa'", ".replace('a', 'aaaa', -1)", 20) + " != ''"},
		{"replace-empty-old", chain("instance.name", ".replace('', instance.name)", 2) + " != ''"},
		{"replace-input", chain("instance.runtime", ".replace('a', 'aaaaaaaaaa')", 6) + " != ''"},
		{"join-split", chain("instance.name", ".split('').join(instance.name)", 3) + " != ''"},
		{"concat", "[" + strings.Repeat("instance.args.join(instance.name) + ", 30) + "''][0] != ''"},
		{"quote", chain("instance.name", ".replace('a', 'aaaaaaaa')", 4) + ".size() > 0 && strings.quote(" + chain("instance.name", ".replace('a', 'aaaaaaaa')", 4) + ") != ''"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, diags, _ := load(t, rule(tt.expr))
			if s != nil || !diags.HasErrors() {
				t.Fatalf("Load accepted %s", tt.expr)
			}
			if d := diags[0]; d.Summary != "Invalid rule expression" || !strings.Contains(d.Detail, "more than the limit of 1000000") {
				t.Errorf("diagnostic = %s: %s; want the cost limit", d.Summary, d.Detail)
			}
		})
	}
}

func TestCostStoppedAtRunTime(t *testing.T) {
	big := strings.Repeat("a", 200_000)
	tests := []struct {
		name string
		expr string
		args []string
		want string
	}{
		{"replace-chain", chain("instance.args[0]", ".replace('a', 'aaaa')", 3) + " != ''", []string{big}, "replace would produce"},
		{"replace-one", "instance.args[0].replace('a', 'aaaaaaaaaa') != ''", []string{big}, "replace would produce 2000000 bytes"},
		{"join", "instance.args.join('') != ''", strings.Split(strings.Repeat(big[:4000]+" ", 300), " "), "join would produce"},
		{"join-separator", "instance.args.join(instance.args[0]) != ''", []string{big, big, big, big, big}, "join would produce"},
		{"format-precision", "'%.999999999f'.format([1.0]) != ''", nil, "format would produce"},
		{"format-args", "'%s%s%s%s%s%s'.format(instance.args) != ''", []string{big, big, big, big, big, big}, "format would produce"},
		{"concat", "(instance.args[0]" + strings.Repeat(" + instance.args[0]", 15) + ").size() > 0", []string{big}, "cost limit exceeded"},
		{"list-concat", "(instance.args + instance.args + instance.args + instance.args).size() > 0", strings.Split(strings.Repeat("a ", 1_000_000), " "), "cost limit exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, diags, _ := load(t, rule(tt.expr))
			if diags.HasErrors() {
				t.Fatalf("Load refused %s: %s", tt.expr, diags)
			}
			h, tenants := fixture()
			tenants[0].Instances[0].Args = tt.args
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			rep, err := s.Evaluate(context.Background(), h, tenants[:1])
			runtime.ReadMemStats(&m1)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Results) != 1 || !rep.Results[0].Denies() || rep.Results[0].Err == nil {
				t.Fatalf("results = %+v, want one evaluation error", rep.Results)
			}
			if msg := rep.Results[0].Message; !strings.Contains(msg, tt.want) {
				t.Errorf("message = %q, want it to contain %q", msg, tt.want)
			}
			if grew := (m1.TotalAlloc - m0.TotalAlloc) >> 20; grew > 128 {
				t.Errorf("evaluation allocated %d MiB", grew)
			}
		})
	}
}

func TestCostAllowsOrdinaryRules(t *testing.T) {
	for _, expr := range []string{
		"instance.name.replace('-', '_') != ''",
		"!instance.args.join(' ').contains('--privileged')",
		"'%s/%s'.format([tenant.name, instance.name]) != ''",
		"instance.args.all(a, a.size() < 100)",
	} {
		s, diags, _ := load(t, rule(expr))
		if diags.HasErrors() {
			t.Fatalf("Load refused %s: %s", expr, diags)
		}
		h, tenants := fixture()
		rep, err := s.Evaluate(context.Background(), h, tenants[:1])
		if err != nil || len(rep.Results) != 1 || !rep.Results[0].Allowed {
			t.Errorf("%s: results = %+v, %v; want allowed", expr, rep.Results, err)
		}
	}
}

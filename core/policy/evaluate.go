package policy

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/interpreter"
	"github.com/hashicorp/hcl/v2"

	"github.com/kigumi/kigumi/core/spec"
)

// Result is the decision of one policy that applied to one host, tenant or
// instance.
type Result struct {
	Policy      string
	Scope       Scope
	Enforcement Enforcement
	// Tenant and Instance name what the policy was evaluated for; they are
	// empty for host and tenant scope as appropriate.
	Tenant   string
	Instance string
	// Allowed is true when the rule held. It is false when the rule was
	// false or its evaluation failed.
	Allowed bool
	// Message is the policy's message when not allowed, or
	// "evaluation error: ..." when Err is set.
	Message string
	// Subject is the spec location the decision is about: for instance
	// scope the attribute the rule reads, if the spec sets it, else the
	// instance block; the tenant block; or the host block.
	Subject hcl.Range
	// PolicyRange is the policy block's header.
	PolicyRange hcl.Range
	// Err is the evaluation error, if any. An evaluation error denies,
	// whatever the enforcement.
	Err error
}

// Denies reports whether the result refuses the spec: a false rule of a
// deny policy, or any evaluation error.
func (r Result) Denies() bool {
	return !r.Allowed && (r.Enforcement == EnforcementDeny || r.Err != nil)
}

// Report holds the results of every policy that applied.
type Report struct {
	Results []Result
}

// Denied reports whether any result denies.
func (r Report) Denied() bool {
	for _, res := range r.Results {
		if res.Denies() {
			return true
		}
	}
	return false
}

// Diagnostics returns an error for every denial and a warning for every
// warning. Subject is the spec location; Detail holds the policy's message
// and its own location.
func (r Report) Diagnostics() hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, res := range r.Results {
		if res.Allowed {
			continue
		}
		severity, verb := hcl.DiagWarning, "warns about"
		if res.Denies() {
			severity, verb = hcl.DiagError, "denied"
		}
		target := fmt.Sprintf("tenant %q", res.Tenant)
		switch {
		case res.Instance != "":
			target += fmt.Sprintf(" instance %q", res.Instance)
		case res.Scope == ScopeHost:
			target = "the host"
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: severity,
			Summary:  fmt.Sprintf("Policy %q %s %s", res.Policy, verb, target),
			Detail: fmt.Sprintf("%s\n\n(policy defined at %s:%d)",
				res.Message, res.PolicyRange.Filename, res.PolicyRange.Start.Line),
			Subject: res.Subject.Ptr(),
		})
	}
	return diags
}

// Evaluate evaluates host-scope policies once, tenant-scope policies once
// per tenant and instance-scope policies once per instance of each tenant.
// tenants are all desired tenants; host.allocated sums over them. The error
// is non-nil only when ctx ends first, and then the report is empty.
func (s *Set) Evaluate(ctx context.Context, h *spec.Host, tenants []*spec.Tenant) (Report, error) {
	var rep Report
	hv := newHost(h, tenants)
	vars := &activation{host: s.adapter.NativeToValue(hv)}
	if err := s.evaluate(ctx, &rep, ScopeHost, vars, Result{Subject: h.DeclRange}, nil); err != nil {
		return Report{}, err
	}
	for _, t := range tenants {
		if err := s.evaluateTenant(ctx, &rep, vars, h, t); err != nil {
			return Report{}, err
		}
	}
	return rep, nil
}

// evaluateTenant evaluates the tenant-scope policies for t and the
// instance-scope ones for each of its instances, with vars.host set.
func (s *Set) evaluateTenant(ctx context.Context, rep *Report, vars *activation, h *spec.Host, t *spec.Tenant) error {
	vars.tenant = s.adapter.NativeToValue(newTenant(h, t))
	if err := s.evaluate(ctx, rep, ScopeTenant, vars, Result{Tenant: t.Name, Subject: t.DeclRange}, nil); err != nil {
		return err
	}
	for i := range t.Instances {
		in := &t.Instances[i]
		vars.instance = s.adapter.NativeToValue(newInstance(t, in))
		at := Result{Tenant: t.Name, Instance: in.Name, Subject: in.DeclRange}
		if err := s.evaluate(ctx, rep, ScopeInstance, vars, at, in.Ranges); err != nil {
			return err
		}
	}
	return nil
}

// A Memo evaluates a Set over successive snapshots of the desired tenants,
// as Set.Evaluate does, re-evaluating only what may have changed. A
// decision depends on the policy, on the variables host, tenant and
// instance, and on nothing else: host-scope policies are evaluated every
// time; a tenant's tenant- and instance-scope decisions are kept while the
// tenant is the same *spec.Tenant (decoded specs are never changed in
// place) and the host variable, with its totals over all tenants, is
// equal. One changed tenant then costs the host policies and its own. A
// Memo is safe for concurrent use.
type Memo struct {
	set *Set

	mu       sync.Mutex
	byTenant map[*spec.Tenant]memoEntry
}

// memoEntry is one tenant's decisions, and the host they were made with.
type memoEntry struct {
	host    host
	results []Result
}

// NewMemo returns an empty Memo of s.
func (s *Set) NewMemo() *Memo {
	return &Memo{set: s, byTenant: map[*spec.Tenant]memoEntry{}}
}

// Evaluate is Set.Evaluate, with the decisions kept from the last call for
// the tenants and host unchanged since.
func (m *Memo) Evaluate(ctx context.Context, h *spec.Host, tenants []*spec.Tenant) (Report, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.set
	var rep Report
	hv := newHost(h, tenants)
	vars := &activation{host: s.adapter.NativeToValue(hv)}
	if err := s.evaluate(ctx, &rep, ScopeHost, vars, Result{Subject: h.DeclRange}, nil); err != nil {
		return Report{}, err
	}
	next := make(map[*spec.Tenant]memoEntry, len(tenants))
	for _, t := range tenants {
		e, ok := m.byTenant[t]
		if !ok || e.host != *hv {
			var tr Report
			if err := s.evaluateTenant(ctx, &tr, vars, h, t); err != nil {
				return Report{}, err
			}
			e = memoEntry{host: *hv, results: tr.Results}
		}
		next[t] = e
		rep.Results = append(rep.Results, e.results...)
	}
	m.byTenant = next // tenants gone are forgotten
	return rep, nil
}

// evaluate runs the policies of scope, appending a result to rep for each
// that applies. at holds the result's target fields; ranges are the
// instance's attribute ranges for instance scope.
func (s *Set) evaluate(ctx context.Context, rep *Report, scope Scope, vars *activation, at Result, ranges map[string]hcl.Range) error {
	for _, p := range s.policies {
		if p.scope != scope {
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("evaluating policies: %w", err)
		}
		res := at
		res.Policy, res.Scope, res.Enforcement, res.PolicyRange = p.name, p.scope, p.enforcement, p.declRange
		for _, key := range p.subjects {
			if r, ok := ranges[key]; ok {
				res.Subject = r
				break
			}
		}
		applies, err := p.decide(ctx, vars, &res)
		if ctx.Err() != nil {
			return fmt.Errorf("evaluating policies: %w", ctx.Err())
		}
		if err != nil {
			res.Allowed, res.Err, res.Message = false, err, "evaluation error: "+err.Error()
		}
		if applies {
			rep.Results = append(rep.Results, res)
		}
	}
	return nil
}

// decide evaluates the policy's match, rule and message into res. It
// reports whether the policy applies.
func (p *policy) decide(ctx context.Context, vars *activation, res *Result) (bool, error) {
	if p.match != nil {
		applies, err := eval[bool](ctx, p.match, vars)
		if err != nil {
			return true, fmt.Errorf("match: %w", err)
		}
		if !applies {
			return false, nil
		}
	}
	allowed, err := eval[bool](ctx, p.rule, vars)
	if err != nil {
		return true, fmt.Errorf("rule: %w", err)
	}
	res.Allowed = allowed
	if allowed {
		return true, nil
	}
	res.Message = p.message
	if p.messageExpr != nil {
		if res.Message, err = eval[string](ctx, p.messageExpr, vars); err != nil {
			return true, fmt.Errorf("message_expr: %w", err)
		}
	}
	return true, nil
}

// eval evaluates a program whose type was checked at load time to be T.
func eval[T any](ctx context.Context, prg cel.Program, vars *activation) (T, error) {
	var zero T
	out, _, err := prg.ContextEval(ctx, vars)
	if err != nil {
		return zero, err
	}
	v, ok := out.Value().(T)
	if !ok {
		return zero, fmt.Errorf("got %s, want %T", out.Type(), zero)
	}
	return v, nil
}

// activation resolves the policy variables. Values are converted to CEL
// once per host, tenant and instance rather than at every access.
type activation struct {
	host, tenant, instance ref.Val
}

// ResolveName implements interpreter.Activation.
func (a *activation) ResolveName(name string) (any, bool) {
	var v ref.Val
	switch name {
	case "host":
		v = a.host
	case "tenant":
		v = a.tenant
	case "instance":
		v = a.instance
	}
	return v, v != nil
}

// Parent implements interpreter.Activation.
func (a *activation) Parent() interpreter.Activation { return nil }

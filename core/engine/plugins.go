package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/hashicorp/hcl/v2"
	"golang.org/x/sync/errgroup"

	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/core/spec"
)

// configured remembers a plugin's settings and the client they were last
// given to, so a plugin relaunched after a crash is configured again.
type configured struct {
	req    sdk.ConfigureRequest
	client sdk.Plugin
	info   sdk.Info
	// recovered holds the instances (by key) the runtime's client has
	// recovered: a plugin process recovers each instance it serves once,
	// at its first refresh, whether it was relaunched after a crash or the
	// agent restarted.
	recovered map[string]bool
}

func key(kind sdk.Kind, name string) string { return string(kind) + " " + name }

// launch returns the plugin client of a host-spec block.
func (e *Engine) launch(ctx context.Context, kind sdk.Kind, name string) (sdk.Plugin, error) {
	switch kind {
	case sdk.KindRuntime:
		return e.plugins.Runtime(ctx, name, pluginhost.HostScope)
	case sdk.KindStateFS:
		return e.plugins.StateFS(ctx, name, pluginhost.HostScope)
	case sdk.KindLedger:
		return e.plugins.Ledger(ctx, name, pluginhost.HostScope)
	}
	return nil, fmt.Errorf("unknown plugin kind %q", kind)
}

// Configure launches the plugin of every plugin block in the host spec,
// decodes the block against the schema the plugin declares, and hands the
// plugin its settings. Problems with the spec (an unknown plugin, a bad
// setting) are diagnostics on the block or attribute; a plugin that fails
// to run is an error.
func (e *Engine) Configure(ctx context.Context) (hcl.Diagnostics, error) {
	var diags hcl.Diagnostics
	e.mu.Lock()
	e.configs = map[string]*configured{}
	e.mu.Unlock()
	for _, b := range e.host.Plugins {
		d, err := e.configure(ctx, b)
		diags = append(diags, d...)
		if err != nil {
			return diags, err
		}
	}
	return diags, nil
}

func (e *Engine) configure(ctx context.Context, b spec.PluginBlock) (hcl.Diagnostics, error) {
	title := fmt.Sprintf("%s plugin %q", b.Kind, b.Name)
	client, err := e.launch(ctx, b.Kind, b.Name)
	if errors.Is(err, sdk.ErrNotFound) || errors.Is(err, sdk.ErrInvalid) {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Cannot use " + title,
			Detail:   err.Error(),
			Subject:  b.DeclRange.Ptr(),
		}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", title, err)
	}
	info, err := client.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s did not describe itself: %w", title, err)
	}
	settings, diags := spec.DecodePluginConfig(b, info.Schema)
	if diags.HasErrors() {
		return diags, nil
	}
	req := sdk.ConfigureRequest{
		Host: e.host.Name, Settings: settings, DataDir: PluginDataDir(e.host, b.Kind, b.Name),
		HostCapabilities: sdk.HostCapabilities{ProtocolMinor: sdk.ProtocolMinor},
	}
	if err := os.MkdirAll(req.DataDir, 0o700); err != nil {
		return diags, fmt.Errorf("create the data directory of %s: %w", title, err)
	}
	if err := client.Configure(ctx, req); err != nil {
		if errors.Is(err, sdk.ErrInvalid) {
			return append(diags, spec.PluginConfigDiagnostic(b, err)), nil
		}
		return diags, fmt.Errorf("configure %s: %w", title, err)
	}
	e.mu.Lock()
	e.configs[key(b.Kind, b.Name)] = &configured{req: req, client: client, info: info}
	e.mu.Unlock()
	return diags, nil
}

// reconfigure configures client if it is not the client last configured
// for kind and name (the plugin was relaunched).
func (e *Engine) reconfigure(ctx context.Context, kind sdk.Kind, name string, client sdk.Plugin) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.configs[key(kind, name)]
	if !ok {
		return fmt.Errorf("%s plugin %q is not declared in the host spec: %w", kind, name, sdk.ErrNotFound)
	}
	if c.client == client {
		return nil
	}
	if err := client.Configure(ctx, c.req); err != nil {
		return fmt.Errorf("configure relaunched %s plugin %q: %w", kind, name, err)
	}
	c.client, c.recovered = client, nil
	return nil
}

// recovered reports whether client, the running process of runtime name,
// has recovered instance (its key).
func (e *Engine) recovered(name string, client sdk.Plugin, instance string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.configs[key(sdk.KindRuntime, name)]
	return c != nil && c.client == client && c.recovered[instance]
}

// markRecovered records whether client, the running process of runtime
// name, has recovered instance (its key): it has once it started or
// recovered the instance's workload, and no longer once it destroyed it.
func (e *Engine) markRecovered(name string, client sdk.Plugin, instance string, recovered bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.configs[key(sdk.KindRuntime, name)]
	switch {
	case c == nil || c.client != client:
	case recovered:
		if c.recovered == nil {
			c.recovered = map[string]bool{}
		}
		c.recovered[instance] = true
	default:
		delete(c.recovered, instance)
	}
}

// RuntimesWith returns the names of the configured runtimes that declare
// feature, sorted.
func (e *Engine) RuntimesWith(feature string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var names []string
	for _, b := range e.host.Plugins {
		if c := e.configs[key(b.Kind, b.Name)]; b.Kind == sdk.KindRuntime && c != nil && c.info.Capabilities.Has(feature) {
			names = append(names, b.Name)
		}
	}
	slices.Sort(names)
	return names
}

// WatchExits reports the exits of runtime name's instances, as
// sdk.ExitWatcher does, launching the runtime's plugin if it is not
// running. It fails with CodeUnsupported when the runtime does not declare
// sdk.FeatureWatch; it ends when the plugin process does.
func (e *Engine) WatchExits(ctx context.Context, name string, ready func(), fn func(sdk.ExitEvent) error) error {
	if !slices.Contains(e.RuntimesWith(sdk.FeatureWatch), name) {
		return sdk.Errorf(sdk.CodeUnsupported, "runtime %q does not declare %s", name, sdk.FeatureWatch)
	}
	rt, err := e.runtime(ctx, name)
	if err != nil {
		return err
	}
	w, ok := rt.(sdk.ExitWatcher)
	if !ok {
		return sdk.Errorf(sdk.CodeUnsupported, "the client of runtime %q cannot watch exits", name)
	}
	return w.WatchExits(ctx, ready, fn)
}

// CheckTenants checks the tenants' instances against their runtimes, once
// Configure has run: it decodes each instance's settings block against the
// runtime's instance schema (setting spec.Instance.Settings), checks its
// permissions against those the runtime declares, and has a runtime that
// declares sdk.FeatureValidate validate it. Refusals are diagnostics at
// the offending attribute; a runtime that fails otherwise is an error.
func (e *Engine) CheckTenants(ctx context.Context, tenants []*spec.Tenant) (hcl.Diagnostics, error) {
	var diags hcl.Diagnostics
	type validation struct {
		tenant string
		in     *spec.Instance
		diags  hcl.Diagnostics
	}
	var todo []*validation
	for _, t := range tenants {
		for i := range t.Instances {
			in := &t.Instances[i]
			c, ok := e.configs[key(sdk.KindRuntime, in.Runtime)]
			if !ok {
				return diags, fmt.Errorf("runtime %q of %s/%s is not configured", in.Runtime, t.Name, in.Name)
			}
			ds := spec.DecodeInstanceSettings(in, c.info.InstanceSchema)
			ds = append(ds, spec.CheckPermissions(in, c.info.Capabilities)...)
			diags = append(diags, ds...)
			if !ds.HasErrors() && c.info.Capabilities.Has(sdk.FeatureValidate) {
				todo = append(todo, &validation{tenant: t.Name, in: in})
			}
		}
	}
	// Runtimes validate many instances at once: a host of thousands must
	// not wait on thousands of calls one after another.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(validateConcurrency)
	for _, v := range todo {
		g.Go(func() error {
			in := v.in
			rt, err := e.runtime(gctx, in.Runtime)
			if err != nil {
				return err
			}
			req := &sdk.StartRequest{
				Instance:    sdk.Instance{Tenant: v.tenant, Name: in.Name},
				Artifact:    sdk.Artifact{Module: in.Module, Image: in.Image, Archive: in.Archive, Digest: in.Digest},
				Args:        in.Args,
				Env:         in.Env,
				Resources:   in.Resources,
				Permissions: in.Permissions,
				Settings:    in.Settings,
				Stdin:       in.Stdin,
			}
			// The state's source is made only at apply; the runtime checks
			// where it goes.
			if in.StateGuest != "" {
				req.Mounts = append(req.Mounts, sdk.Mount{Target: in.StateGuest, State: true})
			}
			for _, m := range in.Mounts {
				req.Mounts = append(req.Mounts, sdk.Mount{Source: m.Source, Target: m.Guest, ReadOnly: true, Type: sdk.MountBind})
			}
			if err := rt.Validate(gctx, req); errors.Is(err, sdk.ErrInvalid) {
				v.diags = hcl.Diagnostics{spec.InstanceDiagnostic(in, err)}
			} else if err != nil {
				return fmt.Errorf("runtime %q: validate %s/%s: %w", in.Runtime, v.tenant, in.Name, err)
			}
			return nil
		})
	}
	err := g.Wait()
	for _, v := range todo {
		diags = append(diags, v.diags...)
	}
	return diags, err
}

// validateConcurrency bounds the Validate calls CheckTenants has under way.
const validateConcurrency = 16

// runtimeInfo returns what the runtime name said of itself in Configure.
func (e *Engine) runtimeInfo(name string) sdk.Info {
	if c, ok := e.configs[key(sdk.KindRuntime, name)]; ok {
		return c.info
	}
	return sdk.Info{}
}

func (e *Engine) runtime(ctx context.Context, name string) (sdk.Runtime, error) {
	rt, err := e.plugins.Runtime(ctx, name, pluginhost.HostScope)
	if err != nil {
		return nil, err
	}
	return rt, e.reconfigure(ctx, sdk.KindRuntime, name, rt)
}

func (e *Engine) stateFS(ctx context.Context) (sdk.StateFS, error) {
	for _, b := range e.host.Plugins {
		if b.Kind != sdk.KindStateFS {
			continue
		}
		fs, err := e.plugins.StateFS(ctx, b.Name, pluginhost.HostScope)
		if err != nil {
			return nil, err
		}
		return fs, e.reconfigure(ctx, sdk.KindStateFS, b.Name, fs)
	}
	return nil, fmt.Errorf("the host spec declares no statefs plugin, and an instance asks for state: %w", sdk.ErrInvalid)
}

// Ledger returns the client of the ledger plugin name, launched and
// configured (again, when its process was relaunched).
func (e *Engine) Ledger(ctx context.Context, name string) (sdk.Ledger, error) {
	l, err := e.plugins.Ledger(ctx, name, pluginhost.HostScope)
	if err != nil {
		return nil, err
	}
	return l, e.reconfigure(ctx, sdk.KindLedger, name, l)
}

package main

import (
	"context"
	"flag"

	"github.com/kigumi/kigumi/core/pluginhost"
	"github.com/kigumi/kigumi/core/sdk/v2"
	"github.com/kigumi/kigumi/plugins/ledger-xrpl/xrplledger"
	"github.com/kigumi/kigumi/plugins/runtime-containerd/ctrruntime"
	"github.com/kigumi/kigumi/plugins/runtime-wasm/wasmruntime"
	"github.com/kigumi/kigumi/plugins/statefs-fuse/statefs"
)

// builtin is a first-party plugin compiled into this binary. The plugin
// host still runs it out of process, by re-executing this binary as
// `kigumi plugin serve KIND NAME`.
type builtin struct {
	pluginhost.Builtin
	serve func() sdk.ServeOpts
}

var builtinPlugins = []builtin{
	{pluginhost.Builtin{Kind: sdk.KindRuntime, Name: "wasm"}, func() sdk.ServeOpts {
		return sdk.ServeOpts{Runtime: wasmruntime.New()}
	}},
	{pluginhost.Builtin{Kind: sdk.KindRuntime, Name: "containerd"}, func() sdk.ServeOpts {
		return sdk.ServeOpts{Runtime: ctrruntime.New()}
	}},
	{pluginhost.Builtin{Kind: sdk.KindStateFS, Name: "fuse"}, func() sdk.ServeOpts {
		return sdk.ServeOpts{StateFS: statefs.New()}
	}},
	{pluginhost.Builtin{Kind: sdk.KindLedger, Name: "xrpl"}, func() sdk.ServeOpts {
		return sdk.ServeOpts{Ledger: xrplledger.New(sdk.NewLogger())}
	}},
}

func builtins() []pluginhost.Builtin {
	out := make([]pluginhost.Builtin, len(builtinPlugins))
	for i, b := range builtinPlugins {
		out[i] = b.Builtin
	}
	return out
}

var cmdPlugin = &command{
	name:    "plugin",
	args:    "serve KIND NAME",
	summary: "Serve a compiled-in plugin (used by kigumi itself)",
	help:    `Serves one of the first-party plugins compiled into kigumi over go-plugin's gRPC protocol. The plugin host runs this; people need not.`,
	hidden:  true,
	run: func(ctx context.Context, c *cli, fs *flag.FlagSet, args []string) int {
		if code, done := c.parse(fs, args, 3, 3); done {
			return code
		}
		if fs.Arg(0) != "serve" {
			c.errorf("unknown plugin subcommand %q", fs.Arg(0))
			return exitInvalid
		}
		kind, name := sdk.Kind(fs.Arg(1)), fs.Arg(2)
		for _, b := range builtinPlugins {
			if b.Kind == kind && b.Name == name {
				opts := b.serve()
				opts.Logger = sdk.NewLogger()
				sdk.Serve(opts)
				return exitOK
			}
		}
		c.errorf("no compiled-in %s plugin %q", kind, name)
		return exitInvalid
	},
}

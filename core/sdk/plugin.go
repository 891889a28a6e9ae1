package sdk

import (
	"context"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	pb "github.com/kigumi/kigumi/core/sdk/v2/proto"
)

// ProtocolVersion is the major version of the plugin protocol this SDK
// speaks. go-plugin negotiates it when a plugin starts: a host and a plugin
// of different major versions do not talk.
const ProtocolVersion = 2

// ProtocolMinor is the minor version of the protocol. A minor version only
// adds: fields, which older peers ignore, and calls, which older plugins
// answer with CodeUnsupported and which the host makes only on plugins that
// declare the call's feature.
const ProtocolMinor = 1

// Handshake is the go-plugin handshake shared by the host and its plugins.
// The cookie only tells a plugin binary that a Kigumi host started it; it is
// no security measure.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "KIGUMI_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "b7e6b2c4d1a94f0e8a3c5f7d9e1b2a46",
}

// PluginSets returns the plugin sets a host dispenses from, by protocol
// version. Each set holds a gRPC plugin per kind, named by the kind.
func PluginSets() map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		ProtocolVersion: {
			string(KindRuntime): &RuntimePlugin{},
			string(KindStateFS): &StateFSPlugin{},
			string(KindLedger):  &LedgerPlugin{},
		},
	}
}

// RuntimePlugin is the go-plugin gRPC plugin of the runtime kind. Impl is
// served on the plugin side; the host side dispenses an sdk.Runtime client.
type RuntimePlugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Impl is the served implementation; nil on the host side.
	Impl Runtime
}

// GRPCServer registers Impl's service.
func (p *RuntimePlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterRuntimeServer(s, &runtimeServer{impl: p.Impl})
	return nil
}

// GRPCClient returns an sdk.Runtime that calls the plugin over c.
func (p *RuntimePlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &runtimeClient{c: pb.NewRuntimeClient(c)}, nil
}

// StateFSPlugin is the go-plugin gRPC plugin of the statefs kind. Impl is
// served on the plugin side; the host side dispenses an sdk.StateFS client.
type StateFSPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Impl is the served implementation; nil on the host side.
	Impl StateFS
}

// GRPCServer registers Impl's service.
func (p *StateFSPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterStateFSServer(s, &stateFSServer{impl: p.Impl})
	return nil
}

// GRPCClient returns an sdk.StateFS that calls the plugin over c.
func (p *StateFSPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &stateFSClient{c: pb.NewStateFSClient(c)}, nil
}

// LedgerPlugin is the go-plugin gRPC plugin of the ledger kind. Impl is
// served on the plugin side; the host side dispenses an sdk.Ledger client.
type LedgerPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Impl is the served implementation; nil on the host side.
	Impl Ledger
}

// GRPCServer registers Impl's service.
func (p *LedgerPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pb.RegisterLedgerServer(s, &ledgerServer{impl: p.Impl})
	return nil
}

// GRPCClient returns an sdk.Ledger that calls the plugin over c.
func (p *LedgerPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &ledgerClient{c: pb.NewLedgerClient(c)}, nil
}

// ServeOpts says what a plugin binary serves. Set the kinds it implements.
type ServeOpts struct {
	Runtime Runtime
	StateFS StateFS
	Ledger  Ledger
	// Logger logs go-plugin's own messages. Nil means NewLogger().
	Logger hclog.Logger
}

// NewLogger returns the logger a plugin should log with: hclog JSON lines on
// the process's standard error, from Trace up, which the host forwards into
// its own log keeping each line's level. Make it before calling Serve, which
// redirects os.Stderr.
func NewLogger() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Level:      hclog.Trace,
		Output:     os.Stderr,
		JSONFormat: true,
	})
}

// Serve serves the kinds set in opts over gRPC to the host that started this
// process, and returns when the host closes the plugin. A plugin's main
// function calls it. It exits the process with status 1 if opts sets no kind
// or the process was not started by a Kigumi host.
func Serve(opts ServeOpts) {
	logger := opts.Logger
	if logger == nil {
		logger = NewLogger()
	}
	set := plugin.PluginSet{}
	if opts.Runtime != nil {
		set[string(KindRuntime)] = &RuntimePlugin{Impl: opts.Runtime}
	}
	if opts.StateFS != nil {
		set[string(KindStateFS)] = &StateFSPlugin{Impl: opts.StateFS}
	}
	if opts.Ledger != nil {
		set[string(KindLedger)] = &LedgerPlugin{Impl: opts.Ledger}
	}
	if len(set) == 0 {
		logger.Error("sdk.Serve: ServeOpts sets no plugin kind")
		os.Exit(1)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{ProtocolVersion: set},
		GRPCServer:       plugin.DefaultGRPCServer,
		Logger:           logger,
	})
}

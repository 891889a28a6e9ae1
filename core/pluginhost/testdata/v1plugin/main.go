// Command v1plugin is a plugin built against Kigumi's plugin protocol 1:
// the same handshake cookie as today's SDK, an older protocol version. The
// plugin host must refuse it with a message naming both versions.
package main

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// runtimeV1 serves nothing: the host must stop at the handshake.
type runtimeV1 struct{ plugin.NetRPCUnsupportedPlugin }

func (runtimeV1) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }

func (runtimeV1) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  1,
			MagicCookieKey:   "KIGUMI_PLUGIN_MAGIC_COOKIE",
			MagicCookieValue: "b7e6b2c4d1a94f0e8a3c5f7d9e1b2a46",
		},
		VersionedPlugins: map[int]plugin.PluginSet{1: {"runtime": runtimeV1{}}},
		GRPCServer:       plugin.DefaultGRPCServer,
	})
}

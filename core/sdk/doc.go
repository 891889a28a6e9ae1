// Package sdk is Kigumi's public plugin SDK.
//
// It defines the Go interfaces of the three plugin kinds (Runtime, StateFS and
// Ledger), the versioned gRPC protocol they speak over hashicorp/go-plugin,
// typed errors that survive the wire, and Serve, the one call a plugin's main
// function makes. Outside plugins import this package (and its subpackages)
// alone: it never imports Kigumi's core internals.
package sdk

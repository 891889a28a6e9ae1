// Package proto holds the generated Go code of Kigumi's plugin protocol,
// the gRPC package kigumi.plugin.v2 defined in plugin.proto. Plugins do not
// use it directly: package sdk converts between it and the SDK's Go types.
//
// Regenerating needs protoc, protoc-gen-go and protoc-gen-go-grpc on PATH.
package proto

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative plugin.proto

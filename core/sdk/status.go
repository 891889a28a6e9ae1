package sdk

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/kigumi/kigumi/core/sdk/v2/proto"
)

// grpcCodes maps error codes to gRPC status codes.
var grpcCodes = map[Code]codes.Code{
	CodeInvalid:     codes.InvalidArgument,
	CodeNotFound:    codes.NotFound,
	CodeUnavailable: codes.Unavailable,
	CodeUnsupported: codes.Unimplemented,
	CodeInternal:    codes.Internal,
}

// toStatus converts an error a plugin implementation returned into a gRPC
// status error carrying a pb.Error detail. An error with no *Error in its
// chain gets CodeInternal, or CodeUnavailable if it is a context error.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	d := &pb.Error{Code: string(CodeInternal), Message: err.Error()}
	gc := codes.Internal
	var e *Error
	switch {
	case errors.As(err, &e):
		d.Attribute, d.Transient = e.Attribute, e.Transient
		if err == error(e) {
			d.Message = e.Message
			if d.Message == "" && e.Err != nil {
				d.Message = e.Err.Error()
			}
		}
		if c, ok := grpcCodes[e.Code]; ok {
			d.Code, gc = string(e.Code), c
		}
	case errors.Is(err, context.Canceled):
		d.Code, gc = string(CodeUnavailable), codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		d.Code, gc = string(CodeUnavailable), codes.DeadlineExceeded
	}
	st, derr := status.New(gc, d.Message).WithDetails(d)
	if derr != nil {
		return status.Error(gc, d.Message)
	}
	return st.Err()
}

// fromStatus converts the error of a call made with ctx back into an *Error.
// A cancelled or expired ctx yields ctx.Err(); an *Error already in err's
// chain (from a client interceptor) is kept; a status without a pb.Error
// detail is a transport failure, reported as CodeUnavailable.
func fromStatus(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &Error{Code: CodeUnavailable, Message: "plugin exited or is unreachable: " + err.Error(), Err: err}
	}
	st, ok := status.FromError(err)
	if !ok {
		return &Error{Code: CodeInternal, Err: err}
	}
	for _, d := range st.Details() {
		if d, ok := d.(*pb.Error); ok {
			c := Code(d.Code)
			if _, known := grpcCodes[c]; !known {
				c = CodeInternal
			}
			return &Error{Code: c, Attribute: d.Attribute, Message: d.Message, Transient: d.Transient}
		}
	}
	switch st.Code() {
	case codes.Unavailable, codes.Canceled:
		return &Error{Code: CodeUnavailable, Message: "plugin exited or is unreachable: " + st.Message(), Err: err}
	case codes.DeadlineExceeded:
		return context.DeadlineExceeded
	case codes.Unimplemented:
		// A plugin of an older minor version, without the call.
		return &Error{Code: CodeUnsupported, Message: "the plugin does not implement this call: " + st.Message(), Err: err}
	default:
		return &Error{Code: CodeInternal, Message: "plugin call failed: " + st.Code().String() + ": " + st.Message(), Err: err}
	}
}

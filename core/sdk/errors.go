package sdk

import (
	"context"
	"errors"
	"fmt"
)

// Code classifies an error that crosses the plugin boundary.
type Code string

// The error codes.
const (
	// CodeInvalid: the request or a setting is invalid. Retrying won't help.
	CodeInvalid Code = "invalid"
	// CodeNotFound: the thing a handle refers to does not exist.
	CodeNotFound Code = "not_found"
	// CodeUnavailable: the plugin or something it needs is not available,
	// for example because the plugin process exited. A retry may help.
	CodeUnavailable Code = "unavailable"
	// CodeUnsupported: the plugin does not implement the call, as when
	// it does not declare the call's feature, or predates the call.
	CodeUnsupported Code = "unsupported"
	// CodeInternal: anything else.
	CodeInternal Code = "internal"
)

// Error is an error typed by Code. It keeps its code across the wire.
type Error struct {
	Code Code
	// Attribute names the setting or request field at fault, if any.
	Attribute string
	// Message is the whole message; when empty, Err's message is used.
	Message string
	// Transient marks an error whose code alone says a retry won't help,
	// but which may pass (a module not there yet, a full disk). See
	// Retryable.
	Transient bool
	// Err is the wrapped cause, on the side that made the error. It does
	// not cross the wire; its text does, through Message.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	msg := e.Message
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	if e.Attribute != "" {
		return fmt.Sprintf("%s: %s: %s", e.Code, e.Attribute, msg)
	}
	return fmt.Sprintf("%s: %s", e.Code, msg)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is the sentinel of e's code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Message == "" && t.Attribute == "" && t.Err == nil && !t.Transient && t.Code == e.Code
}

// Sentinels for errors.Is.
var (
	ErrInvalid     = &Error{Code: CodeInvalid}
	ErrNotFound    = &Error{Code: CodeNotFound}
	ErrUnavailable = &Error{Code: CodeUnavailable}
	ErrUnsupported = &Error{Code: CodeUnsupported}
	ErrInternal    = &Error{Code: CodeInternal}
)

// Errorf returns an *Error with code c.
func Errorf(c Code, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: c, Message: err.Error(), Err: errors.Unwrap(err)}
}

// InvalidAttribute returns a CodeInvalid error about the setting attr.
func InvalidAttribute(attr, format string, args ...any) error {
	return &Error{Code: CodeInvalid, Attribute: attr, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns err's code: that of the first *Error in its chain, or
// CodeInternal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// Retryable reports whether retrying the call that failed with err may
// succeed. It is false for nil, for a cancelled context, and for an *Error
// with CodeInvalid, CodeNotFound or CodeUnsupported that is not Transient:
// those are permanent until the request changes. Every other error,
// CodeUnavailable, CodeInternal and errors that are no *Error among them, is
// retryable: an agent retries it with backoff.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var e *Error
	if !errors.As(err, &e) {
		return true
	}
	switch e.Code {
	case CodeInvalid, CodeNotFound, CodeUnsupported:
		return e.Transient
	}
	return true
}

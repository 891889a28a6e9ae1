package policy

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/functions"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
)

// The cost model. A call that produces a string, bytes, a list or a map is
// charged for the size of what it produces, at load time (sizeEstimator)
// and at run time (sizeCharger), so that growth such as chained replace
// calls runs into costLimit: at load time when the sizes of the input,
// bounded by estimatedStringSize and estimatedCollectionSize, make the
// estimate too high, else at run time. A call whose result could grow by more than a
// constant factor of its inputs in one step (replace, join, format) is
// guarded: it refuses, before it allocates, to produce more than
// maxProduced bytes, since the cost limit is only checked between calls.
const maxProduced = costLimit

// sizeEstimator bounds the size of every string, list and map in the input
// for cost estimation, and the size of what calls produce.
type sizeEstimator struct{}

// EstimateSize implements checker.CostEstimator.
func (sizeEstimator) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	switch n.Type().Kind() {
	case types.StringKind, types.BytesKind:
		return &checker.SizeEstimate{Max: estimatedStringSize}
	case types.ListKind, types.MapKind:
		return &checker.SizeEstimate{Max: estimatedCollectionSize}
	}
	return nil
}

// EstimateCallCost implements checker.CostEstimator. The calls that may
// produce more than their inputs are charged, as at run time, for the
// largest result they may produce and their inputs; the library's own
// estimates are used for the others.
func (e sizeEstimator) EstimateCallCost(_, overloadID string, target *checker.AstNode, args []checker.AstNode) *checker.CallEstimate {
	if target != nil {
		args = append([]checker.AstNode{*target}, args...)
	}
	var result uint64
	switch overloadID {
	case "string_replace_string_string", "string_replace_string_string_int":
		// With an empty old string, new is inserted around every character.
		s, repl := e.size(args[0]), e.size(args[2])
		result = add(s, mul(add(s, 1), repl))
	case "list_join", "list_join_string":
		n := e.size(args[0])
		result = mul(n, estimatedStringSize)
		if len(args) > 1 {
			result = add(result, mul(n, e.size(args[1])))
		}
	case "string_format":
		result = add(e.size(args[0]), mul(e.size(args[1]), formatElemSize))
	case "strings_quote":
		result = add(mul(e.size(args[0]), 6), 2)
	case "string_split_string", "string_split_string_int":
		result = add(e.size(args[0]), 1)
	default:
		return nil
	}
	size := result
	for _, a := range args {
		size = add(size, e.size(a))
	}
	return &checker.CallEstimate{
		CostEstimate: checker.CostEstimate{Min: 1, Max: traversal(size)},
		ResultSize:   &checker.SizeEstimate{Min: 0, Max: result},
	}
}

// size is the largest size n may have: its computed size, else the
// estimator's bound, else 1 for a scalar.
func (e sizeEstimator) size(n checker.AstNode) uint64 {
	if s := n.ComputedSize(); s != nil {
		return s.Max
	}
	if s := e.EstimateSize(n); s != nil {
		return s.Max
	}
	return 1
}

// add and mul saturate at math.MaxUint64.
func add(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}

func mul(a, b uint64) uint64 {
	if a != 0 && b > math.MaxUint64/a {
		return math.MaxUint64
	}
	return a * b
}

// sizeCharger is the run-time side of the cost model: a call that produces
// a string, bytes, a list or a map costs a tenth of the size of its result
// and its inputs, as the library charges for traversing a string.
type sizeCharger struct{}

// CallCost implements interpreter.ActualCostEstimator.
func (sizeCharger) CallCost(_, _ string, args []ref.Val, result ref.Val) *uint64 {
	if !isSized(result) {
		return nil
	}
	size := valSize(result)
	for _, a := range args {
		size = add(size, valSize(a))
	}
	cost := traversal(size)
	return &cost
}

// traversal is the cost of going through size bytes or entries.
func traversal(size uint64) uint64 {
	return add(size/10, 1)
}

// isSized reports whether v is a string, bytes, a list or a map.
func isSized(v ref.Val) bool {
	switch v.(type) {
	case types.String, types.Bytes, traits.Lister, traits.Mapper:
		return true
	}
	return false
}

// valSize is the size of v: bytes for a string or bytes, entries for a
// list or map, else 1.
func valSize(v ref.Val) uint64 {
	switch v := v.(type) {
	case types.String:
		return uint64(len(v))
	case types.Bytes:
		return uint64(len(v))
	case traits.Sizer:
		if n, ok := v.Size().(types.Int); ok && n > 0 {
			return uint64(n)
		}
	}
	return 1
}

// formatElemSize bounds how many bytes format writes per byte of its
// arguments (escapes) or per scalar (a double written in full).
const formatElemSize = 400

// deepSize returns the size of v, counting the elements of nested lists
// and maps and the bytes of strings, but stops counting past budget: the
// count costs at most budget steps, even when lists share elements.
func deepSize(v ref.Val, budget uint64) uint64 {
	var size uint64
	var walk func(v ref.Val)
	walk = func(v ref.Val) {
		if size > budget {
			return
		}
		switch v := v.(type) {
		case types.String:
			size = add(size, uint64(len(v))+1)
		case types.Bytes:
			size = add(size, uint64(len(v))+1)
		case traits.Lister:
			size++
			it := v.Iterator()
			for it.HasNext() == types.True && size <= budget {
				walk(it.Next())
			}
		case traits.Mapper:
			size++
			it := v.Iterator()
			for it.HasNext() == types.True && size <= budget {
				k := it.Next()
				walk(k)
				walk(v.Get(k))
			}
		default:
			size++
		}
	}
	walk(v)
	return size
}

// guards returns options that replace the bindings of base's replace,
// join and format overloads with guarded ones: each computes the size of
// its result before producing it, and refuses beyond maxProduced.
func guards(base *cel.Env) ([]cel.EnvOption, error) {
	bound := map[string]func(args []ref.Val) uint64{
		"string_replace_string_string":     replaceSize,
		"string_replace_string_string_int": replaceSize,
		"list_join":                        joinSize,
		"list_join_string":                 joinSize,
		"string_format":                    formatSize,
	}
	var opts []cel.EnvOption
	for _, name := range []string{"replace", "join", "format"} {
		fn := base.Functions()[name]
		if fn == nil {
			return nil, fmt.Errorf("no function %s to guard", name)
		}
		bindings, err := fn.Bindings()
		if err != nil {
			return nil, fmt.Errorf("bindings of %s: %w", name, err)
		}
		byID := map[string]*functions.Overload{}
		for _, b := range bindings {
			byID[b.Operator] = b
		}
		for _, o := range fn.OverloadDecls() {
			size, orig := bound[o.ID()], byID[o.ID()]
			if size == nil || orig == nil {
				return nil, fmt.Errorf("cannot guard overload %s of %s", o.ID(), name)
			}
			call := callOf(orig)
			guarded := func(args ...ref.Val) ref.Val {
				if n := size(args); n > maxProduced {
					return types.NewErr("%s would produce %d bytes, more than the limit of %d", name, n, maxProduced)
				}
				return call(args)
			}
			opts = append(opts, cel.Function(name, cel.MemberOverload(o.ID(), o.ArgTypes(), o.ResultType(), cel.FunctionBinding(guarded))))
		}
	}
	return opts, nil
}

// callOf returns a function calling the binding o with its arguments.
func callOf(o *functions.Overload) func(args []ref.Val) ref.Val {
	return func(args []ref.Val) ref.Val {
		switch {
		case len(args) == 1 && o.Unary != nil:
			return o.Unary(args[0])
		case len(args) == 2 && o.Binary != nil:
			return o.Binary(args[0], args[1])
		case o.Function != nil:
			return o.Function(args...)
		}
		return types.NewErr("no binding for %s with %d arguments", o.Operator, len(args))
	}
}

// replaceSize is the exact size of str.replace(old, new[, n]).
func replaceSize(args []ref.Val) uint64 {
	str, ok1 := args[0].(types.String)
	old, ok2 := args[1].(types.String)
	repl, ok3 := args[2].(types.String)
	if !ok1 || !ok2 || !ok3 {
		return 0 // the binding reports the type error
	}
	n := strings.Count(string(str), string(old)) // runes+1 for an empty old
	if old == "" {
		n = utf8.RuneCountInString(string(str)) + 1
	}
	if len(args) > 3 {
		if limit, ok := args[3].(types.Int); ok && limit >= 0 && int64(n) > int64(limit) {
			n = int(limit)
		}
	}
	grow := int64(len(repl)) - int64(len(old))
	if grow <= 0 {
		return uint64(len(str))
	}
	return add(uint64(len(str)), mul(uint64(n), uint64(grow)))
}

// joinSize is the exact size of list.join([sep]).
func joinSize(args []ref.Val) uint64 {
	list, ok := args[0].(traits.Lister)
	if !ok {
		return 0
	}
	var sep uint64
	if len(args) > 1 {
		if s, ok := args[1].(types.String); ok {
			sep = uint64(len(s))
		}
	}
	var size uint64
	it := list.Iterator()
	for it.HasNext() == types.True {
		if s, ok := it.Next().(types.String); ok {
			size = add(size, uint64(len(s)))
		}
		size = add(size, sep)
	}
	return size
}

// formatSize bounds the size of fmt.format(args): the format, plus for
// each argument its deep size times formatElemSize (escapes, digits),
// plus the largest precision a clause asks for.
func formatSize(args []ref.Val) uint64 {
	format, ok := args[0].(types.String)
	if !ok {
		return 0
	}
	n := add(uint64(len(format)), mul(deepSize(args[1], maxProduced), formatElemSize))
	return add(n, mul(maxPrecision(string(format)), valSize(args[1])))
}

// maxPrecision returns the largest precision, as in "%.3f", that the
// format asks for, saturating.
func maxPrecision(format string) uint64 {
	var most uint64
	for i := 0; i+1 < len(format); i++ {
		if format[i] != '%' || format[i+1] != '.' {
			continue
		}
		var p uint64
		for j := i + 2; j < len(format) && format[j] >= '0' && format[j] <= '9'; j++ {
			p = add(mul(p, 10), uint64(format[j]-'0'))
		}
		most = max(most, p)
	}
	return most
}

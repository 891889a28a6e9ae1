package sdk

import "context"

// Progress reports how far a long step of Start has come, such as an image
// pull. Counts that a step does not know are zero.
type Progress struct {
	// Step names what is in progress, such as "pulling".
	Step string
	// Subject is what the step works on, such as an image reference.
	Subject string
	// PartsDone of Parts, such as an image's layers, are done.
	PartsDone, Parts int64
	// Unit names the parts, in the plural, such as "layers".
	Unit string
	// BytesDone of BytesTotal are done. BytesTotal may grow while the
	// step learns of more parts.
	BytesDone, BytesTotal int64
}

type progressKey struct{}

// WithProgress returns a context whose Start reports progress to fn. The
// host attaches one only for a runtime that declares FeatureProgress; over
// the plugin boundary, Start then streams the reports. fn may be called
// from any goroutine, until Start returns.
func WithProgress(ctx context.Context, fn func(Progress)) context.Context {
	return context.WithValue(ctx, progressKey{}, fn)
}

// ReportProgress reports p to the progress function of ctx, if it has one.
// A runtime declaring FeatureProgress calls it during Start, never after
// Start returns, and a few times a second at most.
func ReportProgress(ctx context.Context, p Progress) {
	if fn := progressFunc(ctx); fn != nil {
		fn(p)
	}
}

func progressFunc(ctx context.Context) func(Progress) {
	fn, _ := ctx.Value(progressKey{}).(func(Progress))
	return fn
}

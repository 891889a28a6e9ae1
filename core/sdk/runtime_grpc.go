package sdk

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"

	pb "github.com/kigumi/kigumi/core/sdk/v2/proto"
)

// runtimeClient is the host side of a runtime plugin.
type runtimeClient struct {
	c pb.RuntimeClient
}

var _ Runtime = (*runtimeClient)(nil)

func (r *runtimeClient) Info(ctx context.Context) (Info, error) {
	m, err := r.c.Info(ctx, &pb.Empty{})
	if err != nil {
		return Info{}, fromStatus(ctx, err)
	}
	return infoFromPB(m), nil
}

func (r *runtimeClient) Configure(ctx context.Context, req ConfigureRequest) error {
	m, err := configureToPB(req)
	if err != nil {
		return err
	}
	_, err = r.c.Configure(ctx, m)
	return fromStatus(ctx, err)
}

func (r *runtimeClient) PrepareTenant(ctx context.Context, req *TenantRequest) (Handle, error) {
	if req == nil {
		return Handle{}, errNilRequest("prepare tenant")
	}
	m, err := r.c.PrepareTenant(ctx, tenantToPB(req))
	if err != nil {
		return Handle{}, fromStatus(ctx, err)
	}
	return handleFromPB(m), nil
}

func (r *runtimeClient) ReleaseTenant(ctx context.Context, h Handle) error {
	_, err := r.c.ReleaseTenant(ctx, handleToPB(h))
	return fromStatus(ctx, err)
}

func (r *runtimeClient) Validate(ctx context.Context, req *StartRequest) error {
	if req == nil {
		return errNilRequest("validate")
	}
	m, err := startToPB(req)
	if err != nil {
		return err
	}
	_, err = r.c.Validate(ctx, m)
	return fromStatus(ctx, err)
}

func (r *runtimeClient) Start(ctx context.Context, req *StartRequest) (Handle, error) {
	if req == nil {
		return Handle{}, errNilRequest("start")
	}
	sm, err := startToPB(req)
	if err != nil {
		return Handle{}, err
	}
	if fn := progressFunc(ctx); fn != nil {
		return r.startProgress(ctx, sm, fn)
	}
	m, err := r.c.Start(ctx, sm)
	if err != nil {
		return Handle{}, fromStatus(ctx, err)
	}
	return handleFromPB(m), nil
}

// startProgress is Start over the StartProgress stream, feeding its
// progress events to fn until the handle arrives.
func (r *runtimeClient) startProgress(ctx context.Context, sm *pb.StartRequest, fn func(Progress)) (Handle, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.c.StartProgress(ctx, sm)
	if err != nil {
		return Handle{}, fromStatus(ctx, err)
	}
	var h *pb.Handle
	err = receive(ctx, stream, func(m *pb.StartEvent) error {
		switch {
		case h != nil:
			return Errorf(CodeInternal, "start: an event after the handle")
		case m.GetHandle() != nil:
			h = m.GetHandle()
		case m.GetProgress() != nil:
			fn(progressFromPB(m.GetProgress()))
		}
		return nil
	})
	if err == nil && h == nil {
		err = Errorf(CodeInternal, "start: the stream ended without a handle")
	}
	if err != nil {
		return Handle{}, err
	}
	return handleFromPB(h), nil
}

func (r *runtimeClient) Stop(ctx context.Context, h Handle, timeout time.Duration) error {
	_, err := r.c.Stop(ctx, &pb.StopRequest{Handle: handleToPB(h), Timeout: durationpb.New(timeout)})
	return fromStatus(ctx, err)
}

func (r *runtimeClient) Destroy(ctx context.Context, h Handle) error {
	_, err := r.c.Destroy(ctx, handleToPB(h))
	return fromStatus(ctx, err)
}

func (r *runtimeClient) Inspect(ctx context.Context, h Handle) (Status, error) {
	m, err := r.c.Inspect(ctx, handleToPB(h))
	if err != nil {
		return Status{}, fromStatus(ctx, err)
	}
	return statusFromPB(m), nil
}

func (r *runtimeClient) Recover(ctx context.Context, h Handle) (Handle, error) {
	m, err := r.c.Recover(ctx, handleToPB(h))
	if err != nil {
		return Handle{}, fromStatus(ctx, err)
	}
	return handleFromPB(m), nil
}

func (r *runtimeClient) Logs(ctx context.Context, h Handle, opts LogOptions, fn func([]byte) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.c.Logs(ctx, &pb.LogsRequest{Handle: handleToPB(h), Stream: string(opts.Stream), Follow: opts.Follow})
	if err != nil {
		return fromStatus(ctx, err)
	}
	return receive(ctx, stream, func(m *pb.LogChunk) error { return fn(m.Data) })
}

// watchReady is the header a runtime's WatchExits stream sends once the
// runtime reports every later exit.
const watchReady = "kigumi-watch-ready"

var _ ExitWatcher = (*runtimeClient)(nil)

func (r *runtimeClient) WatchExits(ctx context.Context, ready func(), fn func(ExitEvent) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.c.WatchExits(ctx, &pb.Empty{})
	if err != nil {
		return fromStatus(ctx, err)
	}
	md, err := stream.Header()
	if err != nil {
		return fromStatus(ctx, err)
	}
	if len(md.Get(watchReady)) > 0 { // else the stream ended without starting
		ready()
	}
	return receive(ctx, stream, func(m *pb.ExitEvent) error { return fn(exitFromPB(m)) })
}

// receive feeds a server stream's messages to fn until the stream ends (nil),
// fails (its converted error) or fn fails (fn's error, as is).
func receive[T any](ctx context.Context, stream grpc.ServerStreamingClient[T], fn func(*T) error) error {
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fromStatus(ctx, err)
		}
		if err := fn(m); err != nil {
			return err
		}
	}
}

// runtimeServer is the plugin side of a runtime plugin.
type runtimeServer struct {
	pb.UnimplementedRuntimeServer
	impl Runtime
}

func (s *runtimeServer) Info(ctx context.Context, _ *pb.Empty) (*pb.PluginInfo, error) {
	i, err := s.impl.Info(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return infoToPB(i), nil
}

func (s *runtimeServer) Configure(ctx context.Context, m *pb.ConfigureRequest) (*pb.Empty, error) {
	req, err := configureFromPB(m)
	if err == nil {
		err = s.impl.Configure(ctx, req)
	}
	return &pb.Empty{}, toStatus(err)
}

func (s *runtimeServer) PrepareTenant(ctx context.Context, m *pb.TenantRequest) (*pb.Handle, error) {
	h, err := s.impl.PrepareTenant(ctx, tenantFromPB(m))
	if err != nil {
		return nil, toStatus(err)
	}
	return handleToPB(h), nil
}

func (s *runtimeServer) ReleaseTenant(ctx context.Context, m *pb.Handle) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(s.impl.ReleaseTenant(ctx, handleFromPB(m)))
}

func (s *runtimeServer) Validate(ctx context.Context, m *pb.StartRequest) (*pb.Empty, error) {
	req, err := startFromPB(m)
	if err == nil {
		err = s.impl.Validate(ctx, req)
	}
	return &pb.Empty{}, toStatus(err)
}

func (s *runtimeServer) Start(ctx context.Context, m *pb.StartRequest) (*pb.Handle, error) {
	req, err := startFromPB(m)
	if err != nil {
		return nil, toStatus(err)
	}
	h, err := s.impl.Start(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	return handleToPB(h), nil
}

func (s *runtimeServer) StartProgress(m *pb.StartRequest, stream grpc.ServerStreamingServer[pb.StartEvent]) error {
	req, err := startFromPB(m)
	if err != nil {
		return toStatus(err)
	}
	// Reports are sent one at a time, and none once Start has returned.
	var mu sync.Mutex
	done := false
	ctx := WithProgress(stream.Context(), func(p Progress) {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			_ = stream.Send(&pb.StartEvent{Event: &pb.StartEvent_Progress{Progress: progressToPB(p)}})
		}
	})
	h, err := s.impl.Start(ctx, req)
	mu.Lock()
	done = true
	mu.Unlock()
	if err != nil {
		return toStatus(err)
	}
	return stream.Send(&pb.StartEvent{Event: &pb.StartEvent_Handle{Handle: handleToPB(h)}})
}

func (s *runtimeServer) Stop(ctx context.Context, m *pb.StopRequest) (*pb.Empty, error) {
	timeout, err := durationFromPB(m.Timeout)
	if err == nil {
		err = s.impl.Stop(ctx, handleFromPB(m.Handle), timeout)
	}
	return &pb.Empty{}, toStatus(err)
}

func (s *runtimeServer) Destroy(ctx context.Context, m *pb.Handle) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(s.impl.Destroy(ctx, handleFromPB(m)))
}

func (s *runtimeServer) Inspect(ctx context.Context, m *pb.Handle) (*pb.Status, error) {
	st, err := s.impl.Inspect(ctx, handleFromPB(m))
	if err != nil {
		return nil, toStatus(err)
	}
	return statusToPB(st), nil
}

func (s *runtimeServer) Recover(ctx context.Context, m *pb.Handle) (*pb.Handle, error) {
	h, err := s.impl.Recover(ctx, handleFromPB(m))
	if err != nil {
		return nil, toStatus(err)
	}
	return handleToPB(h), nil
}

func (s *runtimeServer) Logs(m *pb.LogsRequest, stream grpc.ServerStreamingServer[pb.LogChunk]) error {
	opts := LogOptions{Stream: LogStream(m.Stream), Follow: m.Follow}
	return toStatus(s.impl.Logs(stream.Context(), handleFromPB(m.Handle), opts, func(b []byte) error {
		return stream.Send(&pb.LogChunk{Data: b})
	}))
}

func (s *runtimeServer) WatchExits(_ *pb.Empty, stream grpc.ServerStreamingServer[pb.ExitEvent]) error {
	w, ok := s.impl.(ExitWatcher)
	if !ok {
		return toStatus(Errorf(CodeUnsupported, "the runtime does not implement %s", FeatureWatch))
	}
	ready := func() { _ = stream.SendHeader(metadata.Pairs(watchReady, "1")) }
	return toStatus(w.WatchExits(stream.Context(), ready, func(e ExitEvent) error { return stream.Send(exitToPB(e)) }))
}

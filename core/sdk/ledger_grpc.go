package sdk

import (
	"context"

	"google.golang.org/grpc"

	pb "github.com/kigumi/kigumi/core/sdk/v2/proto"
)

// ledgerClient is the host side of a ledger plugin.
type ledgerClient struct {
	c pb.LedgerClient
}

var _ Ledger = (*ledgerClient)(nil)

func (l *ledgerClient) Info(ctx context.Context) (Info, error) {
	m, err := l.c.Info(ctx, &pb.Empty{})
	if err != nil {
		return Info{}, fromStatus(ctx, err)
	}
	return infoFromPB(m), nil
}

func (l *ledgerClient) Configure(ctx context.Context, req ConfigureRequest) error {
	m, err := configureToPB(req)
	if err != nil {
		return err
	}
	_, err = l.c.Configure(ctx, m)
	return fromStatus(ctx, err)
}

func (l *ledgerClient) Events(ctx context.Context, cursor string, fn func(LeaseEvent) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := l.c.Events(ctx, &pb.EventsRequest{Cursor: cursor})
	if err != nil {
		return fromStatus(ctx, err)
	}
	return receive(ctx, stream, func(m *pb.LeaseEvent) error { return fn(leaseEventFromPB(m)) })
}

func (l *ledgerClient) Reply(ctx context.Context, r LeaseReply) error {
	_, err := l.c.Reply(ctx, replyToPB(r))
	return fromStatus(ctx, err)
}

// ledgerServer is the plugin side of a ledger plugin.
type ledgerServer struct {
	pb.UnimplementedLedgerServer
	impl Ledger
}

func (s *ledgerServer) Info(ctx context.Context, _ *pb.Empty) (*pb.PluginInfo, error) {
	i, err := s.impl.Info(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return infoToPB(i), nil
}

func (s *ledgerServer) Configure(ctx context.Context, m *pb.ConfigureRequest) (*pb.Empty, error) {
	req, err := configureFromPB(m)
	if err == nil {
		err = s.impl.Configure(ctx, req)
	}
	return &pb.Empty{}, toStatus(err)
}

func (s *ledgerServer) Events(m *pb.EventsRequest, stream grpc.ServerStreamingServer[pb.LeaseEvent]) error {
	return toStatus(s.impl.Events(stream.Context(), m.Cursor, func(e LeaseEvent) error {
		return stream.Send(leaseEventToPB(e))
	}))
}

func (s *ledgerServer) Reply(ctx context.Context, m *pb.LeaseReply) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(s.impl.Reply(ctx, replyFromPB(m)))
}

package sdk

import (
	"context"

	pb "github.com/kigumi/kigumi/core/sdk/v2/proto"
)

// stateFSClient is the host side of a statefs plugin.
type stateFSClient struct {
	c pb.StateFSClient
}

var (
	_ StateFS           = (*stateFSClient)(nil)
	_ CheckpointMounter = (*stateFSClient)(nil)
)

func (s *stateFSClient) Info(ctx context.Context) (Info, error) {
	m, err := s.c.Info(ctx, &pb.Empty{})
	if err != nil {
		return Info{}, fromStatus(ctx, err)
	}
	return infoFromPB(m), nil
}

func (s *stateFSClient) Configure(ctx context.Context, req ConfigureRequest) error {
	m, err := configureToPB(req)
	if err != nil {
		return err
	}
	_, err = s.c.Configure(ctx, m)
	return fromStatus(ctx, err)
}

func (s *stateFSClient) Provision(ctx context.Context, req *ProvisionRequest) (Handle, error) {
	if req == nil {
		return Handle{}, errNilRequest("provision")
	}
	m, err := s.c.Provision(ctx, provisionToPB(req))
	if err != nil {
		return Handle{}, fromStatus(ctx, err)
	}
	return handleFromPB(m), nil
}

func (s *stateFSClient) Mount(ctx context.Context, h Handle) (Mount, error) {
	m, err := s.c.Mount(ctx, handleToPB(h))
	if err != nil {
		return Mount{}, fromStatus(ctx, err)
	}
	return mountFromPB(m), nil
}

func (s *stateFSClient) Unmount(ctx context.Context, h Handle) error {
	_, err := s.c.Unmount(ctx, handleToPB(h))
	return fromStatus(ctx, err)
}

func (s *stateFSClient) Hash(ctx context.Context, h Handle) ([]byte, error) {
	m, err := s.c.Hash(ctx, handleToPB(h))
	if err != nil {
		return nil, fromStatus(ctx, err)
	}
	return m.Digest, nil
}

func (s *stateFSClient) Usage(ctx context.Context, h Handle) (Usage, error) {
	m, err := s.c.Usage(ctx, handleToPB(h))
	if err != nil {
		return Usage{}, fromStatus(ctx, err)
	}
	return usageFromPB(m), nil
}

func (s *stateFSClient) Checkpoint(ctx context.Context, h Handle, name string) (Checkpoint, error) {
	m, err := s.c.Checkpoint(ctx, &pb.CheckpointRequest{Handle: handleToPB(h), Name: name})
	if err != nil {
		return Checkpoint{}, fromStatus(ctx, err)
	}
	return checkpointFromPB(m), nil
}

func (s *stateFSClient) Checkpoints(ctx context.Context, h Handle) ([]Checkpoint, error) {
	m, err := s.c.Checkpoints(ctx, handleToPB(h))
	if err != nil {
		return nil, fromStatus(ctx, err)
	}
	var list []Checkpoint
	for _, c := range m.Checkpoints {
		list = append(list, checkpointFromPB(c))
	}
	return list, nil
}

func (s *stateFSClient) Rollback(ctx context.Context, h Handle, name string) error {
	_, err := s.c.Rollback(ctx, &pb.CheckpointRequest{Handle: handleToPB(h), Name: name})
	return fromStatus(ctx, err)
}

func (s *stateFSClient) MountCheckpoint(ctx context.Context, h Handle, name string) (Mount, error) {
	m, err := s.c.MountCheckpoint(ctx, &pb.CheckpointRequest{Handle: handleToPB(h), Name: name})
	if err != nil {
		return Mount{}, fromStatus(ctx, err)
	}
	return mountFromPB(m), nil
}

func (s *stateFSClient) UnmountCheckpoint(ctx context.Context, h Handle, name string) error {
	_, err := s.c.UnmountCheckpoint(ctx, &pb.CheckpointRequest{Handle: handleToPB(h), Name: name})
	return fromStatus(ctx, err)
}

func (s *stateFSClient) Recover(ctx context.Context, h Handle) (Handle, error) {
	m, err := s.c.Recover(ctx, handleToPB(h))
	if err != nil {
		return Handle{}, fromStatus(ctx, err)
	}
	return handleFromPB(m), nil
}

func (s *stateFSClient) Deprovision(ctx context.Context, h Handle) error {
	_, err := s.c.Deprovision(ctx, handleToPB(h))
	return fromStatus(ctx, err)
}

// stateFSServer is the plugin side of a statefs plugin.
type stateFSServer struct {
	pb.UnimplementedStateFSServer
	impl StateFS
}

func (s *stateFSServer) Info(ctx context.Context, _ *pb.Empty) (*pb.PluginInfo, error) {
	i, err := s.impl.Info(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return infoToPB(i), nil
}

func (s *stateFSServer) Configure(ctx context.Context, m *pb.ConfigureRequest) (*pb.Empty, error) {
	req, err := configureFromPB(m)
	if err == nil {
		err = s.impl.Configure(ctx, req)
	}
	return &pb.Empty{}, toStatus(err)
}

func (s *stateFSServer) Provision(ctx context.Context, m *pb.ProvisionRequest) (*pb.Handle, error) {
	h, err := s.impl.Provision(ctx, provisionFromPB(m))
	if err != nil {
		return nil, toStatus(err)
	}
	return handleToPB(h), nil
}

func (s *stateFSServer) Mount(ctx context.Context, m *pb.Handle) (*pb.MountPoint, error) {
	mnt, err := s.impl.Mount(ctx, handleFromPB(m))
	if err != nil {
		return nil, toStatus(err)
	}
	return mountToPB(mnt), nil
}

func (s *stateFSServer) Unmount(ctx context.Context, m *pb.Handle) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(s.impl.Unmount(ctx, handleFromPB(m)))
}

func (s *stateFSServer) Hash(ctx context.Context, m *pb.Handle) (*pb.Digest, error) {
	d, err := s.impl.Hash(ctx, handleFromPB(m))
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.Digest{Digest: d}, nil
}

func (s *stateFSServer) Usage(ctx context.Context, m *pb.Handle) (*pb.StateUsage, error) {
	u, err := s.impl.Usage(ctx, handleFromPB(m))
	if err != nil {
		return nil, toStatus(err)
	}
	return usageToPB(u), nil
}

func (s *stateFSServer) Checkpoint(ctx context.Context, m *pb.CheckpointRequest) (*pb.CheckpointInfo, error) {
	c, err := s.impl.Checkpoint(ctx, handleFromPB(m.Handle), m.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	return checkpointToPB(c), nil
}

func (s *stateFSServer) Checkpoints(ctx context.Context, m *pb.Handle) (*pb.CheckpointList, error) {
	list, err := s.impl.Checkpoints(ctx, handleFromPB(m))
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.CheckpointList{}
	for _, c := range list {
		out.Checkpoints = append(out.Checkpoints, checkpointToPB(c))
	}
	return out, nil
}

func (s *stateFSServer) Rollback(ctx context.Context, m *pb.CheckpointRequest) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(s.impl.Rollback(ctx, handleFromPB(m.Handle), m.Name))
}

func (s *stateFSServer) MountCheckpoint(ctx context.Context, m *pb.CheckpointRequest) (*pb.MountPoint, error) {
	cm, ok := s.impl.(CheckpointMounter)
	if !ok {
		return nil, toStatus(Errorf(CodeUnsupported, "the StateFS does not implement %s", FeatureCheckpointMount))
	}
	mnt, err := cm.MountCheckpoint(ctx, handleFromPB(m.Handle), m.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	return mountToPB(mnt), nil
}

func (s *stateFSServer) UnmountCheckpoint(ctx context.Context, m *pb.CheckpointRequest) (*pb.Empty, error) {
	cm, ok := s.impl.(CheckpointMounter)
	if !ok {
		return nil, toStatus(Errorf(CodeUnsupported, "the StateFS does not implement %s", FeatureCheckpointMount))
	}
	return &pb.Empty{}, toStatus(cm.UnmountCheckpoint(ctx, handleFromPB(m.Handle), m.Name))
}

func (s *stateFSServer) Recover(ctx context.Context, m *pb.Handle) (*pb.Handle, error) {
	h, err := s.impl.Recover(ctx, handleFromPB(m))
	if err != nil {
		return nil, toStatus(err)
	}
	return handleToPB(h), nil
}

func (s *stateFSServer) Deprovision(ctx context.Context, m *pb.Handle) (*pb.Empty, error) {
	return &pb.Empty{}, toStatus(s.impl.Deprovision(ctx, handleFromPB(m)))
}

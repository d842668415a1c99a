package control

import (
	"cmp"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// What one ConsumeResponse carries at most: it must fit a client's default
// 4 MiB receive limit with room to spare.
const (
	consumeBatchItems = 1024
	consumeBatchBytes = 1 << 20
)

// Consume serves one member of a consumer group: the first request opens
// it, later ones carry acks; deliveries go out in batches as they come.
func (s *Service) Consume(ss tlsgatev1.ControlService_ConsumeServer) error {
	req, err := ss.Recv()
	if err != nil {
		return err
	}
	open := req.GetOpen()
	if open == nil {
		return status.Error(codes.InvalidArgument, "open: the first request must open the stream")
	}
	l := limits{
		packets: int(cmp.Or(open.GetMaxUnackedPackets(), DefaultMaxUnackedPackets)),
		bytes:   int(cmp.Or(open.GetMaxUnackedBytes(), DefaultMaxUnackedBytes)),
	}
	m, leave, ok := s.hub.join(cmp.Or(open.GetGroup(), DefaultGroup), open.GetSessionIds(), l)
	if !ok {
		return status.Error(codes.Unavailable, "server shutting down")
	}
	defer leave()
	// The response headers tell the client that it is a member: every
	// packet its group takes from then on reaches the group.
	if err := ss.SendHeader(nil); err != nil {
		return err
	}

	// The acks, read in their own goroutine; it ends with the stream,
	// which ends when this handler returns.
	acksDone := make(chan error, 1)
	go func() {
		for {
			req, err := ss.Recv()
			if err != nil {
				acksDone <- err
				return
			}
			acks := req.GetAcks()
			if acks == nil {
				acksDone <- status.Error(codes.InvalidArgument, "open: only the first request opens the stream; later ones carry acks")
				return
			}
			for _, a := range acks.GetAcks() {
				m.group.ack(m, a.GetSessionId(), a.GetThroughSeq())
			}
		}
	}()

	for {
		select {
		case <-m.wake:
		case err := <-acksDone:
			return err
		case <-m.ended:
			return status.Error(codes.Unavailable, "server shutting down")
		case <-ss.Context().Done():
			return status.FromContextError(ss.Context().Err()).Err()
		}
		if resp := m.group.take(m, consumeBatchItems, consumeBatchBytes); resp != nil {
			if err := ss.Send(resp); err != nil {
				return err
			}
		}
	}
}

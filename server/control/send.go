package control

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
)

// SendBatch queues a batch of packets and answers item for item.
func (s *Service) SendBatch(ctx context.Context, req *tlsgatev1.SendBatchRequest) (*tlsgatev1.SendBatchResponse, error) {
	return &tlsgatev1.SendBatchResponse{Results: s.sendItems(ctx, req.GetItems(), req.GetFullQueue())}, nil
}

// SendStream queues the batches of a stream, one request at a time, and
// answers each with one response. Reading the next request only after the
// previous one is queued is what bounds the stream's memory here and lets
// HTTP/2 flow control slow the backend down.
func (s *Service) SendStream(ss tlsgatev1.ControlService_SendStreamServer) error {
	for {
		req, err := ss.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp := &tlsgatev1.SendStreamResponse{Results: s.sendItems(ss.Context(), req.GetItems(), req.GetFullQueue())}
		if err := ss.Send(resp); err != nil {
			return err
		}
	}
}

// sendItems queues items in order, each on its own: a bad item, an unknown
// session or a full queue fails that item alone. With the WAIT policy a
// full queue is waited on while ctx allows.
func (s *Service) sendItems(ctx context.Context, items []*tlsgatev1.SendItem, fq tlsgatev1.FullQueuePolicy) []*tlsgatev1.SendResult {
	wait := fq == tlsgatev1.FullQueuePolicy_FULL_QUEUE_POLICY_WAIT
	results := make([]tlsgatev1.SendResult, len(items)) // one allocation for the batch
	out := make([]*tlsgatev1.SendResult, len(items))
	for i, it := range items {
		r := &results[i]
		out[i] = r
		id := it.GetSessionId()
		if err := s.checkSend(id, it.GetPayload(), it.GetEncoding()); err != nil {
			r.Error = &tlsgatev1.ItemError{Code: uint32(codes.InvalidArgument), Message: fmt.Sprintf("items[%d].%v", i, err)}
			continue
		}
		sess, ok := s.gw.Session(id)
		if !ok {
			r.Error = itemError(notFound(id))
			continue
		}
		var q server.Enqueued
		var err error
		if wait {
			q, err = sess.SendWait(ctx, encodingFromProto(it.GetEncoding()), it.GetPayload())
		} else {
			q, err = sess.SendAsync(encodingFromProto(it.GetEncoding()), it.GetPayload())
		}
		if err != nil {
			r.Error = itemError(statusFor(id, err))
			continue
		}
		r.Seq, r.QueueLength = q.Seq, uint32(q.Depth)
	}
	return out
}

// itemError is a status error as one item's error.
func itemError(err error) *tlsgatev1.ItemError {
	st := status.Convert(err)
	return &tlsgatev1.ItemError{Code: uint32(st.Code()), Message: st.Message()}
}

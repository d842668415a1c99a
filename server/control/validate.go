package control

import (
	"context"
	"fmt"
	"regexp"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/wire"
)

// Request validation. The rules live here, beside the service, rather than
// as protovalidate annotations in the proto files: those would need the
// buf.build/bufbuild/protovalidate module, a remote dependency this
// repository does not take. Every message names the field it rejects.

const (
	maxPageSize     = 1000
	maxReasonLength = 1024
	maxSessionIDs   = 10000
	maxBatchItems   = 10000
)

var goodbyeCode = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)

// validate checks a request message; its error names the offending field.
func (s *Service) validate(req any) error {
	switch r := req.(type) {
	case *tlsgatev1.SendAsyncRequest:
		return s.checkSend(r.GetSessionId(), r.GetPayload(), r.GetEncoding())
	case *tlsgatev1.SendBatchRequest:
		return checkBatch(len(r.GetItems()), r.GetFullQueue())
	case *tlsgatev1.SendStreamRequest:
		return checkBatch(len(r.GetItems()), r.GetFullQueue())
	case *tlsgatev1.DrainRequest:
		switch t := r.GetTarget().(type) {
		case nil:
			return fmt.Errorf("target: set session_id or all_sessions")
		case *tlsgatev1.DrainRequest_SessionId:
			return requireSession(t.SessionId)
		case *tlsgatev1.DrainRequest_AllSessions:
			if !t.AllSessions {
				return fmt.Errorf("all_sessions: must be true when set")
			}
		}
	case *tlsgatev1.DisconnectRequest:
		if err := requireSession(r.GetSessionId()); err != nil {
			return err
		}
		if c := r.GetCode(); c != "" && !goodbyeCode.MatchString(c) {
			return fmt.Errorf("code: %q must be 1 to 64 lower-case letters, digits or underscores", c)
		}
		if n := len(r.GetReason()); n > maxReasonLength {
			return fmt.Errorf("reason: %d bytes is over the maximum of %d", n, maxReasonLength)
		}
		if d := r.GetDrainTimeout(); d != nil {
			if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
				return fmt.Errorf("drain_timeout: must be a positive duration")
			}
		}
	case *tlsgatev1.GetSessionRequest:
		return requireSession(r.GetSessionId())
	case *tlsgatev1.ListSessionsRequest:
		if r.GetPageSize() > maxPageSize {
			return fmt.Errorf("page_size: %d is over the maximum of %d", r.GetPageSize(), maxPageSize)
		}
		if _, err := decodePageToken(r.GetPageToken()); err != nil {
			return fmt.Errorf("page_token: %v", err)
		}
		for i, st := range r.GetStates() {
			if _, ok := tlsgatev1.SessionState_name[int32(st)]; !ok || st == tlsgatev1.SessionState_SESSION_STATE_UNSPECIFIED {
				return fmt.Errorf("states[%d]: %d is not a session state", i, st)
			}
		}
	case *tlsgatev1.ConsumeRequest:
		return checkConsume(r)
	case *tlsgatev1.ReceiveRequest:
		if n := len(r.GetSessionIds()); n > maxSessionIDs {
			return fmt.Errorf("session_ids: %d IDs is over the maximum of %d", n, maxSessionIDs)
		}
		for i, id := range r.GetSessionIds() {
			if id == 0 {
				return fmt.Errorf("session_ids[%d]: must not be 0", i)
			}
		}
	}
	return nil
}

// checkSend checks one packet to send (a SendAsync request or a batch's
// item); its error names the field.
func (s *Service) checkSend(id uint64, payload []byte, enc tlsgatev1.Encoding) error {
	if err := requireSession(id); err != nil {
		return err
	}
	if n := len(payload); n > s.maxPayload {
		return fmt.Errorf("payload: %d bytes is over the maximum payload of %d bytes", n, s.maxPayload)
	}
	if _, ok := tlsgatev1.Encoding_name[int32(enc)]; !ok {
		return fmt.Errorf("encoding: %d is not a known encoding (use ENCODING_JSON or ENCODING_MSGPACK)", enc)
	}
	return nil
}

// checkBatch checks what SendBatch and SendStream check of the request as
// a whole; each item is checked alone, as it is queued.
func checkBatch(items int, fq tlsgatev1.FullQueuePolicy) error {
	if items == 0 {
		return fmt.Errorf("items: at least one item is required")
	}
	if items > maxBatchItems {
		return fmt.Errorf("items: %d items is over the maximum of %d", items, maxBatchItems)
	}
	if _, ok := tlsgatev1.FullQueuePolicy_name[int32(fq)]; !ok {
		return fmt.Errorf("full_queue: %d is not a known policy (use FULL_QUEUE_POLICY_REJECT or FULL_QUEUE_POLICY_WAIT)", fq)
	}
	return nil
}

var groupName = regexp.MustCompile(`^[a-z0-9_.-]{1,64}$`)

// checkConsume checks a Consume request, open or acks.
func checkConsume(r *tlsgatev1.ConsumeRequest) error {
	switch q := r.GetRequest().(type) {
	case nil:
		return fmt.Errorf("request: set open or acks")
	case *tlsgatev1.ConsumeRequest_Open:
		o := q.Open
		if g := o.GetGroup(); g != "" && !groupName.MatchString(g) {
			return fmt.Errorf("open.group: %q must be 1 to 64 lower-case letters, digits, '_', '-' or '.'", g)
		}
		if n := len(o.GetSessionIds()); n > maxSessionIDs {
			return fmt.Errorf("open.session_ids: %d IDs is over the maximum of %d", n, maxSessionIDs)
		}
		for i, id := range o.GetSessionIds() {
			if id == 0 {
				return fmt.Errorf("open.session_ids[%d]: must not be 0", i)
			}
		}
		if n := o.GetMaxUnackedPackets(); n > maxUnackedPacketsLimit {
			return fmt.Errorf("open.max_unacked_packets: %d is over the maximum of %d", n, maxUnackedPacketsLimit)
		}
		if n := o.GetMaxUnackedBytes(); n != 0 && (n < minUnackedBytesLimit || n > maxUnackedBytesLimit) {
			return fmt.Errorf("open.max_unacked_bytes: %d is not between %d and %d", n, minUnackedBytesLimit, maxUnackedBytesLimit)
		}
	case *tlsgatev1.ConsumeRequest_Acks:
		if n := len(q.Acks.GetAcks()); n > maxSessionIDs {
			return fmt.Errorf("acks.acks: %d acks is over the maximum of %d", n, maxSessionIDs)
		}
		for i, a := range q.Acks.GetAcks() {
			if err := requireSession(a.GetSessionId()); err != nil {
				return fmt.Errorf("acks.acks[%d].%w", i, err)
			}
		}
	}
	return nil
}

func requireSession(id uint64) error {
	if id == 0 {
		return fmt.Errorf("session_id: required")
	}
	if id>>63 != 0 {
		return fmt.Errorf("session_id: %d has its top bit set; session IDs never do", id)
	}
	return nil
}

// unaryValidator and streamValidator reject an invalid request with
// INVALID_ARGUMENT before it reaches its handler.
func (s *Service) unaryValidator(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if err := s.validate(req); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return next(ctx, req)
}

func (s *Service) streamValidator(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, next grpc.StreamHandler) error {
	return next(srv, &validatingStream{ServerStream: ss, s: s})
}

// validatingStream validates each message the client sends on a stream.
type validatingStream struct {
	grpc.ServerStream
	s *Service
}

func (v *validatingStream) RecvMsg(m any) error {
	if err := v.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if err := v.s.validate(m); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

// wire's encodings, by the API's enum.
func encodingFromProto(e tlsgatev1.Encoding) wire.Encoding {
	if e == tlsgatev1.Encoding_ENCODING_MSGPACK {
		return wire.MsgPack
	}
	return wire.JSON
}

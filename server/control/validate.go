package control

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
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
			return fieldErrorf("target", "set session_id or all_sessions")
		case *tlsgatev1.DrainRequest_SessionId:
			return requireSession(t.SessionId)
		case *tlsgatev1.DrainRequest_AllSessions:
			if !t.AllSessions {
				return fieldErrorf("all_sessions", "must be true when set")
			}
		}
	case *tlsgatev1.DisconnectRequest:
		if err := requireSession(r.GetSessionId()); err != nil {
			return err
		}
		if c := r.GetCode(); c != "" && !goodbyeCode.MatchString(c) {
			return fieldErrorf("code", "%q must be 1 to 64 lower-case letters, digits or underscores", c)
		}
		if n := len(r.GetReason()); n > maxReasonLength {
			return fieldErrorf("reason", "%d bytes is over the maximum of %d", n, maxReasonLength)
		}
		if d := r.GetDrainTimeout(); d != nil {
			if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
				return fieldErrorf("drain_timeout", "must be a positive duration")
			}
		}
	case *tlsgatev1.GetSessionRequest:
		return requireSession(r.GetSessionId())
	case *tlsgatev1.ListSessionsRequest:
		if r.GetPageSize() > maxPageSize {
			return fieldErrorf("page_size", "%d is over the maximum of %d", r.GetPageSize(), maxPageSize)
		}
		if _, err := decodePageToken(r.GetPageToken()); err != nil {
			return fieldErrorf("page_token", "%v", err)
		}
		for i, st := range r.GetStates() {
			if _, ok := tlsgatev1.SessionState_name[int32(st)]; !ok || st == tlsgatev1.SessionState_SESSION_STATE_UNSPECIFIED {
				return fieldErrorf(fmt.Sprintf("states[%d]", i), "%d is not a session state", st)
			}
		}
	case *tlsgatev1.ConsumeRequest:
		return checkConsume(r)
	case *tlsgatev1.ReceiveRequest:
		if n := len(r.GetSessionIds()); n > maxSessionIDs {
			return fieldErrorf("session_ids", "%d IDs is over the maximum of %d", n, maxSessionIDs)
		}
		for i, id := range r.GetSessionIds() {
			if id == 0 {
				return fieldErrorf(fmt.Sprintf("session_ids[%d]", i), "must not be 0")
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
		return fieldErrorf("payload", "%d bytes is over the maximum payload of %d bytes", n, s.maxPayload)
	}
	if _, ok := tlsgatev1.Encoding_name[int32(enc)]; !ok {
		return fieldErrorf("encoding", "%d is not a known encoding (use ENCODING_JSON or ENCODING_MSGPACK)", enc)
	}
	return nil
}

// checkBatch checks what SendBatch and SendStream check of the request as
// a whole; each item is checked alone, as it is queued.
func checkBatch(items int, fq tlsgatev1.FullQueuePolicy) error {
	if items == 0 {
		return fieldErrorf("items", "at least one item is required")
	}
	if items > maxBatchItems {
		return fieldErrorf("items", "%d items is over the maximum of %d", items, maxBatchItems)
	}
	if _, ok := tlsgatev1.FullQueuePolicy_name[int32(fq)]; !ok {
		return fieldErrorf("full_queue", "%d is not a known policy (use FULL_QUEUE_POLICY_REJECT or FULL_QUEUE_POLICY_WAIT)", fq)
	}
	return nil
}

var groupName = regexp.MustCompile(`^[a-z0-9_.-]{1,64}$`)

// checkConsume checks a Consume request, open or acks.
func checkConsume(r *tlsgatev1.ConsumeRequest) error {
	switch q := r.GetRequest().(type) {
	case nil:
		return fieldErrorf("request", "set open or acks")
	case *tlsgatev1.ConsumeRequest_Open:
		o := q.Open
		if g := o.GetGroup(); g != "" && !groupName.MatchString(g) {
			return fieldErrorf("open.group", "%q must be 1 to 64 lower-case letters, digits, '_', '-' or '.'", g)
		}
		if n := len(o.GetSessionIds()); n > maxSessionIDs {
			return fieldErrorf("open.session_ids", "%d IDs is over the maximum of %d", n, maxSessionIDs)
		}
		for i, id := range o.GetSessionIds() {
			if id == 0 {
				return fieldErrorf(fmt.Sprintf("open.session_ids[%d]", i), "must not be 0")
			}
		}
		if n := o.GetMaxUnackedPackets(); n > maxUnackedPacketsLimit {
			return fieldErrorf("open.max_unacked_packets", "%d is over the maximum of %d", n, maxUnackedPacketsLimit)
		}
		if n := o.GetMaxUnackedBytes(); n != 0 && (n < minUnackedBytesLimit || n > maxUnackedBytesLimit) {
			return fieldErrorf("open.max_unacked_bytes", "%d is not between %d and %d", n, minUnackedBytesLimit, maxUnackedBytesLimit)
		}
	case *tlsgatev1.ConsumeRequest_Acks:
		if n := len(q.Acks.GetAcks()); n > maxSessionIDs {
			return fieldErrorf("acks.acks", "%d acks is over the maximum of %d", n, maxSessionIDs)
		}
		for i, a := range q.Acks.GetAcks() {
			var fe *fieldError
			if err := requireSession(a.GetSessionId()); errors.As(err, &fe) {
				return fe.within(fmt.Sprintf("acks.acks[%d]", i))
			}
		}
	}
	return nil
}

func requireSession(id uint64) error {
	if id == 0 {
		return fieldErrorf("session_id", "required")
	}
	if id>>63 != 0 {
		return fieldErrorf("session_id", "%d has its top bit set; session IDs never do", id)
	}
	return nil
}

// fieldError is a request field's violation of the rules: its message is
// "field: description", and its status carries a google.rpc.BadRequest
// naming the field.
type fieldError struct{ field, desc string }

func fieldErrorf(field, format string, args ...any) *fieldError {
	return &fieldError{field: field, desc: fmt.Sprintf(format, args...)}
}

func (e *fieldError) Error() string { return e.field + ": " + e.desc }

// within is e for the same field inside parent ("acks.acks[2]", say).
func (e *fieldError) within(parent string) *fieldError {
	return &fieldError{field: parent + "." + e.field, desc: e.desc}
}

// invalid is the INVALID_ARGUMENT status of a validation error, with a
// google.rpc.BadRequest detail when it names a field.
func invalid(err error) error {
	st := status.New(codes.InvalidArgument, err.Error())
	var fe *fieldError
	if errors.As(err, &fe) {
		br := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: fe.field, Description: fe.desc}}}
		if d, derr := st.WithDetails(br); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// unaryValidator and streamValidator reject an invalid request with
// INVALID_ARGUMENT before it reaches its handler.
func (s *Service) unaryValidator(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if err := s.validate(req); err != nil {
		return nil, invalid(err)
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
		return invalid(err)
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

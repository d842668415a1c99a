package control

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tlsgate/tlsgate/server"
)

// ErrorDomain is the domain of every google.rpc.ErrorInfo the control API
// returns.
const ErrorDomain = "tlsgate"

// The reasons of the google.rpc.ErrorInfo details beside NOT_FOUND,
// FAILED_PRECONDITION, RESOURCE_EXHAUSTED and ABORTED, for clients to
// branch on. The table is in docs/control-api.md.
const (
	ReasonSessionNotFound  = "SESSION_NOT_FOUND"  // no such session, or it ended
	ReasonSessionClosing   = "SESSION_CLOSING"    // a close has started: no new sends
	ReasonQueueFull        = "QUEUE_FULL"         // the session's queue (or resume buffer) bound
	ReasonMemoryFull       = "MEMORY_FULL"        // the gateway's memory bound (--max-memory)
	ReasonNewEpoch         = "NEW_EPOCH"          // a resumable client came back in a new epoch
	ReasonStreamFellBehind = "STREAM_FELL_BEHIND" // a Receive or WatchSessions stream was cut off
	ReasonTooManyStreams   = "TOO_MANY_STREAMS"   // --max-streams
)

// withInfo is a status error with a google.rpc.ErrorInfo of reason and
// metadata (key, value pairs).
func withInfo(code codes.Code, msg, reason string, kv ...string) error {
	st := status.New(code, msg)
	info := &errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		info.Metadata[kv[i]] = kv[i+1]
	}
	if d, err := st.WithDetails(info); err == nil {
		st = d
	}
	return st.Err()
}

// statusFor maps a data-plane error to its gRPC status, with an ErrorInfo
// where the code has a reason. The table is in docs/control-api.md.
func statusFor(sessionID uint64, err error) error {
	var code codes.Code
	reason := ""
	switch {
	case errors.Is(err, server.ErrMemoryFull): // (an ErrQueueFull too)
		code, reason = codes.ResourceExhausted, ReasonMemoryFull
	case errors.Is(err, server.ErrQueueFull):
		code, reason = codes.ResourceExhausted, ReasonQueueFull
	case errors.Is(err, server.ErrClosing):
		code, reason = codes.FailedPrecondition, ReasonSessionClosing
	case errors.Is(err, server.ErrNewEpoch):
		code, reason = codes.Aborted, ReasonNewEpoch
	case errors.Is(err, server.ErrClosed):
		code, reason = codes.NotFound, ReasonSessionNotFound
	case errors.Is(err, server.ErrPayloadTooLarge), errors.Is(err, server.ErrBadEncoding):
		code = codes.InvalidArgument
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	default:
		code = codes.Internal
	}
	msg := fmt.Sprintf("session %d: %v", sessionID, err)
	if reason == "" {
		return status.Error(code, msg)
	}
	return withInfo(code, msg, reason, "session_id", strconv.FormatUint(sessionID, 10))
}

func notFound(sessionID uint64) error {
	return withInfo(codes.NotFound, fmt.Sprintf("session %d: no such session", sessionID), ReasonSessionNotFound,
		"session_id", strconv.FormatUint(sessionID, 10))
}

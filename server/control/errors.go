package control

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tlsgate/tlsgate/server"
)

// statusFor maps a data-plane error to its gRPC status. The table is in
// docs/control-api.md.
func statusFor(sessionID uint64, err error) error {
	var code codes.Code
	switch {
	case errors.Is(err, server.ErrQueueFull):
		code = codes.ResourceExhausted
	case errors.Is(err, server.ErrClosing):
		code = codes.FailedPrecondition
	case errors.Is(err, server.ErrNewEpoch):
		code = codes.Aborted
	case errors.Is(err, server.ErrClosed):
		code = codes.NotFound
	case errors.Is(err, server.ErrPayloadTooLarge), errors.Is(err, server.ErrBadEncoding):
		code = codes.InvalidArgument
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	default:
		code = codes.Internal
	}
	return status.Error(code, fmt.Sprintf("session %d: %v", sessionID, err))
}

func notFound(sessionID uint64) error {
	return status.Errorf(codes.NotFound, "session %d: no such session", sessionID)
}

package control

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// DefaultMaxStreams is Config.MaxStreams when it is zero: the most
// ControlService streams open at once, over every connection.
const DefaultMaxStreams = 10000

// streamPrefix starts the full method name of every ControlService RPC.
// Its streaming methods (Receive, WatchSessions, Consume, SendStream) are
// the ones the limit counts; the health service's Watch and reflection
// are not counted, and unary calls never are.
var streamPrefix = "/" + tlsgatev1.ControlService_ServiceDesc.ServiceName + "/"

// streamLimit caps the ControlService streams open at once across every
// connection (MaxCallsPerConn caps them per connection only).
type streamLimit struct {
	max  int64
	open atomic.Int64
}

// intercept refuses a new stream with RESOURCE_EXHAUSTED while max are
// open; a stream it admits counts until its handler returns. It runs
// after auth, so that a caller without the token can neither open one nor
// be told how many are open.
func (l *streamLimit) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !strings.HasPrefix(info.FullMethod, streamPrefix) {
		return handler(srv, ss)
	}
	for {
		n := l.open.Load()
		if n >= l.max {
			return withInfo(codes.ResourceExhausted, fmt.Sprintf("too many open streams: %d are open, the maximum (--max-streams) is %d", n, l.max),
				ReasonTooManyStreams, "max_streams", strconv.FormatInt(l.max, 10))
		}
		if l.open.CompareAndSwap(n, n+1) {
			break
		}
	}
	defer l.open.Add(-1)
	return handler(srv, ss)
}

// OpenStreams is how many ControlService streams (Receive, WatchSessions,
// Consume, SendStream) are open now, over every connection: what
// Config.MaxStreams bounds.
func (s *Server) OpenStreams() int { return int(s.limit.open.Load()) }

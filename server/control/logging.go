package control

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// sessionLogField adds the request's session_id to the RPC's log line
// (SendAsync, Drain, Disconnect, GetSession).
func sessionLogField(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if id := sessionIDOf(req); id != 0 {
		logging.AddFields(ctx, logging.Fields{"session_id", id})
	}
	return handler(ctx, req)
}

func sessionIDOf(req any) uint64 {
	if r, ok := req.(interface{ GetSessionId() uint64 }); ok {
		return r.GetSessionId()
	}
	return 0
}

// unaryLogging logs every unary RPC through the logging middleware: logged
// for most, loggedPerPacket (success at debug) for SendAsync, which is
// called once per packet. Below debug a successful SendAsync logs nothing,
// yet the middleware would still build its fields for it, before the
// call: about a tenth of SendAsync's throughput on a loopback benchmark
// (docs/performance.md). So then the call runs bare, and only a failure is
// logged, here, with the middleware's message, level and field names.
func unaryLogging(log *slog.Logger, logged, loggedPerPacket grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		switch {
		case info.FullMethod != tlsgatev1.ControlService_SendAsync_FullMethodName:
			return logged(ctx, req, info, handler)
		case log.Enabled(ctx, slog.LevelDebug):
			return loggedPerPacket(ctx, req, info, handler)
		}
		start := time.Now()
		resp, err := handler(ctx, req)
		if err == nil {
			return resp, nil
		}
		code := status.Code(err)
		service, method, _ := strings.Cut(strings.TrimPrefix(info.FullMethod, "/"), "/")
		fields := logging.Fields{
			logging.SystemTag[0], logging.SystemTag[1],
			logging.ComponentFieldKey, logging.KindServerFieldValue,
			logging.ServiceFieldKey, service,
			logging.MethodFieldKey, method,
			logging.MethodTypeFieldKey, "unary",
		}.WithUnique(logging.ExtractFields(ctx)) // what outer interceptors added
		if p, ok := peer.FromContext(ctx); ok {
			fields = append(fields, "peer.address", p.Addr.String())
		}
		fields = append(fields, "grpc.start_time", start.Format(time.RFC3339))
		if d, ok := ctx.Deadline(); ok {
			fields = append(fields, "grpc.request.deadline", d.Format(time.RFC3339))
		}
		if id := sessionIDOf(req); id != 0 {
			fields = append(fields, "session_id", id)
		}
		fields = append(fields, "grpc.code", code.String(), "grpc.error", err.Error())
		fields = append(fields, logging.DurationToTimeMillisFields(time.Since(start))...)
		log.Log(ctx, slog.Level(logging.DefaultServerCodeToLevel(code)), "finished call", fields...)
		return resp, err
	}
}

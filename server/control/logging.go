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

// perPacketLogging logs the RPCs called once per packet (SendAsync). With
// debug enabled, every call goes through logged, the logging middleware,
// as every other RPC does. Otherwise a successful call logs nothing, yet
// the middleware would still build its fields for it, before the call:
// about a tenth of SendAsync's throughput on a loopback benchmark
// (docs/performance.md). So the call runs bare, and only a failure is
// logged, here, with the middleware's message, level and field names.
func perPacketLogging(log *slog.Logger, logged grpc.UnaryServerInterceptor) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if log.Enabled(ctx, slog.LevelDebug) {
			return logged(ctx, req, info, handler)
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
		}
		if p, ok := peer.FromContext(ctx); ok {
			fields = append(fields, "peer.address", p.Addr.String())
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

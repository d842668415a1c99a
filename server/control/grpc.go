// Package control is tlsgate's control plane: the gRPC API
// tlsgate.v1.ControlService over a running gateway, with server reflection,
// grpc.health.v1, and go-grpc-middleware interceptors for recovery,
// logging, bearer-token auth and request validation.
package control

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
)

// DefaultAddr is the control plane's default listen address: loopback
// only. The gateway's assembly binds it (gateway.DefaultControlAddr).
const DefaultAddr = "127.0.0.1:7224"

// Config configures the control plane. New validates it and fills in the
// defaults of zero fields.
type Config struct {
	// Gateway is the data plane to control. Required; its Config.Handler
	// and Config.OnEvent must be Hub's.
	Gateway *server.Server
	// Hub connects the gateway to the API's streams. Required.
	Hub *Hub
	// Token, when set, is the bearer token every RPC must carry
	// ("authorization: Bearer <token>"), compared in constant time. The
	// health service stays open for probes. Default: no auth.
	Token string
	// TLSConfig, when set, serves gRPC over TLS; with ClientCAs and
	// ClientAuth set it requires client certificates (mTLS). Default:
	// plaintext, which is only safe on loopback.
	TLSConfig *tls.Config
	// MaxStreams caps the ControlService streams (Receive, WatchSessions,
	// Consume, SendStream) open at once over every connection; a new one
	// beyond it is refused with RESOURCE_EXHAUSTED ("too many open
	// streams: ... the maximum (--max-streams) is N", naming serve's flag)
	// until one ends. Unary calls, the health service's Watch and
	// reflection are not counted. It is checked after auth: a caller
	// without the token is refused UNAUTHENTICATED and counts for nothing.
	// Zero: DefaultMaxStreams; negative is an error.
	MaxStreams int
	// MaxHeaderBytes bounds one call's header list (metadata): a call
	// beyond it is refused before any of it reaches an interceptor.
	// Zero: DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// MaxCallsPerConn caps the calls one connection may have open at once;
	// a client that wants more opens another connection. Long-lived
	// streams count against it, and against MaxStreams, the cap over
	// every connection. Zero: DefaultMaxCallsPerConn.
	MaxCallsPerConn int
	// MaxConns caps the connections served at once; more wait to be
	// accepted until one ends. Zero: DefaultMaxConns.
	MaxConns int
	// KeepaliveMinTime: a client pinging more often than this is sent
	// GOAWAY. Zero: DefaultKeepaliveMinTime. The server's own pings are
	// KeepaliveTime and KeepaliveTimeout.
	KeepaliveMinTime time.Duration
	// Logger receives one line per RPC. Default: discard.
	Logger *slog.Logger
	// ServerOptions are extra grpc.ServerOptions (credentials, say).
	ServerOptions []grpc.ServerOption
	// UnaryInterceptors and StreamInterceptors run first, outermost, ahead
	// of the built-in chain (logging, auth, validation, recovery): metrics
	// interceptors go here, so that they count every call, rejected ones
	// included, with its final code and its whole handling time.
	UnaryInterceptors  []grpc.UnaryServerInterceptor
	StreamInterceptors []grpc.StreamServerInterceptor
}

// Server is the control plane's gRPC server.
type Server struct {
	cfg     Config
	grpc    *grpc.Server
	health  *health.Server
	limit   *streamLimit
	watches *healthWatches
}

// New validates cfg and builds the gRPC server. Health starts NOT_SERVING;
// call SetServing once both planes are up.
func New(cfg Config) (*Server, error) {
	if cfg.Gateway == nil || cfg.Hub == nil {
		return nil, errors.New("control: Config.Gateway and Config.Hub are required")
	}
	if err := cfg.limitDefaults(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	svc := NewService(cfg.Gateway, cfg.Hub)
	limit := &streamLimit{max: int64(cfg.MaxStreams)}
	watches := newHealthWatches()
	unary, stream := interceptorChain(cfg, svc, limit)
	stream = append(stream, watches.intercept)
	opts := append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
	}, cfg.transportOptions()...)
	opts = append(opts, cfg.ServerOptions...)
	if cfg.TLSConfig != nil {
		tc := cfg.TLSConfig.Clone()
		if tc.MinVersion < tls.VersionTLS12 {
			tc.MinVersion = tls.VersionTLS12
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	s := &Server{cfg: cfg, grpc: grpc.NewServer(opts...), health: health.NewServer(), limit: limit, watches: watches}
	tlsgatev1.RegisterControlServiceServer(s.grpc, svc)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc) // v1 and v1alpha
	s.SetServing(false)
	return s, nil
}

// interceptorChain orders the middleware: Config's own interceptors
// (metrics) first; logging sees every call and its final code, with the
// request's session ID when it has one; auth rejects before anything else
// runs; the stream limit, when limit is set, refuses a stream beyond
// Config.MaxStreams (after auth, so that unauthenticated callers can
// neither take a place nor learn the count); validation rejects bad
// requests before their handler; recovery, innermost, turns a handler's
// panic into INTERNAL.
func interceptorChain(cfg Config, svc *Service, limit *streamLimit) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		cfg.Logger.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall)}
	recoverOpts := []recovery.Option{recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		cfg.Logger.ErrorContext(ctx, "panic in RPC handler", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})}
	// SendAsync is called once per packet: its successful calls log at
	// debug, so that info carries no per-packet line.
	perPacketOpts := append(slices.Clone(logOpts), logging.WithLevels(func(code codes.Code) logging.Level {
		if code == codes.OK {
			return logging.LevelDebug
		}
		return logging.DefaultServerCodeToLevel(code)
	}))
	unary := append(slices.Clone(cfg.UnaryInterceptors),
		unaryLogging(cfg.Logger, logging.UnaryServerInterceptor(logger, logOpts...), logging.UnaryServerInterceptor(logger, perPacketOpts...)),
		sessionLogField)
	stream := append(slices.Clone(cfg.StreamInterceptors), logging.StreamServerInterceptor(logger, logOpts...))
	if cfg.Token != "" {
		check := bearerAuth(cfg.Token)
		unary = append(unary, selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(check), selector.MatchFunc(needsAuth)))
		stream = append(stream, selector.StreamServerInterceptor(auth.StreamServerInterceptor(check), selector.MatchFunc(needsAuth)))
	}
	if limit != nil {
		stream = append(stream, limit.intercept)
	}
	unary = append(unary, svc.unaryValidator, recovery.UnaryServerInterceptor(recoverOpts...))
	stream = append(stream, svc.streamValidator, recovery.StreamServerInterceptor(recoverOpts...))
	return unary, stream
}

// needsAuth exempts the health service, so that probes need no token.
func needsAuth(_ context.Context, c interceptors.CallMeta) bool {
	return c.Service != healthpb.Health_ServiceDesc.ServiceName
}

// bearerAuth accepts "authorization: Bearer <token>" with the right token.
// The token is never logged.
func bearerAuth(token string) auth.AuthFunc {
	want := []byte(token)
	return func(ctx context.Context) (context.Context, error) {
		got, err := auth.AuthFromMD(ctx, "bearer")
		if err != nil {
			return nil, status.Error(codes.Unauthenticated, "missing bearer token: send the metadata \"authorization: Bearer <token>\"")
		}
		if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			return nil, status.Error(codes.Unauthenticated, "invalid bearer token")
		}
		return ctx, nil
	}
}

// SetServing sets the health status of the server and of
// tlsgate.v1.ControlService: SERVING once both planes are up, NOT_SERVING
// as soon as shutdown begins.
func (s *Server) SetServing(serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(tlsgatev1.ControlService_ServiceDesc.ServiceName, st)
}

// GetServiceInfo reports the services the gRPC server has (it makes Server
// a reflection.ServiceInfoProvider, for metrics that pre-register methods).
func (s *Server) GetServiceInfo() map[string]grpc.ServiceInfo { return s.grpc.GetServiceInfo() }

// Serve serves gRPC on ln until Stop.
func (s *Server) Serve(ln net.Listener) error {
	s.cfg.Logger.Info("control plane listening", "addr", ln.Addr().String())
	err := s.grpc.Serve(s.cfg.limitListener(ln))
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop ends the control plane: health goes NOT_SERVING, the hub ends the
// open streams after what they have buffered, health Watch streams end
// after their NOT_SERVING, and the server stops gracefully, or at once
// when ctx ends first.
func (s *Server) Stop(ctx context.Context) {
	s.SetServing(false)
	s.cfg.Hub.Close()
	s.watches.stop()
	done := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
	}
}

func timestampNow() *timestamppb.Timestamp { return timestamppb.New(time.Now()) }

package control

import (
	"context"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// healthWatches ends the health service's Watch streams when the control
// plane stops. A Watch never ends by itself, and client-side health
// checking and load balancers keep one open, so without this a graceful
// stop would wait for each of them until its timeout. Each watcher first
// gets its final NOT_SERVING, then the stream ends with UNAVAILABLE.
type healthWatches struct {
	stopping chan struct{}
	once     sync.Once
}

func newHealthWatches() *healthWatches { return &healthWatches{stopping: make(chan struct{})} }

// stop ends every Watch, now and to come, once it has sent a status other
// than SERVING.
func (h *healthWatches) stop() { h.once.Do(func() { close(h.stopping) }) }

// intercept runs a Watch with a context that ends once the control plane
// stops and the stream's last status sent is not SERVING.
func (h *healthWatches) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod != healthpb.Health_Watch_FullMethodName {
		return handler(srv, ss)
	}
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	w := &healthWatch{ServerStream: ss, ctx: ctx, sent: make(chan struct{}, 1)}
	go func() {
		select {
		case <-h.stopping:
		case <-ctx.Done():
			return
		}
		for !w.notServing.Load() {
			select {
			case <-w.sent:
			case <-ctx.Done():
				return
			}
		}
		cancel()
	}()
	err := handler(srv, w)
	if ss.Context().Err() == nil && ctx.Err() != nil { // ended here, not by the client
		return status.Error(codes.Unavailable, "server shutting down")
	}
	return err
}

// healthWatch is a Watch stream that notes the last status it sent.
type healthWatch struct {
	grpc.ServerStream
	ctx        context.Context
	notServing atomic.Bool
	sent       chan struct{} // signalled after each status sent
}

func (w *healthWatch) Context() context.Context { return w.ctx }

func (w *healthWatch) SendMsg(m any) error {
	err := w.ServerStream.SendMsg(m)
	if r, ok := m.(*healthpb.HealthCheckResponse); ok && err == nil {
		w.notServing.Store(r.GetStatus() != healthpb.HealthCheckResponse_SERVING)
		select {
		case w.sent <- struct{}{}:
		default:
		}
	}
	return err
}

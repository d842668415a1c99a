package control_test

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/tlsgate/tlsgate/client"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
	"github.com/tlsgate/tlsgate/server/gateway"
	"github.com/tlsgate/tlsgate/wire"
)

// wait bounds every wait of a test on an event that should happen.
const wait = 10 * time.Second

// streamLife bounds the Receive and WatchSessions streams a test opens,
// which may serve a long test.
const streamLife = 2 * time.Minute

// setup configures a test environment. The zero value is the defaults.
type setup struct {
	// gateway is the data plane's config, its zero fields the defaults;
	// start sets TLSConfig and Handler.
	gateway server.Config
	// fallback is the hub's handler when no Receive stream selects a
	// session. Default server.Echo{}.
	fallback server.Handler
	// buffer is the hub's per-stream buffer (0: the default).
	buffer int
	// bufferBytes bounds the same buffer in bytes (0: the default).
	bufferBytes int
	// noConsumer is the hub's policy (empty: the default, handler).
	noConsumer control.NoConsumer
	// pauseTimeout is ConsumePauseTimeout (0: never).
	pauseTimeout time.Duration
	// maxStreams is MaxStreams, the cap on open streams (0: the default).
	maxStreams int
	// token is the control plane's bearer token.
	token string
	// logger is the control plane's logger.
	logger *slog.Logger
	// notServing sets health NOT_SERVING once the gateway is up.
	notServing bool
	// tls serves the control plane over TLS (then env.api is nil: the
	// test dials with its own credentials).
	tls *tls.Config
}

// env is a running gateway (the assembly of `tlsgate serve`, without the
// admin endpoint), with a gRPC client.
type env struct {
	gw      *server.Server
	hub     *control.Hub
	ctl     *control.Server
	gwAddr  string
	ctlAddr string
	cert    tls.Certificate
	api     tlsgatev1.ControlServiceClient
}

// start runs a gateway on loopback ports. It is shut down at the test's
// end as serve does it: the data plane, then the control plane.
func start(t *testing.T, s setup) *env {
	t.Helper()
	cert, _, _, err := devcert.Generate()
	if err != nil {
		t.Fatal(err)
	}
	var verbose *slog.Logger
	if testing.Verbose() {
		verbose = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg := gateway.DefaultConfig()
	cfg.Server = s.gateway.WithDefaults()
	cfg.Server.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	cfg.Server.Handler = s.fallback
	cfg.Server.Logger = cmp.Or(s.gateway.Logger, verbose, slog.New(slog.DiscardHandler))
	cfg.Addr, cfg.ControlAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.ControlToken, cfg.ControlTLS = s.token, s.tls
	if s.buffer > 0 {
		cfg.StreamBuffer = s.buffer
	}
	cfg.StreamBufferBytes = cmp.Or(s.bufferBytes, cfg.StreamBufferBytes)
	cfg.NoConsumer = cmp.Or(s.noConsumer, cfg.NoConsumer)
	cfg.ConsumePauseTimeout = s.pauseTimeout
	cfg.MaxStreams = cmp.Or(s.maxStreams, cfg.MaxStreams)
	cfg.Logger = cmp.Or(s.logger, verbose)
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		gw: g.Server(), hub: g.Hub(), ctl: g.Control(), cert: cert,
		gwAddr: g.Addr().String(), ctlAddr: g.ControlAddr().String(),
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(context.Background()) }()
	select {
	case <-g.Ready():
	case err := <-served:
		t.Fatalf("gateway Serve: %v", err)
	}
	if s.notServing {
		e.ctl.SetServing(false)
	}

	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("gateway shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("gateway Serve returned %v", err)
		}
		if ctx.Err() != nil {
			t.Errorf("shutdown took over %s", wait)
		}
		if held := e.gw.Stats().MemoryHeld; held != 0 {
			t.Errorf("after shutdown the sessions still hold %d bytes of the memory bound, want 0", held)
		}
	})
	if s.tls == nil {
		e.api = tlsgatev1.NewControlServiceClient(e.conn(t))
	}
	return e
}

// conn returns a new gRPC client connection to the control plane, closed
// at the test's end.
func (e *env) conn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(e.ctlAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// timeout returns a context ending after d (or with the test).
func timeout(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails the test unless err is a status with code, whose message
// contains every one of substrs.
func wantCode(t *testing.T, err error, code codes.Code, substrs ...string) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("got %v, want code %s", err, code)
	}
	for _, s := range substrs {
		if !strings.Contains(st.Message(), s) {
			t.Fatalf("status message %q does not contain %q", st.Message(), s)
		}
	}
	return st
}

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// dialGo connects the Go client library with a new key unless key is set.
func (e *env) dialGo(t *testing.T, key ed25519.PrivateKey, opts ...client.Option) *client.Conn {
	t.Helper()
	if key == nil {
		key = newKey(t)
	}
	opts = append([]client.Option{client.WithFingerprint(client.Fingerprint(e.cert.Certificate[0]))}, opts...)
	c, err := client.Dial(timeout(t, wait), e.gwAddr, key, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// dialRaw connects a raw client, as a naive third-party client would (no
// library, no Goodbye, no FlushAck unless the test sends them), with a new
// key unless key is set, pinning the gateway's certificate. When it
// returns, the session is registered.
func (e *env) dialRaw(t *testing.T, key ed25519.PrivateKey) *wiretest.Conn {
	t.Helper()
	if key == nil {
		key = newKey(t)
	}
	return wiretest.Connect(t, e.gwAddr, key, wiretest.Pin(sha256.Sum256(e.cert.Certificate[0])), wiretest.Wait(wait))
}

// flushRaw is a barrier round trip: it sends Flush seq on r and returns
// the frames read before the FlushAck, which the server writes after the
// replies to everything sent before the Flush.
func flushRaw(t *testing.T, r *wiretest.Conn, seq uint64) []wire.Frame {
	t.Helper()
	r.WriteControl(t, wire.TypeFlush, wire.JSON, wire.FlushPayload{Seq: seq})
	var before []wire.Frame
	for {
		f := r.Read(t)
		if f.Type != wire.TypeFlushAck {
			before = append(before, f)
			continue
		}
		p, err := wire.DecodeFlush(f.Encoding, f.Payload)
		if err != nil || p.Seq != seq {
			t.Fatalf("FlushAck %+v, %v; want seq %d", p, err, seq)
		}
		return before
	}
}

// readGoodbye reads Data frames on r until the server's Goodbye and
// returns their payloads and the Goodbye.
func readGoodbye(t *testing.T, r *wiretest.Conn) ([][]byte, wire.GoodbyePayload) {
	t.Helper()
	var data [][]byte
	for {
		f := r.Read(t)
		switch f.Type {
		case wire.TypeData:
			data = append(data, f.Payload)
		case wire.TypeGoodbye:
			gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			return data, gb
		default:
			t.Fatalf("unexpected %s frame", f.Type)
		}
	}
}

// receive opens a Receive stream and returns once the server has
// subscribed it (its response headers arrived): every packet read from
// then on reaches it.
func (e *env) receive(t *testing.T, api tlsgatev1.ControlServiceClient, ids ...uint64) grpc.ServerStreamingClient[tlsgatev1.ReceiveResponse] {
	t.Helper()
	if api == nil {
		api = e.api
	}
	rs, err := api.Receive(timeout(t, streamLife), &tlsgatev1.ReceiveRequest{SessionIds: ids})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Header(); err != nil {
		t.Fatalf("Receive headers: %v", err)
	}
	return rs
}

// watcher is a WatchSessions stream.
type watcher struct {
	grpc.ServerStreamingClient[tlsgatev1.WatchSessionsResponse]
}

// recvNext returns the next event.
func (w watcher) recvNext(t *testing.T) *tlsgatev1.WatchSessionsResponse {
	t.Helper()
	ev, err := w.Recv()
	if err != nil {
		t.Fatalf("WatchSessions: %v", err)
	}
	return ev
}

// watch opens a WatchSessions stream with its snapshot and returns it
// after snapshot_complete, with the snapshot.
func (e *env) watch(t *testing.T) (watcher, []*tlsgatev1.Session) {
	t.Helper()
	ws, err := e.api.WatchSessions(timeout(t, streamLife), &tlsgatev1.WatchSessionsRequest{IncludeSnapshot: true})
	if err != nil {
		t.Fatal(err)
	}
	var snapshot []*tlsgatev1.Session
	for {
		ev, err := ws.Recv()
		if err != nil {
			t.Fatalf("WatchSessions: %v", err)
		}
		switch {
		case ev.GetSnapshot() != nil:
			snapshot = append(snapshot, ev.GetSnapshot())
		case ev.GetSnapshotComplete() != nil:
			return watcher{ws}, snapshot
		default:
			t.Fatalf("event %v before snapshot_complete", ev)
		}
	}
}

// nextEvent returns the next event on ws that matches.
func nextEvent(t *testing.T, ws watcher, match func(*tlsgatev1.WatchSessionsResponse) bool) *tlsgatev1.WatchSessionsResponse {
	t.Helper()
	for {
		ev, err := ws.Recv()
		if err != nil {
			t.Fatalf("WatchSessions: %v", err)
		}
		if match(ev) {
			return ev
		}
	}
}

// closedEvent returns the next closed event of session id on ws.
func closedEvent(t *testing.T, ws watcher, id uint64) *tlsgatev1.ClosedConnection {
	t.Helper()
	return nextEvent(t, ws, func(ev *tlsgatev1.WatchSessionsResponse) bool {
		return ev.GetClosed().GetSessionId() == id
	}).GetClosed()
}

// getSession returns a session's state through the API.
func (e *env) getSession(t *testing.T, id uint64) *tlsgatev1.Session {
	t.Helper()
	resp, err := e.api.GetSession(timeout(t, wait), &tlsgatev1.GetSessionRequest{SessionId: id})
	if err != nil {
		t.Fatalf("GetSession(%d): %v", id, err)
	}
	return resp.GetSession()
}

// sendAsync queues a payload through the API.
func (e *env) sendAsync(t *testing.T, id uint64, enc tlsgatev1.Encoding, payload []byte) *tlsgatev1.SendAsyncResponse {
	t.Helper()
	resp, err := e.api.SendAsync(timeout(t, wait), &tlsgatev1.SendAsyncRequest{SessionId: id, Payload: payload, Encoding: enc})
	if err != nil {
		t.Fatalf("SendAsync: %v", err)
	}
	return resp
}

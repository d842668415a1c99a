package control_test

import (
	"context"
	"crypto/tls"
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
)

// tooMany is the message of a stream refused at a cap of 2.
const tooMany = "too many open streams: 2 are open, the maximum (--max-streams) is 2"

// openWatch opens a WatchSessions stream on api with ctx and returns once
// the server has subscribed it (its headers arrived): it counts from then on.
func openWatch(ctx context.Context, t *testing.T, api tlsgatev1.ControlServiceClient) watcher {
	t.Helper()
	ws, err := api.WatchSessions(ctx, &tlsgatev1.WatchSessionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Header(); err != nil {
		t.Fatalf("WatchSessions headers: %v", err)
	}
	return watcher{ws}
}

// refusedStreams opens one stream of each ControlService streaming method
// on api and returns how each ended before its first response.
func refusedStreams(ctx context.Context, t *testing.T, api tlsgatev1.ControlServiceClient) map[string]error {
	t.Helper()
	out := map[string]error{}
	ws, err := api.WatchSessions(ctx, &tlsgatev1.WatchSessionsRequest{IncludeSnapshot: true})
	if err == nil {
		_, err = ws.Recv()
	}
	out["WatchSessions"] = err
	rs, err := api.Receive(ctx, &tlsgatev1.ReceiveRequest{})
	if err == nil {
		_, err = rs.Recv()
	}
	out["Receive"] = err
	cs, err := api.Consume(ctx)
	if err == nil {
		_, err = cs.Recv()
	}
	out["Consume"] = err
	ss, err := api.SendStream(ctx)
	if err == nil {
		_, err = ss.Recv()
	}
	out["SendStream"] = err
	return out
}

// TestMaxStreams: the cap counts the streams of every connection and of
// every streaming method; beyond it a new stream is refused with
// RESOURCE_EXHAUSTED naming --max-streams; once one ends, a new one is
// admitted.
func TestMaxStreams(t *testing.T) {
	e := start(t, setup{maxStreams: 2})
	watchCtx, endWatch := context.WithCancel(timeout(t, streamLife))
	defer endWatch()
	openWatch(watchCtx, t, e.api)
	// The second stream, a Receive, on another connection.
	e.receive(t, tlsgatev1.NewControlServiceClient(e.conn(t)))
	if n := e.ctl.OpenStreams(); n != 2 {
		t.Fatalf("OpenStreams() = %d with two streams open, want 2", n)
	}

	// A third connection: every kind of stream is refused, before any
	// response.
	third := tlsgatev1.NewControlServiceClient(e.conn(t))
	for method, err := range refusedStreams(timeout(t, wait), t, third) {
		t.Run(method, func(t *testing.T) { wantCode(t, err, codes.ResourceExhausted, tooMany) })
	}
	if n := e.ctl.OpenStreams(); n != 2 {
		t.Fatalf("OpenStreams() = %d after the refusals, want 2", n)
	}

	// The first stream ends; its place is free once its handler returns,
	// which the client does not see: retry until admitted, within wait.
	endWatch()
	ctx := timeout(t, wait)
	attempt := 1
	for !admitted(ctx, t, third, attempt) {
		attempt++
	}
	// Back at the cap.
	err := refusedStreams(timeout(t, wait), t, e.api)["Consume"]
	wantCode(t, err, codes.ResourceExhausted, tooMany)
}

// admitted opens a WatchSessions stream on api, open until ctx ends or
// the test does, and reports whether it was admitted (it got its first event);
// false when it was refused for the cap, and the test fails on any other
// outcome or once ctx ends.
func admitted(ctx context.Context, t *testing.T, api tlsgatev1.ControlServiceClient, attempt int) bool {
	t.Helper()
	sctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	ws, err := api.WatchSessions(sctx, &tlsgatev1.WatchSessionsRequest{IncludeSnapshot: true})
	if err == nil {
		var ev *tlsgatev1.WatchSessionsResponse
		if ev, err = ws.Recv(); err == nil {
			if ev.GetSnapshotComplete() == nil {
				t.Fatalf("first event %v, want snapshot_complete (no sessions)", ev)
			}
			t.Logf("admitted at attempt %d", attempt)
			return true
		}
	}
	cancel()
	if ctx.Err() != nil {
		t.Fatalf("no new stream admitted within %s of the end of one: last attempt %v", wait, err)
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("attempt %d: %v, want RESOURCE_EXHAUSTED until a place is free", attempt, err)
	}
	return false
}

// TestMaxStreamsNotCounted: at the cap, unary calls, the health service
// (Check and its Watch stream) and reflection still work.
func TestMaxStreamsNotCounted(t *testing.T) {
	e := start(t, setup{maxStreams: 1})
	openWatch(timeout(t, streamLife), t, e.api)
	err := refusedStreams(timeout(t, wait), t, e.api)["WatchSessions"]
	wantCode(t, err, codes.ResourceExhausted, "too many open streams: 1 are open, the maximum (--max-streams) is 1")

	rc := e.dialRaw(t, nil)
	for range 3 {
		resp, err := e.api.ListSessions(timeout(t, wait), &tlsgatev1.ListSessionsRequest{})
		if err != nil || len(resp.GetSessions()) != 1 {
			t.Fatalf("ListSessions at the cap: %v, %v", resp, err)
		}
	}
	if got := e.getSession(t, rc.ID()); got.GetSessionId() != rc.ID() {
		t.Fatalf("GetSession at the cap: %v", got)
	}
	e.sendAsync(t, rc.ID(), tlsgatev1.Encoding_ENCODING_JSON, []byte(`"x"`))
	_, err = e.api.GetSession(timeout(t, wait), &tlsgatev1.GetSessionRequest{SessionId: 12345})
	wantCode(t, err, codes.NotFound, "no such session")

	cc := e.conn(t)
	hc := healthpb.NewHealthClient(cc)
	if resp, err := hc.Check(timeout(t, wait), &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Check at the cap: %v, %v", resp, err)
	}
	hw, err := hc.Watch(timeout(t, wait), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := hw.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Watch at the cap: %v, %v", resp, err)
	}
	rs, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(timeout(t, wait))
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rs.Recv()
	if err != nil || len(resp.GetListServicesResponse().GetService()) == 0 {
		t.Fatalf("reflection at the cap: %v, %v", resp, err)
	}
	if n := e.ctl.OpenStreams(); n != 1 {
		t.Fatalf("OpenStreams() = %d, want 1: only the WatchSessions stream counts", n)
	}
}

// TestMaxStreamsAfterAuth: auth runs first: at the cap, a caller without
// the token is refused UNAUTHENTICATED and told nothing of the count.
func TestMaxStreamsAfterAuth(t *testing.T) {
	const token = "s3cret-token-0123"
	e := start(t, setup{maxStreams: 1, token: token})
	openWatch(bearer(timeout(t, streamLife), token), t, e.api)
	for method, err := range refusedStreams(timeout(t, wait), t, e.api) {
		wantCode(t, err, codes.Unauthenticated, "missing bearer token")
		if strings.Contains(status.Convert(err).Message(), "open streams") {
			t.Errorf("%s without the token: %v names the count", method, err)
		}
	}
	for method, err := range refusedStreams(bearer(timeout(t, wait), token), t, e.api) {
		t.Run(method, func(t *testing.T) { wantCode(t, err, codes.ResourceExhausted, "the maximum (--max-streams) is 1") })
	}
}

// TestNewNegativeMaxStreams: control.New refuses a negative MaxStreams
// (or another limit out of range), naming the field.
func TestNewNegativeMaxStreams(t *testing.T) {
	cert, _, _, err := devcert.Generate()
	if err != nil {
		t.Fatal(err)
	}
	gw, err := server.New(server.Config{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	if err != nil {
		t.Fatal(err)
	}
	hub := control.NewHub(control.HubConfig{Fallback: server.Discard{}})
	for _, c := range []control.Config{{MaxStreams: -1}, {MaxConns: -1}, {MaxHeaderBytes: math.MaxInt32 + 1}} {
		c.Gateway, c.Hub = gw, hub
		_, err = control.New(c)
		if err == nil || !strings.Contains(err.Error(), "must be between 0 and 2147483647, got") {
			t.Fatalf("New with %+v: %v, want an error naming the field and its range", c, err)
		}
	}
	_, err = control.New(control.Config{Gateway: gw, Hub: hub, MaxStreams: -1})
	if err == nil || !strings.Contains(err.Error(), "Config.MaxStreams must be between 0 and 2147483647, got -1") {
		t.Fatalf("New with MaxStreams -1: %v, want an error naming Config.MaxStreams", err)
	}
	ctl, err := control.New(control.Config{Gateway: gw, Hub: hub})
	if err != nil {
		t.Fatalf("New with MaxStreams 0 (the default): %v", err)
	}
	ctl.Stop(timeout(t, wait))
}

package control_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

func bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// TestAuth: with a token set, every ControlService and reflection RPC needs
// it; health probes do not.
func TestAuth(t *testing.T) {
	const token = "s3cret-token-0123"
	var logs syncBuffer
	e := start(t, setup{token: token, logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	rc := e.dialRaw(t, nil)
	for _, tc := range []struct {
		name string
		ctx  func(*testing.T) context.Context
		code codes.Code
		msg  string
	}{
		{"no token", func(t *testing.T) context.Context { return timeout(t, wait) }, codes.Unauthenticated, "missing bearer token"},
		{"wrong token", func(t *testing.T) context.Context { return bearer(timeout(t, wait), "s3cret-tokem") }, codes.Unauthenticated, "invalid bearer token"},
		{"not bearer", func(t *testing.T) context.Context {
			return metadata.AppendToOutgoingContext(timeout(t, wait), "authorization", "Basic "+token)
		}, codes.Unauthenticated, "bearer"},
		{"right token", func(t *testing.T) context.Context { return bearer(timeout(t, wait), token) }, codes.OK, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := func(what string, err error) {
				t.Helper()
				if tc.code == codes.OK {
					if err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					return
				}
				wantCode(t, err, tc.code, tc.msg)
			}
			// Unary.
			_, err := e.api.GetSession(tc.ctx(t), &tlsgatev1.GetSessionRequest{SessionId: rc.ID()})
			check("GetSession", err)
			_, err = e.api.ListSessions(tc.ctx(t), &tlsgatev1.ListSessionsRequest{})
			check("ListSessions", err)
			// Validation runs after auth: a bad request without the token
			// is unauthenticated, not invalid.
			_, err = e.api.SendAsync(tc.ctx(t), &tlsgatev1.SendAsyncRequest{})
			if tc.code == codes.OK {
				wantCode(t, err, codes.InvalidArgument, "session_id")
			} else {
				check("SendAsync", err)
			}
			// Server streams: the error ends the stream before any item;
			// with the token the headers say it is subscribed.
			rs, err := e.api.Receive(tc.ctx(t), &tlsgatev1.ReceiveRequest{})
			if err == nil {
				if tc.code == codes.OK {
					_, err = rs.Header()
				} else {
					_, err = rs.Recv()
				}
			}
			check("Receive", err)
			ws, err := e.api.WatchSessions(tc.ctx(t), &tlsgatev1.WatchSessionsRequest{IncludeSnapshot: true})
			if err == nil {
				var ev *tlsgatev1.WatchSessionsResponse
				if ev, err = ws.Recv(); err == nil && ev.GetSnapshot().GetSessionId() != rc.ID() {
					t.Fatalf("WatchSessions' first event %v, want the snapshot of %d", ev, rc.ID())
				}
			}
			check("WatchSessions", err)
			// Reflection.
			rf, err := reflectionpb.NewServerReflectionClient(e.conn(t)).ServerReflectionInfo(tc.ctx(t))
			if err == nil {
				// A Send to a stream the server has ended fails with
				// io.EOF; Recv then has the status.
				err = rf.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
				if err == nil || errors.Is(err, io.EOF) {
					_, err = rf.Recv()
				}
			}
			check("reflection", err)
			// Health: open to all.
			resp, err := healthpb.NewHealthClient(e.conn(t)).Check(tc.ctx(t), &healthpb.HealthCheckRequest{})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("health Check = %v, %v; want SERVING", resp, err)
			}
		})
	}
	// One line per call, with its code; never the token.
	out := logs.String()
	if strings.Contains(out, token) || strings.Contains(out, "s3cret-tokem") {
		t.Fatalf("the log shows a token:\n%s", out)
	}
	for _, want := range []string{"grpc.method=GetSession", "grpc.method=Receive", "grpc.code=Unauthenticated", "grpc.code=InvalidArgument", "grpc.code=OK"} {
		if !strings.Contains(out, want) {
			t.Fatalf("the log lacks %q:\n%s", want, out)
		}
	}
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

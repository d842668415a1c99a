package control

import (
	"context"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// sendAsyncStub accepts SendAsync for session 1 and knows no other; it
// answers GetSession.
type sendAsyncStub struct {
	tlsgatev1.UnimplementedControlServiceServer
}

func (sendAsyncStub) GetSession(context.Context, *tlsgatev1.GetSessionRequest) (*tlsgatev1.GetSessionResponse, error) {
	return &tlsgatev1.GetSessionResponse{}, nil
}

func (sendAsyncStub) SendAsync(_ context.Context, r *tlsgatev1.SendAsyncRequest) (*tlsgatev1.SendAsyncResponse, error) {
	if r.GetSessionId() != 1 {
		return nil, status.Errorf(codes.NotFound, "session %d not found", r.GetSessionId())
	}
	return &tlsgatev1.SendAsyncResponse{Seq: 1}, nil
}

// TestPerPacketLogging: at info, a successful SendAsync logs nothing and a
// failed one logs the middleware's "finished call" line, with its code,
// error, method and session, while other RPCs log every call; at debug,
// every call is logged by the middleware itself.
func TestPerPacketLogging(t *testing.T) {
	failureKeys := map[slog.Level][]string{}
	t.Cleanup(func() {
		// The failure's line below debug has the middleware's fields.
		if info, debug := failureKeys[slog.LevelInfo], failureKeys[slog.LevelDebug]; !slices.Equal(info, debug) {
			t.Errorf("the failure's fields differ:\n  info:  %v\n  debug: %v", info, debug)
		}
	})
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		t.Run(level.String(), func(t *testing.T) {
			var logs syncBuffer
			api := serveChain(t, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: level})), sendAsyncStub{})
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()

			if _, err := api.GetSession(ctx, &tlsgatev1.GetSessionRequest{SessionId: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := api.SendAsync(ctx, &tlsgatev1.SendAsyncRequest{SessionId: 1, Payload: []byte("x")}); err != nil {
				t.Fatal(err)
			}
			_, err := api.SendAsync(ctx, &tlsgatev1.SendAsyncRequest{SessionId: 2, Payload: []byte("x")})
			if status.Code(err) != codes.NotFound {
				t.Fatalf("SendAsync to session 2: %v, want NOT_FOUND", err)
			}
			var lines []string
			for l := range strings.Lines(logs.String()) {
				if strings.Contains(l, "finished call") {
					lines = append(lines, l)
				}
			}
			want := 2 // GetSession and the failed SendAsync
			if level == slog.LevelDebug {
				want = 3
			}
			if len(lines) != want {
				t.Fatalf("%d \"finished call\" lines, want %d:\n%s", len(lines), want, logs.String())
			}
			if !strings.Contains(lines[0], "grpc.method=GetSession") {
				t.Errorf("first line, want GetSession's:\n%s", lines[0])
			}
			failed := lines[len(lines)-1]
			for _, f := range []string{"level=INFO", "grpc.code=NotFound", `grpc.error="rpc error: code = NotFound desc = session 2 not found"`,
				"grpc.service=tlsgate.v1.ControlService", "grpc.method=SendAsync", "grpc.method_type=unary", "session_id=2", "grpc.time_ms=", "peer.address=127.0.0.1:"} {
				if !strings.Contains(failed, f) {
					t.Errorf("the failure's line lacks %s:\n%s", f, failed)
				}
			}
			failureKeys[level] = logKeys(failed)
		})
	}
}

// logKeys returns the sorted keys of a slog text line.
func logKeys(line string) []string {
	var keys []string
	for _, m := range regexp.MustCompile(`(?:^| )([^ =]+)=(?:"(?:[^"\\]|\\.)*"|[^ ]*)`).FindAllStringSubmatch(line, -1) {
		keys = append(keys, m[1])
	}
	slices.Sort(keys)
	return keys
}

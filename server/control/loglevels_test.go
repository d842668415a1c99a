package control_test

import (
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
)

// TestCallLogLevels: each call's "finished call" line is at the level
// docs/control-api.md gives: info for OK and for the caller's own
// mistakes (INVALID_ARGUMENT, NOT_FOUND), warn for what the operator may
// have to act on (RESOURCE_EXHAUSTED); a successful SendAsync, one per
// packet, at debug.
func TestCallLogLevels(t *testing.T) {
	var logs syncBuffer
	e := start(t, setup{logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), gateway: server.Config{QueueBytes: 70000}})
	rc := e.dialRaw(t, nil)
	ctx := timeout(t, wait)
	line := func(method, code string) string {
		t.Helper()
		for l := range strings.Lines(logs.String()) {
			if strings.Contains(l, `msg="finished call"`) && strings.Contains(l, "grpc.method="+method+" ") && strings.Contains(l, "grpc.code="+code+" ") {
				return l
			}
		}
		t.Fatalf("no finished call line for %s with code %s in:\n%s", method, code, logs.String())
		return ""
	}
	wantLevel := func(method, code, level string) {
		t.Helper()
		if l := line(method, code); !strings.Contains(l, "level="+level+" ") {
			t.Errorf("%s %s logged as %s, want %s", method, code, l[:strings.Index(l, " msg=")], level)
		}
	}

	if _, err := e.api.ListSessions(ctx, &tlsgatev1.ListSessionsRequest{}); err != nil {
		t.Fatal(err)
	}
	wantLevel("ListSessions", "OK", "INFO")
	_, err := e.api.GetSession(ctx, &tlsgatev1.GetSessionRequest{})
	wantCode(t, err, codes.InvalidArgument)
	wantLevel("GetSession", "InvalidArgument", "INFO")
	_, err = e.api.GetSession(ctx, &tlsgatev1.GetSessionRequest{SessionId: 12345})
	wantCode(t, err, codes.NotFound)
	wantLevel("GetSession", "NotFound", "INFO")
	if _, err := e.api.SendAsync(ctx, &tlsgatev1.SendAsyncRequest{SessionId: rc.ID(), Payload: []byte(`"x"`)}); err != nil {
		t.Fatal(err)
	}
	wantLevel("SendAsync", "OK", "DEBUG")
	// The client reads nothing: the small queue fills.
	for {
		_, err := e.api.SendAsync(ctx, &tlsgatev1.SendAsyncRequest{SessionId: rc.ID(), Payload: make([]byte, 60000)})
		if err != nil {
			wantCode(t, err, codes.ResourceExhausted)
			break
		}
	}
	wantLevel("SendAsync", "ResourceExhausted", "WARN")
}

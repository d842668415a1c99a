package control_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/tlsgate/tlsgate/client"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// closeError waits for c to end and returns why.
func closeError(t *testing.T, c *client.Conn) *client.CloseError {
	t.Helper()
	select {
	case <-c.Done():
	case <-timeout(t, wait).Done():
		t.Fatal("the client connection did not end")
	}
	var ce *client.CloseError
	if !errors.As(c.Err(), &ce) {
		t.Fatalf("client Err %v, want a *CloseError", c.Err())
	}
	return ce
}

// TestDisconnectGraceful: the client gets every queued packet, then the
// Goodbye asked for; Disconnect returns the connection's final state.
func TestDisconnectGraceful(t *testing.T) {
	const n = 100
	e := start(t, setup{})
	c := e.dialGo(t, nil)
	ws, _ := e.watch(t)
	for i := range n {
		e.sendAsync(t, c.ID(), tlsgatev1.Encoding_ENCODING_JSON, fmt.Appendf(nil, "%d", i))
	}
	resp, err := e.api.Disconnect(timeout(t, wait), &tlsgatev1.DisconnectRequest{
		SessionId: c.ID(), Code: "maintenance", Reason: "back in five", Reconnect: proto.Bool(true),
	})
	if err != nil {
		t.Fatal(err)
	}
	cc := resp.GetConnection()
	if cc.GetSessionId() != c.ID() || cc.GetConnectionId() == 0 || cc.GetGoodbyeCode() != "maintenance" ||
		cc.GetGoodbyeReason() != "back in five" || cc.GetPeerGoodbyeCode() != wire.GoodbyeNormal ||
		cc.GetOutcome() != tlsgatev1.Outcome_OUTCOME_CLEAN || cc.GetTruncatedFrame() {
		t.Fatalf("closed connection %v", cc)
	}
	// Out: the packets and the Goodbye; in: the client's Goodbye.
	if ct := cc.GetCounters(); ct.GetPacketsOut() != n+1 || ct.GetPacketsIn() != 1 || ct.GetUnwritten() != 0 ||
		ct.GetBytesOut() <= n*wire.HeaderLen || ct.GetBytesIn() <= wire.HeaderLen || ct.GetDiscarded() != 0 {
		t.Fatalf("counters %v", ct)
	}
	if resp.GetElapsed().AsDuration() <= 0 {
		t.Fatalf("elapsed %v", resp.GetElapsed())
	}
	// Disconnect returned once the connection had ended: the session is
	// gone, and the watchers heard the same.
	_, err = e.api.GetSession(timeout(t, wait), &tlsgatev1.GetSessionRequest{SessionId: c.ID()})
	wantCode(t, err, codes.NotFound)
	if ev := closedEvent(t, ws, c.ID()); !proto.Equal(ev, cc) {
		t.Fatalf("closed event %v, Disconnect said %v", ev, cc)
	}

	for i := range n {
		if p, err := c.Recv(timeout(t, wait)); err != nil || string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("packet %d: %q, %v", i, p.Payload, err)
		}
	}
	if _, err := c.Recv(timeout(t, wait)); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Recv after the packets: %v, want ErrClosed", err)
	}
	ce := closeError(t, c)
	if ce.Code != "maintenance" || ce.Reason != "back in five" || !ce.Reconnect || ce.Outcome != client.OutcomeClean || ce.Initiator != client.InitiatorRemote {
		t.Fatalf("client saw %+v", ce)
	}
}

// TestDisconnectDefaults: the Goodbye code defaults to "admin", with its
// own reconnect advice (false).
func TestDisconnectDefaults(t *testing.T) {
	e := start(t, setup{})
	c := e.dialGo(t, nil)
	resp, err := e.api.Disconnect(timeout(t, wait), &tlsgatev1.DisconnectRequest{SessionId: c.ID()})
	if err != nil {
		t.Fatal(err)
	}
	if cc := resp.GetConnection(); cc.GetGoodbyeCode() != wire.GoodbyeAdmin || cc.GetOutcome() != tlsgatev1.Outcome_OUTCOME_CLEAN {
		t.Fatalf("closed connection %v", cc)
	}
	if ce := closeError(t, c); ce.Code != wire.GoodbyeAdmin || ce.Reconnect || ce.Outcome != client.OutcomeClean {
		t.Fatalf("client saw %+v", ce)
	}
}

// TestDisconnectForce closes at once: no Goodbye, outcome FORCED.
func TestDisconnectForce(t *testing.T) {
	e := start(t, setup{})
	c := e.dialGo(t, nil)
	resp, err := e.api.Disconnect(timeout(t, wait), &tlsgatev1.DisconnectRequest{SessionId: c.ID(), Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if cc := resp.GetConnection(); cc.GetOutcome() != tlsgatev1.Outcome_OUTCOME_FORCED || cc.GetGoodbyeCode() != "" || cc.GetCounters().GetPacketsOut() != 0 {
		t.Fatalf("closed connection %v", cc)
	}
	if ce := closeError(t, c); ce.Code != "" || !errors.Is(ce, client.ErrConnectionLost) {
		t.Fatalf("client saw %+v, want the connection lost without Goodbye", ce)
	}
}

// TestDisconnectDrainTimeout: a client that never reads cannot take the
// queue; the close is forced after the request's drain_timeout, not the
// server's.
func TestDisconnectDrainTimeout(t *testing.T) {
	const drain = 300 * time.Millisecond
	e := start(t, setup{gateway: server.Config{QueueBytes: 64 << 20, DrainTimeout: 3 * wait}})
	rc := e.dialRaw(t, nil)
	payload := bytes.Repeat([]byte("x"), 64000)
	for range 256 { // 16 MB: more than loopback's socket buffers hold
		e.sendAsync(t, rc.ID(), tlsgatev1.Encoding_ENCODING_JSON, payload)
	}
	resp, err := e.api.Disconnect(timeout(t, wait), &tlsgatev1.DisconnectRequest{SessionId: rc.ID(), DrainTimeout: durationpb.New(drain)})
	if err != nil {
		t.Fatal(err)
	}
	cc := resp.GetConnection()
	if cc.GetOutcome() != tlsgatev1.Outcome_OUTCOME_TIMEOUT || cc.GetCounters().GetUnwritten() == 0 {
		t.Fatalf("closed connection %v; want timeout with packets unwritten", cc)
	}
	if el := resp.GetElapsed().AsDuration(); el < drain || el > wait {
		t.Fatalf("Disconnect took %s with a drain timeout of %s (the server's is %s)", el, drain, 3*wait)
	}
}

// TestDisconnectErrors: requests refused before any close.
func TestDisconnectErrors(t *testing.T) {
	e := start(t, setup{})
	rc := e.dialRaw(t, nil)
	for _, tc := range []struct {
		name string
		req  *tlsgatev1.DisconnectRequest
		code codes.Code
		msg  []string
	}{
		{"no such session", &tlsgatev1.DisconnectRequest{SessionId: 12345}, codes.NotFound, []string{"session 12345"}},
		{"session_id 0", &tlsgatev1.DisconnectRequest{}, codes.InvalidArgument, []string{"session_id"}},
		{"bad code", &tlsgatev1.DisconnectRequest{SessionId: rc.ID(), Code: "Bad Code!"}, codes.InvalidArgument, []string{"code", `"Bad Code!"`}},
		{"long code", &tlsgatev1.DisconnectRequest{SessionId: rc.ID(), Code: strings.Repeat("a", 65)}, codes.InvalidArgument, []string{"code"}},
		{"long reason", &tlsgatev1.DisconnectRequest{SessionId: rc.ID(), Reason: strings.Repeat("r", 1025)}, codes.InvalidArgument, []string{"reason", "1025"}},
		{"negative drain_timeout", &tlsgatev1.DisconnectRequest{SessionId: rc.ID(), DrainTimeout: durationpb.New(-time.Second)}, codes.InvalidArgument, []string{"drain_timeout"}},
		{"zero drain_timeout", &tlsgatev1.DisconnectRequest{SessionId: rc.ID(), DrainTimeout: durationpb.New(0)}, codes.InvalidArgument, []string{"drain_timeout"}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			_, err := e.api.Disconnect(timeout(t, wait), tc.req)
			wantCode(t, err, tc.code, tc.msg...)
		})
	}
	// None of them touched the session.
	if s := e.getSession(t, rc.ID()); s.GetState() != tlsgatev1.SessionState_SESSION_STATE_ACTIVE {
		t.Fatalf("session state %s after refused Disconnects", s.GetState())
	}
}

// TestDisconnectAtTheDeadline: when the call's deadline comes before the
// drain timeout, the close is forced just ahead of it and the call still
// answers with the final state.
func TestDisconnectAtTheDeadline(t *testing.T) {
	e := start(t, setup{gateway: server.Config{QueueBytes: 64 << 20, DrainTimeout: 3 * wait}})
	rc := e.dialRaw(t, nil)
	payload := bytes.Repeat([]byte("x"), 64000)
	for range 256 { // 16 MB: more than loopback's socket buffers hold
		e.sendAsync(t, rc.ID(), tlsgatev1.Encoding_ENCODING_JSON, payload)
	}
	resp, err := e.api.Disconnect(timeout(t, 500*time.Millisecond), &tlsgatev1.DisconnectRequest{SessionId: rc.ID()})
	if err != nil {
		t.Fatalf("Disconnect: %v; want the final state", err)
	}
	if cc := resp.GetConnection(); cc.GetOutcome() != tlsgatev1.Outcome_OUTCOME_FORCED || cc.GetCounters().GetUnwritten() == 0 {
		t.Fatalf("closed connection %v; want forced with packets unwritten", cc)
	}
}

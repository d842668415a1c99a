package control_test

import (
	"strconv"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
)

// details returns err's status details of type T.
func details[T any](t *testing.T, err error) []T {
	t.Helper()
	var out []T
	for _, d := range status.Convert(err).Details() {
		if v, ok := d.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// TestValidationErrorsNameTheField: an invalid request's INVALID_ARGUMENT
// carries a google.rpc.BadRequest whose one field violation is the field
// the message names, nested paths included.
func TestValidationErrorsNameTheField(t *testing.T) {
	e := start(t, setup{})
	_, sendErr := e.api.SendAsync(timeout(t, wait), &tlsgatev1.SendAsyncRequest{})
	_, listErr := e.api.ListSessions(timeout(t, wait), &tlsgatev1.ListSessionsRequest{States: []tlsgatev1.SessionState{99}})
	st, err := e.api.Consume(timeout(t, wait))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&tlsgatev1.ConsumeRequest{Request: &tlsgatev1.ConsumeRequest_Acks{Acks: &tlsgatev1.ConsumeAcks{
		Acks: []*tlsgatev1.Ack{{SessionId: 1, ThroughSeq: 1}, {ThroughSeq: 1}},
	}}}); err != nil {
		t.Fatal(err)
	}
	_, consumeErr := st.Recv()
	for _, c := range []struct {
		err         error
		field, desc string
	}{
		{sendErr, "session_id", "required"},
		{listErr, "states[0]", "99 is not a session state"},
		{consumeErr, "acks.acks[1].session_id", "required"},
	} {
		wantCode(t, c.err, codes.InvalidArgument, c.field+": "+c.desc)
		brs := details[*errdetails.BadRequest](t, c.err)
		if len(brs) != 1 || len(brs[0].GetFieldViolations()) != 1 {
			t.Fatalf("%v: BadRequest details %v, want one with one violation", c.err, brs)
		}
		if v := brs[0].GetFieldViolations()[0]; v.GetField() != c.field || v.GetDescription() != c.desc {
			t.Fatalf("violation %v, want field %q, description %q", v, c.field, c.desc)
		}
	}
}

// wantInfo checks err's google.rpc.ErrorInfo.
func wantInfo(t *testing.T, err error, reason string, metadata map[string]string) {
	t.Helper()
	infos := details[*errdetails.ErrorInfo](t, err)
	if len(infos) != 1 || infos[0].GetReason() != reason || infos[0].GetDomain() != control.ErrorDomain {
		t.Fatalf("%v: ErrorInfo %v, want one with reason %s, domain %s", err, infos, reason, control.ErrorDomain)
	}
	for k, v := range metadata {
		if got := infos[0].GetMetadata()[k]; got != v {
			t.Fatalf("ErrorInfo metadata %v: %s = %q, want %q", infos[0].GetMetadata(), k, got, v)
		}
	}
}

// TestErrorInfoReasons: NOT_FOUND, FAILED_PRECONDITION and
// RESOURCE_EXHAUSTED carry a google.rpc.ErrorInfo whose reason a client can
// branch on, with the session ID in its metadata.
func TestErrorInfoReasons(t *testing.T) {
	e := start(t, setup{gateway: server.Config{MaxPayload: 16000, QueueBytes: 16004}})
	_, err := e.api.GetSession(timeout(t, wait), &tlsgatev1.GetSessionRequest{SessionId: 123})
	wantCode(t, err, codes.NotFound)
	wantInfo(t, err, control.ReasonSessionNotFound, map[string]string{"session_id": "123"})

	// A client that never reads: the writer keeps the queue (one packet
	// at a time, by its bound) empty until the socket is full, then the
	// queue refuses.
	rc := e.dialRaw(t, nil)
	id := rc.ID()
	err = sendUntilRefused(t, e, id)
	wantCode(t, err, codes.ResourceExhausted, "queue full")
	wantInfo(t, err, control.ReasonQueueFull, map[string]string{"session_id": strconv.FormatUint(id, 10)})

	// A close that waits for the queue to drain: new sends are refused.
	closed := make(chan error, 1)
	go func() {
		_, err := e.api.Disconnect(timeout(t, wait), &tlsgatev1.DisconnectRequest{SessionId: id})
		closed <- err
	}()
	// Until the Disconnect has started the close, a send is refused as
	// queue full, or accepted when the writer has just made room.
	for i := 0; ; i++ {
		_, err = e.api.SendAsync(timeout(t, wait), &tlsgatev1.SendAsyncRequest{SessionId: id, Payload: []byte("x")})
		if c := status.Code(err); c != codes.ResourceExhausted && c != codes.OK {
			break
		}
		if i > 100000 {
			t.Fatal("the close did not start within 100,000 sends")
		}
	}
	wantCode(t, err, codes.FailedPrecondition, "closing")
	wantInfo(t, err, control.ReasonSessionClosing, map[string]string{"session_id": strconv.FormatUint(id, 10)})
	go func() { // let the close finish: read everything, then EOF
		for {
			if _, err := rc.ReadFrame(); err != nil {
				return
			}
		}
	}()
	_ = rc.CloseWrite()
	if err := <-closed; err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
}

// TestErrorInfoMemoryFull: past the gateway's memory bound, a send to a
// session that holds something is RESOURCE_EXHAUSTED with reason
// MEMORY_FULL, not QUEUE_FULL: its own queue has room.
func TestErrorInfoMemoryFull(t *testing.T) {
	e := start(t, setup{gateway: server.Config{MaxMemory: 1}})
	rc := e.dialRaw(t, nil) // never reads
	id := rc.ID()
	err := sendUntilRefused(t, e, id)
	wantCode(t, err, codes.ResourceExhausted, "memory bound")
	wantInfo(t, err, control.ReasonMemoryFull, map[string]string{"session_id": strconv.FormatUint(id, 10)})
}

// sendUntilRefused sends 16 KB packets to session id, whose client does
// not read, until one is refused, and returns the refusal.
func sendUntilRefused(t *testing.T, e *env, id uint64) error {
	t.Helper()
	for range 100000 {
		if _, err := e.api.SendAsync(timeout(t, wait), &tlsgatev1.SendAsyncRequest{SessionId: id, Payload: make([]byte, 16000)}); err != nil {
			return err
		}
	}
	t.Fatal("100,000 packets of 16 KB accepted by a client that does not read")
	return nil
}

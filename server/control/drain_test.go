package control_test

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tlsgate/tlsgate/client"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
)

func drainOne(id uint64, ack bool) *tlsgatev1.DrainRequest {
	return &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_SessionId{SessionId: id}, Ack: ack}
}

// TestDrain: without ack, Drain returns once everything queued before it
// is flushed to the connection.
func TestDrain(t *testing.T) {
	const n = 50
	e := start(t, setup{})
	c := e.dialGo(t, nil)
	for i := range n {
		e.sendAsync(t, c.ID(), tlsgatev1.Encoding_ENCODING_JSON, fmt.Appendf(nil, "%d", i))
	}
	resp, err := e.api.Drain(timeout(t, wait), drainOne(c.ID(), false))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetSessions()) != 1 {
		t.Fatalf("%d sessions in %v", len(resp.GetSessions()), resp)
	}
	d := resp.GetSessions()[0]
	if d.GetSessionId() != c.ID() || d.GetTargetSeq() != n || d.GetFlushedSeq() != n || d.GetAcknowledged() || d.GetError() != "" {
		t.Fatalf("drain %v; want session %d flushed through %d of %d, not acknowledged", d, c.ID(), n, n)
	}
	if resp.GetElapsed() == nil || resp.GetElapsed().AsDuration() <= 0 {
		t.Fatalf("elapsed %v", resp.GetElapsed())
	}
	// Flushed means on the wire: the client gets them all without another
	// nudge from the server.
	for i := range n {
		if p, err := c.Recv(timeout(t, wait)); err != nil || string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("packet %d: %q, %v", i, p.Payload, err)
		}
	}
}

// TestDrainAck: with ack, Drain returns once the client has consumed every
// packet queued before it, and the session records the barrier.
func TestDrainAck(t *testing.T) {
	const n = 500
	e := start(t, setup{})
	var consumed atomic.Int64
	c := e.dialGo(t, nil, client.WithHandler(func(client.Packet) { consumed.Add(1) }))
	for i := range n {
		e.sendAsync(t, c.ID(), tlsgatev1.Encoding_ENCODING_JSON, fmt.Appendf(nil, "%d", i))
	}
	resp, err := e.api.Drain(timeout(t, wait), drainOne(c.ID(), true))
	got := consumed.Load()
	if err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("Drain with ack returned when the client had consumed %d of %d", got, n)
	}
	d := resp.GetSessions()[0]
	if d.GetTargetSeq() != n || d.GetFlushedSeq() < n || !d.GetAcknowledged() || d.GetError() != "" {
		t.Fatalf("drain %v; want flushed through %d, acknowledged", d, n)
	}
	if s := e.getSession(t, c.ID()); s.GetLastFlushAckSeq() != 1 {
		t.Fatalf("last_flush_ack_seq %d after the first barrier, want 1", s.GetLastFlushAckSeq())
	}
}

// TestDrainAllSessions drains several sessions in parallel and reports
// them ordered by session ID.
func TestDrainAllSessions(t *testing.T) {
	e := start(t, setup{})
	want := map[uint64]uint64{}
	for i := range 4 {
		// A client with a handler consumes as it reads, so it answers
		// barriers at once.
		c := e.dialGo(t, nil, client.WithHandler(func(client.Packet) {}))
		for j := range 10 * (i + 1) {
			e.sendAsync(t, c.ID(), tlsgatev1.Encoding_ENCODING_JSON, fmt.Appendf(nil, "%d", j))
		}
		want[c.ID()] = uint64(10 * (i + 1))
	}
	resp, err := e.api.Drain(timeout(t, wait), &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_AllSessions{AllSessions: true}, Ack: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetSessions()) != len(want) {
		t.Fatalf("%d sessions drained, want %d", len(resp.GetSessions()), len(want))
	}
	for i, d := range resp.GetSessions() {
		if i > 0 && d.GetSessionId() <= resp.GetSessions()[i-1].GetSessionId() {
			t.Fatalf("sessions not ordered by ID: %v", resp.GetSessions())
		}
		if n, ok := want[d.GetSessionId()]; !ok || d.GetTargetSeq() != n || d.GetFlushedSeq() < n || !d.GetAcknowledged() || d.GetError() != "" {
			t.Fatalf("drain %v; want flushed through %d and acknowledged", d, n)
		}
	}
}

// TestDrainDeadlineNeverReads: the client never reads, so the queue cannot
// be written; Drain ends at the call's deadline, saying how far it got.
func TestDrainDeadlineNeverReads(t *testing.T) {
	e := start(t, setup{gateway: server.Config{QueueBytes: 64 << 20}})
	rc := e.dialRaw(t, nil)
	// 16 MB: more than loopback's socket buffers hold.
	payload := bytes.Repeat([]byte("x"), 64000)
	const n = 256
	for range n {
		e.sendAsync(t, rc.ID(), tlsgatev1.Encoding_ENCODING_JSON, payload)
	}
	start := time.Now()
	_, err := e.api.Drain(timeout(t, 500*time.Millisecond), drainOne(rc.ID(), false))
	st := wantCode(t, err, codes.DeadlineExceeded, "drain interrupted", fmt.Sprintf("session %d flushed through seq", rc.ID()), fmt.Sprintf("of %d", n))
	if time.Since(start) > wait {
		t.Fatalf("Drain took %s", time.Since(start))
	}
	d := drainDetail(t, st)
	if d.GetSessionId() != rc.ID() || d.GetTargetSeq() != n || d.GetFlushedSeq() >= n || d.GetAcknowledged() || d.GetError() == "" {
		t.Fatalf("detail %v; want session %d flushed short of %d with an error", d, rc.ID(), n)
	}
}

// TestDrainDeadlineNeverAcks: the client reads but never answers the
// Flush barrier; Drain with ack ends at the deadline, flushed but not
// acknowledged.
func TestDrainDeadlineNeverAcks(t *testing.T) {
	const n = 5
	e := start(t, setup{})
	rc := e.dialRaw(t, nil)
	for i := range n {
		e.sendAsync(t, rc.ID(), tlsgatev1.Encoding_ENCODING_JSON, fmt.Appendf(nil, "%d", i))
	}
	_, err := e.api.Drain(timeout(t, 500*time.Millisecond), drainOne(rc.ID(), true))
	st := wantCode(t, err, codes.DeadlineExceeded, fmt.Sprintf("session %d flushed through seq %d of %d (not acknowledged)", rc.ID(), n, n))
	d := drainDetail(t, st)
	if d.GetTargetSeq() != n || d.GetFlushedSeq() != n || d.GetAcknowledged() {
		t.Fatalf("detail %v; want flushed through %d, not acknowledged", d, n)
	}
}

func drainDetail(t *testing.T, st interface{ Details() []any }) *tlsgatev1.SessionDrain {
	t.Helper()
	for _, d := range st.Details() {
		if resp, ok := d.(*tlsgatev1.DrainResponse); ok {
			if len(resp.GetSessions()) != 1 || resp.GetElapsed() == nil {
				t.Fatalf("DrainResponse detail %v", resp)
			}
			return resp.GetSessions()[0]
		}
	}
	t.Fatalf("no DrainResponse in the status details %v", st.Details())
	return nil
}

// TestDrainErrors: requests refused before any drain, and a barrier
// refused by a closing session.
func TestDrainErrors(t *testing.T) {
	e := start(t, setup{})
	_, err := e.api.Drain(timeout(t, wait), drainOne(12345, false))
	wantCode(t, err, codes.NotFound, "session 12345")
	_, err = e.api.Drain(timeout(t, wait), &tlsgatev1.DrainRequest{})
	wantCode(t, err, codes.InvalidArgument, "target")
	_, err = e.api.Drain(timeout(t, wait), &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_AllSessions{}})
	wantCode(t, err, codes.InvalidArgument, "all_sessions", "must be true")
	_, err = e.api.Drain(timeout(t, wait), drainOne(0, false))
	wantCode(t, err, codes.InvalidArgument, "session_id")
	// No sessions: all_sessions drains nothing, successfully.
	resp, err := e.api.Drain(timeout(t, wait), &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_AllSessions{AllSessions: true}, Ack: true})
	if err != nil || len(resp.GetSessions()) != 0 {
		t.Fatalf("Drain of no sessions = %v, %v", resp, err)
	}
}

// TestDrainAllSessionsReportsPerSession: with all_sessions, a session that
// cannot complete is reported in its entry, even when it is the only one.
func TestDrainAllSessionsReportsPerSession(t *testing.T) {
	e := start(t, setup{})
	rc := e.dialRaw(t, nil)
	e.sendAsync(t, rc.ID(), tlsgatev1.Encoding_ENCODING_JSON, []byte(`"x"`))
	_, err := e.api.Drain(timeout(t, 500*time.Millisecond), &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_AllSessions{AllSessions: true}, Ack: true})
	st := wantCode(t, err, codes.DeadlineExceeded, fmt.Sprintf("session %d flushed through seq 1 of 1 (not acknowledged)", rc.ID()))
	if d := drainDetail(t, st); d.GetSessionId() != rc.ID() || d.GetAcknowledged() || d.GetError() == "" {
		t.Fatalf("detail %v; want the session's own error", d)
	}
}

// TestDrainRefusesAllSessionsFalse: the one member of Drain's target oneof
// a server can see was set wrongly, all_sessions: false, is refused,
// naming the field, rather than taken as a session ID of 0 or as every
// session.
func TestDrainRefusesAllSessionsFalse(t *testing.T) {
	e := start(t, setup{})
	_, err := e.api.Drain(timeout(t, wait), &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_AllSessions{AllSessions: false}})
	wantCode(t, err, codes.InvalidArgument, "all_sessions: must be true when set")
	_, err = e.api.Drain(timeout(t, wait), &tlsgatev1.DrainRequest{})
	wantCode(t, err, codes.InvalidArgument, "target: set session_id or all_sessions")
}

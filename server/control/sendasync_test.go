package control_test

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestSendAsync: each call queues one packet with the next seq; the client
// receives the payloads in order with the encoding asked for (JSON when
// unspecified).
func TestSendAsync(t *testing.T) {
	e := start(t, setup{})
	c := e.dialGo(t, nil)
	sends := []struct {
		enc     tlsgatev1.Encoding
		want    wire.Encoding
		payload string
	}{
		{tlsgatev1.Encoding_ENCODING_UNSPECIFIED, wire.JSON, `"default"`},
		{tlsgatev1.Encoding_ENCODING_JSON, wire.JSON, `{"a":1}`},
		{tlsgatev1.Encoding_ENCODING_MSGPACK, wire.MsgPack, "\x81\xa1a\x01"},
		{tlsgatev1.Encoding_ENCODING_JSON, wire.JSON, ""},
	}
	for i, s := range sends {
		resp := e.sendAsync(t, c.ID(), s.enc, []byte(s.payload))
		if resp.GetSeq() != uint64(i+1) {
			t.Fatalf("send %d: seq %d, want %d", i, resp.GetSeq(), i+1)
		}
		if resp.GetQueueLength() < 1 {
			t.Fatalf("send %d: queue_length %d, want at least the packet itself", i, resp.GetQueueLength())
		}
	}
	for i, s := range sends {
		p, err := c.Recv(timeout(t, wait))
		if err != nil {
			t.Fatalf("Recv %d: %v", i, err)
		}
		if p.Type != wire.TypeData || p.Encoding != s.want || string(p.Payload) != s.payload {
			t.Fatalf("packet %d: %s %s %q, want Data %s %q", i, p.Type, p.Encoding, p.Payload, s.want, s.payload)
		}
	}
}

// TestSendAsyncQueueFull: with a client that never reads, sends are
// accepted until the queue's byte bound, then refused with
// RESOURCE_EXHAUSTED. The refused packet is not queued and takes no seq;
// every accepted one reaches the client, in order, once it reads.
func TestSendAsyncQueueFull(t *testing.T) {
	const payloadLen, queued = 16000, 4
	// A packet is charged its entry and its payload's allocation, at most
	// the 16 KiB size class.
	frame := server.EntryOverhead + 16<<10
	e := start(t, setup{gateway: server.Config{MaxPayload: payloadLen, QueueBytes: queued * frame}})
	rc := e.dialRaw(t, nil)
	payload := func(i int) []byte {
		p := bytes.Repeat([]byte{'x'}, payloadLen)
		copy(p, fmt.Sprintf("%08d", i))
		return p
	}

	// Until the socket buffers are full the writer keeps the queue empty;
	// then the queue fills to its bound.
	var accepted int
	var last *tlsgatev1.SendAsyncResponse
	for {
		if accepted > 10000 {
			t.Fatal("10,000 sends accepted by a queue of 64 KB whose client never reads")
		}
		resp, err := e.api.SendAsync(timeout(t, wait), &tlsgatev1.SendAsyncRequest{SessionId: rc.ID(), Payload: payload(accepted)})
		if err != nil {
			wantCode(t, err, codes.ResourceExhausted, fmt.Sprintf("session %d", rc.ID()), "queue full")
			break
		}
		accepted++
		if resp.GetSeq() != uint64(accepted) {
			t.Fatalf("send %d: seq %d", accepted, resp.GetSeq())
		}
		last = resp
	}
	// The refusal found the bound reached: what is queued, and what the
	// writer has taken and is still writing to the full socket, both count.
	if last.GetQueueLength() < 1 || last.GetQueueLength() > queued {
		t.Fatalf("the last accepted send left %d queued, want 1 to %d", last.GetQueueLength(), queued)
	}
	// The kernel may still take a batch (its buffers grow as they fill).
	s := e.getSession(t, rc.ID())
	if s.GetQueueLength() > queued || s.GetQueueBytes() > uint64(queued*frame) || s.GetQueueLimitBytes() != uint64(queued*frame) {
		t.Fatalf("queue: length %d, bytes %d, limit %d; want at most %d, %d, and %d",
			s.GetQueueLength(), s.GetQueueBytes(), s.GetQueueLimitBytes(), queued, queued*frame, queued*frame)
	}

	// The client reads: everything accepted arrives, in order, and the
	// refused packet does not.
	drained := make(chan error, 1)
	go func() {
		_, err := e.api.Drain(timeout(t, wait), &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_SessionId{SessionId: rc.ID()}})
		drained <- err
	}()
	for i := range accepted {
		f := rc.Read(t)
		if f.Type != wire.TypeData || string(f.Payload[:8]) != fmt.Sprintf("%08d", i) {
			t.Fatalf("frame %d: %s %q…", i, f.Type, f.Payload[:8])
		}
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	// The refused send took no seq, and a barrier proves nothing but what
	// was accepted was written.
	if resp := e.sendAsync(t, rc.ID(), tlsgatev1.Encoding_ENCODING_JSON, []byte("after")); resp.GetSeq() != uint64(accepted+1) {
		t.Fatalf("seq after the refusal %d, want %d", resp.GetSeq(), accepted+1)
	}
	if rest := flushRaw(t, rc, 1); len(rest) != 1 || string(rest[0].Payload) != "after" {
		t.Fatalf("%d frames after the accepted ones, want only %q", len(rest), "after")
	}
}

// TestSendAsyncClosing: once a graceful close has started, SendAsync is
// refused with FAILED_PRECONDITION.
func TestSendAsyncClosing(t *testing.T) {
	e := start(t, setup{gateway: server.Config{LingerTimeout: 3 * wait}})
	rc := e.dialRaw(t, nil)
	disconnected := make(chan error, 1)
	go func() {
		_, err := e.api.Disconnect(timeout(t, 2*wait), &tlsgatev1.DisconnectRequest{SessionId: rc.ID()})
		disconnected <- err
	}()
	// The client reads the server's Goodbye and does not answer it: the
	// session lingers, closing.
	if data, gb := readGoodbye(t, rc); len(data) != 0 || gb.Code != wire.GoodbyeAdmin {
		t.Fatalf("got %d data frames and Goodbye %+v", len(data), gb)
	}
	_, err := e.api.SendAsync(timeout(t, wait), &tlsgatev1.SendAsyncRequest{SessionId: rc.ID(), Payload: []byte("late")})
	wantCode(t, err, codes.FailedPrecondition, fmt.Sprintf("session %d", rc.ID()), "closing")
	// Nor can it take a Drain barrier.
	_, err = e.api.Drain(timeout(t, wait), drainOne(rc.ID(), true))
	wantCode(t, err, codes.FailedPrecondition, fmt.Sprintf("session %d", rc.ID()), "closing")

	_ = rc.Close()
	if err := <-disconnected; err != nil {
		t.Fatalf("Disconnect: %v", err)
	}
	// Once closed, the session is gone.
	_, err = e.api.SendAsync(timeout(t, wait), &tlsgatev1.SendAsyncRequest{SessionId: rc.ID(), Payload: []byte("later")})
	wantCode(t, err, codes.NotFound, strconv.FormatUint(rc.ID(), 10))
}

// TestSendAsyncErrors: requests the server refuses before they reach a
// session.
func TestSendAsyncErrors(t *testing.T) {
	e := start(t, setup{gateway: server.Config{MaxPayload: 1000}})
	rc := e.dialRaw(t, nil)
	for _, tc := range []struct {
		name string
		req  *tlsgatev1.SendAsyncRequest
		code codes.Code
		msg  []string
	}{
		{"no such session", &tlsgatev1.SendAsyncRequest{SessionId: 12345, Payload: []byte("x")}, codes.NotFound, []string{"session 12345", "no such session"}},
		{"session_id 0", &tlsgatev1.SendAsyncRequest{Payload: []byte("x")}, codes.InvalidArgument, []string{"session_id", "required"}},
		{"session_id top bit", &tlsgatev1.SendAsyncRequest{SessionId: 1 << 63}, codes.InvalidArgument, []string{"session_id", "top bit"}},
		{"payload over the maximum", &tlsgatev1.SendAsyncRequest{SessionId: rc.ID(), Payload: make([]byte, 1001)}, codes.InvalidArgument, []string{"payload", "1001", "1000"}},
		{"unknown encoding", &tlsgatev1.SendAsyncRequest{SessionId: rc.ID(), Encoding: 7}, codes.InvalidArgument, []string{"encoding", "7"}},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			_, err := e.api.SendAsync(timeout(t, wait), tc.req)
			wantCode(t, err, tc.code, tc.msg...)
		})
	}
	// A payload of exactly the maximum is fine, and nothing refused was
	// queued: it is seq 1.
	if resp := e.sendAsync(t, rc.ID(), tlsgatev1.Encoding_ENCODING_JSON, make([]byte, 1000)); resp.GetSeq() != 1 {
		t.Fatalf("first accepted send has seq %d", resp.GetSeq())
	}
}

package control_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

type receiveStream = grpc.ServerStreamingClient[tlsgatev1.ReceiveResponse]

// inbound is what a Receive stream delivered for one session.
type inbound struct {
	packets []*tlsgatev1.InboundPacket
	closed  *tlsgatev1.ClosedConnection
}

// readUntilClosed reads rs until it has the closed marker of every session
// in ids, failing on anything for a session not in ids or after its
// marker.
func readUntilClosed(t *testing.T, rs receiveStream, ids ...uint64) map[uint64]*inbound {
	t.Helper()
	got := make(map[uint64]*inbound)
	for _, id := range ids {
		got[id] = &inbound{}
	}
	open := len(ids)
	for open > 0 {
		item, err := rs.Recv()
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		id := item.GetPacket().GetSessionId()
		if item.GetClosed() != nil {
			id = item.GetClosed().GetSessionId()
		}
		in, ok := got[id]
		switch {
		case !ok:
			t.Fatalf("an item of session %d, not selected: %v", id, item)
		case in.closed != nil:
			t.Fatalf("an item of session %d after its closed marker: %v", id, item)
		case item.GetClosed() != nil:
			in.closed = item.GetClosed()
			open--
		default:
			in.packets = append(in.packets, item.GetPacket())
		}
	}
	return got
}

// TestReceive: every open stream gets every packet it selects, in order,
// then the connection's closed marker; a filtered stream gets only its
// sessions'.
func TestReceive(t *testing.T) {
	const n = 20
	e := start(t, setup{})
	a, b := e.dialRaw(t, nil), e.dialRaw(t, nil)
	all1 := e.receive(t, nil)
	all2 := e.receive(t, tlsgatev1.NewControlServiceClient(e.conn(t)))
	onlyA := e.receive(t, nil, a.ID())

	fromAll1 := make(map[uint64]*inbound)
	for _, rc := range []*wiretest.Conn{b, a} {
		for i := range n {
			typ, enc := wire.TypeData, wire.JSON
			if i%5 == 4 {
				typ, enc = wire.TypeError, wire.MsgPack
			}
			rc.WriteFrame(t, typ, enc, fmt.Appendf(nil, "%d:%d", rc.ID(), i))
		}
		// A naive close: no Goodbye.
		_ = rc.Close()
		// b's marker is out before a's first packet: onlyA would see b's
		// items before a's marker if it selected b.
		fromAll1[rc.ID()] = readUntilClosed(t, all1, rc.ID())[rc.ID()]
	}
	check := func(name string, got map[uint64]*inbound) {
		t.Helper()
		for id, in := range got {
			if len(in.packets) != n {
				t.Fatalf("%s: %d packets of session %d, want %d", name, len(in.packets), id, n)
			}
			for i, p := range in.packets {
				typ, enc := tlsgatev1.PacketType_PACKET_TYPE_DATA, tlsgatev1.Encoding_ENCODING_JSON
				if i%5 == 4 {
					typ, enc = tlsgatev1.PacketType_PACKET_TYPE_ERROR, tlsgatev1.Encoding_ENCODING_MSGPACK
				}
				if p.GetSeq() != uint64(i+1) || string(p.GetPayload()) != fmt.Sprintf("%d:%d", id, i) || p.GetType() != typ ||
					p.GetEncoding() != enc || p.GetConnectionId() != in.closed.GetConnectionId() || p.GetReceivedTime() == nil {
					t.Fatalf("%s: packet %d of session %d: %v", name, i, id, p)
				}
			}
			if c := in.closed; c.GetOutcome() != tlsgatev1.Outcome_OUTCOME_PEER_CLOSED || c.GetCounters().GetPacketsIn() != n {
				t.Fatalf("%s: closed marker of session %d: %v", name, id, c)
			}
		}
	}
	check("all1", fromAll1)
	check("all2", readUntilClosed(t, all2, a.ID(), b.ID()))
	check("onlyA", readUntilClosed(t, onlyA, a.ID()))
}

// TestReceiveReplacesFallback: while a stream selects a session, the
// fallback handler (echo) does not run for it; once the stream ends, the
// echo applies again.
func TestReceiveReplacesFallback(t *testing.T) {
	e := start(t, setup{})
	rc := e.dialRaw(t, nil)
	flushSeq := uint64(0)
	// roundTrip sends a packet and a barrier; it returns the echoes written
	// before the FlushAck, which the server writes after processing the
	// packet.
	roundTrip := func(payload string) []wire.Frame {
		rc.WriteFrame(t, wire.TypeData, wire.JSON, []byte(payload))
		flushSeq++
		return flushRaw(t, rc, flushSeq)
	}
	echoed := func(frames []wire.Frame, payload string) bool {
		return len(frames) == 1 && frames[0].Type == wire.TypeData && string(frames[0].Payload) == payload
	}

	if got := roundTrip("one"); !echoed(got, "one") {
		t.Fatalf("no stream: got %d frames, want the echo", len(got))
	}
	// A stream of another session changes nothing for this one.
	other := e.dialRaw(t, nil)
	e.receive(t, nil, other.ID())
	if got := roundTrip("two"); !echoed(got, "two") {
		t.Fatalf("a stream of another session: got %d frames, want the echo", len(got))
	}

	ctx, cancel := context.WithCancel(t.Context())
	rs, err := e.api.Receive(ctx, &tlsgatev1.ReceiveRequest{SessionIds: []uint64{rc.ID()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Header(); err != nil {
		t.Fatal(err)
	}
	if got := roundTrip("three"); len(got) != 0 {
		t.Fatalf("with a stream: %d frames before the FlushAck, the first %q; want no echo", len(got), got[0].Payload)
	}
	if item, err := rs.Recv(); err != nil || string(item.GetPacket().GetPayload()) != "three" || item.GetPacket().GetSeq() != 3 {
		t.Fatalf("stream got %v, %v; want packet 3 \"three\"", item, err)
	}

	// The stream ends; the server unsubscribes it as soon as it notices,
	// after which every packet is echoed again. What the stream took in
	// between and did not send goes to the handler, ahead of the later
	// packets: the echoes come in order, with no gap, up to the last.
	// (What the stream sent before the server noticed is the tap's: the
	// first few may not be echoed.)
	cancel()
	var echoes []string
	for i := 0; ; i++ {
		if i == 1000 {
			t.Fatal("no echo in 1,000 round trips after the stream ended")
		}
		p := fmt.Sprintf("four-%d", i)
		for _, f := range roundTrip(p) {
			echoes = append(echoes, string(f.Payload))
		}
		if len(echoes) > 0 && echoes[len(echoes)-1] == p {
			break
		}
	}
	// A send that completes as the stream ends may have been dropped by
	// gRPC, so the server hands it back to the handler: "three" may be
	// echoed once, first (a duplicate, never a loss).
	if echoes[0] == "three" {
		echoes = echoes[1:]
	}
	var first int
	if _, err := fmt.Sscanf(echoes[0], "four-%d", &first); err != nil {
		t.Fatalf("echo %q", echoes[0])
	}
	for k, got := range echoes {
		if want := fmt.Sprintf("four-%d", first+k); got != want {
			t.Fatalf("echoes after the stream: %q; want four-%d onwards, in order, with no gap", echoes, first)
		}
	}
	if got := roundTrip("five"); !echoed(got, "five") {
		t.Fatalf("after the stream: got %d frames, want the echo", len(got))
	}
}

// TestReceiveSlowConsumer: a stream whose consumer stops reading is cut off
// with RESOURCE_EXHAUSTED once its buffer is full, while the sessions and
// another stream keep going.
func TestReceiveSlowConsumer(t *testing.T) {
	const n, buffer, chunk = 1000, 16, 8
	e := start(t, setup{buffer: buffer})
	a, b := e.dialRaw(t, nil), e.dialRaw(t, nil)
	// Each stream on its own connection, as separate consumers would be.
	stalled := e.receive(t, tlsgatev1.NewControlServiceClient(e.conn(t)))
	live := e.receive(t, tlsgatev1.NewControlServiceClient(e.conn(t)))

	// 8 MB through a's session, far more than the stalled stream's flow
	// control window and buffer hold. The live consumer keeps up: the
	// client sends a chunk (less than a buffer) once the live stream has
	// the previous one. The hub hands packets over without waiting, so a
	// burst larger than the buffer would cut off a reader that keeps up
	// on average, too.
	payload := bytes.Repeat([]byte("x"), 8000)
	for i := range n {
		copy(payload, fmt.Sprintf("%06d", i))
		a.WriteFrame(t, wire.TypeData, wire.JSON, payload)
		if i%chunk != chunk-1 && i != n-1 {
			continue
		}
		for j := i - i%chunk; j <= i; j++ {
			item, err := live.Recv()
			if err != nil {
				t.Fatalf("live stream, packet %d: %v", j, err)
			}
			if p := item.GetPacket(); p.GetSessionId() != a.ID() || p.GetSeq() != uint64(j+1) || string(p.GetPayload()[:6]) != fmt.Sprintf("%06d", j) {
				t.Fatalf("live stream packet %d: %v", j, item)
			}
		}
	}
	// a's reader never stalled on the stream, and nothing was echoed.
	if got := flushRaw(t, a, 1); len(got) != 0 {
		t.Fatalf("%d frames before the FlushAck", len(got))
	}
	// Another session works as well.
	b.WriteFrame(t, wire.TypeData, wire.JSON, []byte("b"))
	flushRaw(t, b, 1)
	_, _ = a.Close(), b.Close()
	got := readUntilClosed(t, live, a.ID(), b.ID())
	if len(got[a.ID()].packets) != 0 || len(got[b.ID()].packets) != 1 || string(got[b.ID()].packets[0].GetPayload()) != "b" {
		t.Fatalf("the live stream's last items: %d of a, %v of b", len(got[a.ID()].packets), got[b.ID()].packets)
	}

	// The stalled stream: what it was sent, then RESOURCE_EXHAUSTED.
	var read int
	for {
		item, err := stalled.Recv()
		if err != nil {
			wantCode(t, err, codes.ResourceExhausted, "fell behind", fmt.Sprint(buffer))
			break
		}
		if p := item.GetPacket(); p.GetSeq() != uint64(read+1) {
			t.Fatalf("stalled stream item %d: %v", read, item)
		}
		read++
	}
	if read >= n {
		t.Fatalf("the stalled stream got all %d packets before it was cut off", read)
	}
	t.Logf("the stalled stream got %d packets before it was cut off", read)
}

// TestReceiveErrors: invalid session filters.
func TestReceiveErrors(t *testing.T) {
	e := start(t, setup{})
	for _, tc := range []struct {
		ids []uint64
		msg string
	}{
		{[]uint64{5, 0}, "session_ids[1]"},
		{slices.Repeat([]uint64{1}, 10001), "session_ids"},
	} {
		t.Run(strings.NewReplacer("[", "", "]", "").Replace(tc.msg), func(t *testing.T) {
			rs, err := e.api.Receive(timeout(t, wait), &tlsgatev1.ReceiveRequest{SessionIds: tc.ids})
			if err == nil {
				_, err = rs.Recv()
			}
			wantCode(t, err, codes.InvalidArgument, tc.msg)
		})
	}
}

// TestReceiveCutsOffByBytes: a stream that does not read is cut off when
// what waits for it reaches its byte bound, long before its item bound:
// a slow tap of large packets holds megabytes, not gigabytes.
func TestReceiveCutsOffByBytes(t *testing.T) {
	const n, size, maxBytes = 400, 60000, 1 << 20 // 24 MB: past the transport's windows and the bound
	e := start(t, setup{buffer: 1 << 20, bufferBytes: maxBytes, fallback: server.Discard{}})
	a := e.dialRaw(t, nil)
	stalled := e.receive(t, nil, a.ID())
	payload := bytes.Repeat([]byte("x"), size)
	for i := range n {
		copy(payload, fmt.Sprintf("%06d", i))
		a.WriteFrame(t, wire.TypeData, wire.JSON, payload)
	}
	flushRaw(t, a, 1) // every packet went past the hub
	var read int
	for {
		item, err := stalled.Recv()
		if err != nil {
			wantCode(t, err, codes.ResourceExhausted, "fell behind", fmt.Sprint(maxBytes), "bytes")
			break
		}
		if p := item.GetPacket(); p.GetSeq() != uint64(read+1) {
			t.Fatalf("stalled stream item %d: %v", read, item)
		}
		read++
	}
	if read >= n {
		t.Fatalf("the stalled stream got all %d packets before it was cut off", read)
	}
}

// seqRecorder is a fallback handler that records the seqs it handles;
// last is closed when it has handled seq upTo.
type seqRecorder struct {
	mu    sync.Mutex
	seqs  []uint64
	upTo  uint64
	last  chan struct{}
	first sync.Once
}

func newSeqRecorder(upTo uint64) *seqRecorder {
	return &seqRecorder{upTo: upTo, last: make(chan struct{})}
}

func (r *seqRecorder) Handle(_ context.Context, _ *server.Session, p server.Packet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seqs = append(r.seqs, p.Seq)
	if p.Seq == r.upTo {
		r.first.Do(func() { close(r.last) })
	}
}

// contiguous fails the test unless the seqs handled are one run, and
// returns its first.
func (r *seqRecorder) contiguous(t *testing.T) uint64 {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seqs) == 0 {
		t.Fatal("the handler got nothing")
	}
	first := r.seqs[0]
	for k, seq := range r.seqs {
		if seq != first+uint64(k) {
			t.Fatalf("the handler got seqs %d.. with a gap at %d: %v", first, k, r.seqs[max(0, k-3):min(k+3, len(r.seqs))])
		}
	}
	return first
}

// stallReceive opens a Receive stream of a new raw client's session that
// reads nothing, and sends n packets of size bytes, then a Flush: what the
// transport's windows do not take stays with the stream, unsent. Cancel
// the returned context to end the stream.
func stallReceive(t *testing.T, e *env, n, size int) (*wiretest.Conn, context.CancelFunc) {
	t.Helper()
	a := e.dialRaw(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	rs, err := e.api.Receive(ctx, &tlsgatev1.ReceiveRequest{SessionIds: []uint64{a.ID()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Header(); err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("x"), size)
	for range n {
		a.WriteFrame(t, wire.TypeData, wire.JSON, payload)
	}
	flushRaw(t, a, 1) // every packet is with the stream (or was cut off with it)
	return a, cancel
}

// TestReceiveEndedStreamHandsBackWhatItHeld: packets a Receive stream took
// in place of the handler and never sent (its client stopped reading,
// then went away) are not lost: the handler gets them, in order, ahead of
// the session's next packet.
func TestReceiveEndedStreamHandsBackWhatItHeld(t *testing.T) {
	// 48 MB: more than the transport's flow-control windows (16 MiB at
	// most) and the stream's own buffer hold, so some stay unsent.
	const n, size = 3000, 16000
	rec := newSeqRecorder(0)
	e := start(t, setup{fallback: rec})
	a, cancel := stallReceive(t, e, n, size)
	cancel()
	// Once the server has noticed, the next packet goes to the handler,
	// after what the stream held.
	for i := uint64(2); ; i++ {
		a.WriteFrame(t, wire.TypeData, wire.JSON, []byte("next"))
		flushRaw(t, a, i)
		rec.mu.Lock()
		done := len(rec.seqs) > 0
		rec.mu.Unlock()
		if done {
			break
		}
	}
	if first := rec.contiguous(t); first > n {
		t.Fatalf("the handler got only the packets after the stream (from %d): the stream's unsent ones were lost", first)
	}
}

// TestReceiveStreamEndingAfterItsSessionHandsBackWhatItHeld: when the
// session ended first, no reader comes for the stream's unsent packets;
// the stream's end hands them to the handler itself.
func TestReceiveStreamEndingAfterItsSessionHandsBackWhatItHeld(t *testing.T) {
	const n, size = 3000, 16000 // 48 MB: within the stream's 64 MiB buffer
	rec := newSeqRecorder(n)
	e := start(t, setup{fallback: rec, bufferBytes: 64 << 20})
	ws, _ := e.watch(t)
	a, cancel := stallReceive(t, e, n, size)
	if err := a.TLS().Close(); err != nil {
		t.Fatal(err)
	}
	closedEvent(t, ws, a.ID()) // the session has ended
	cancel()
	select {
	case <-rec.last:
	case <-timeout(t, wait).Done():
		rec.mu.Lock()
		defer rec.mu.Unlock()
		t.Fatalf("the handler never got packet %d; it got %d packets", n, len(rec.seqs))
	}
	if first := rec.contiguous(t); first == 1 {
		t.Fatalf("the handler got every packet: none reached the stream")
	}
}

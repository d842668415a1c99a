package control_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// wantResult fails the test unless r is a queued item with seq, or, when
// code is not OK, an item error with code whose message contains substr.
func wantResult(t *testing.T, i int, r *tlsgatev1.SendResult, seq uint64, code codes.Code, substr string) {
	t.Helper()
	if code == codes.OK {
		if r.GetError() != nil || r.GetSeq() != seq || r.GetQueueLength() < 1 {
			t.Fatalf("item %d: %v; want queued with seq %d", i, r, seq)
		}
		return
	}
	e := r.GetError()
	if e == nil || codes.Code(e.GetCode()) != code || !strings.Contains(e.GetMessage(), substr) || r.GetSeq() != 0 {
		t.Fatalf("item %d: %v; want error %s containing %q", i, r, code, substr)
	}
}

// TestSendBatchAnswersItemForItem: a batch for two sessions with bad items
// among good ones queues the good ones, in order per session, and answers
// each bad one with its own status naming the field; the call succeeds.
func TestSendBatchAnswersItemForItem(t *testing.T) {
	e := start(t, setup{gateway: server.Config{MaxPayload: 100}})
	a, b := e.dialRaw(t, nil), e.dialRaw(t, nil)
	const unknown = 12345
	items := []*tlsgatev1.SendItem{
		{SessionId: a.ID(), Payload: []byte(`"a1"`)},
		{SessionId: b.ID(), Payload: []byte("\xa2b1"), Encoding: tlsgatev1.Encoding_ENCODING_MSGPACK},
		{SessionId: 0, Payload: []byte(`"no session"`)},
		{SessionId: unknown, Payload: []byte(`"unknown"`)},
		{SessionId: a.ID(), Payload: []byte(`"a2"`)},
		{SessionId: a.ID(), Payload: bytes.Repeat([]byte("x"), 101)},
		{SessionId: b.ID(), Payload: []byte(`"bad encoding"`), Encoding: 9},
		{SessionId: b.ID(), Payload: []byte(`"b2"`), Encoding: tlsgatev1.Encoding_ENCODING_JSON},
	}
	resp, err := e.api.SendBatch(timeout(t, wait), &tlsgatev1.SendBatchRequest{Items: items})
	if err != nil {
		t.Fatalf("SendBatch: %v", err)
	}
	rs := resp.GetResults()
	if len(rs) != len(items) {
		t.Fatalf("%d results for %d items", len(rs), len(items))
	}
	wantResult(t, 0, rs[0], 1, codes.OK, "")
	wantResult(t, 1, rs[1], 1, codes.OK, "")
	wantResult(t, 2, rs[2], 0, codes.InvalidArgument, "items[2].session_id: required")
	wantResult(t, 3, rs[3], 0, codes.NotFound, fmt.Sprintf("session %d: no such session", unknown))
	wantResult(t, 4, rs[4], 2, codes.OK, "")
	wantResult(t, 5, rs[5], 0, codes.InvalidArgument, "items[5].payload: 101 bytes is over the maximum payload of 100 bytes")
	wantResult(t, 6, rs[6], 0, codes.InvalidArgument, "items[6].encoding: 9 is not a known encoding")
	wantResult(t, 7, rs[7], 2, codes.OK, "")

	for _, want := range []string{`"a1"`, `"a2"`} {
		if f := a.Read(t); f.Type != wire.TypeData || f.Encoding != wire.JSON || string(f.Payload) != want {
			t.Fatalf("session a: %s %s %q, want Data JSON %q", f.Type, f.Encoding, f.Payload, want)
		}
	}
	if f := b.Read(t); f.Encoding != wire.MsgPack || string(f.Payload) != "\xa2b1" {
		t.Fatalf("session b: %s %q, want the MessagePack packet", f.Encoding, f.Payload)
	}
	if f := b.Read(t); f.Encoding != wire.JSON || string(f.Payload) != `"b2"` {
		t.Fatalf("session b: %s %q, want %q", f.Encoding, f.Payload, `"b2"`)
	}
}

// TestSendBatchRefusesABadCall: what is wrong with the call as a whole
// (no items, too many, an unknown policy) is INVALID_ARGUMENT naming the
// field, and nothing is queued.
func TestSendBatchRefusesABadCall(t *testing.T) {
	e := start(t, setup{})
	a := e.dialRaw(t, nil)
	item := &tlsgatev1.SendItem{SessionId: a.ID(), Payload: []byte(`"x"`)}
	tooMany := make([]*tlsgatev1.SendItem, 10001)
	for i := range tooMany {
		tooMany[i] = item
	}
	for _, tc := range []struct {
		req  *tlsgatev1.SendBatchRequest
		want string
	}{
		{&tlsgatev1.SendBatchRequest{}, "items: at least one item is required"},
		{&tlsgatev1.SendBatchRequest{Items: tooMany}, "items: 10001 items is over the maximum of 10000"},
		{&tlsgatev1.SendBatchRequest{Items: []*tlsgatev1.SendItem{item}, FullQueue: 7}, "full_queue: 7 is not a known policy"},
	} {
		_, err := e.api.SendBatch(timeout(t, wait), tc.req)
		wantCode(t, err, codes.InvalidArgument, tc.want)
	}
	if s := e.getSession(t, a.ID()); s.GetQueueLength() != 0 || s.GetCounters().GetPacketsOut() != 0 {
		t.Fatalf("after refused calls: queue %d, packets out %d; want nothing sent", s.GetQueueLength(), s.GetCounters().GetPacketsOut())
	}
}

// TestSendStreamKeepsOrderPerSession: a stream of batches interleaving
// three sessions gets one response per request, in order, item for item,
// with each session's seqs consecutive; each client receives its packets
// in stream order.
func TestSendStreamKeepsOrderPerSession(t *testing.T) {
	const requests, perRequest = 40, 30
	e := start(t, setup{})
	clients := []*wiretest.Conn{e.dialRaw(t, nil), e.dialRaw(t, nil), e.dialRaw(t, nil)}
	st, err := e.api.SendStream(timeout(t, wait))
	if err != nil {
		t.Fatal(err)
	}
	// The client reads in parallel: the queues are bounded.
	read := make([]chan error, len(clients))
	for k, c := range clients {
		read[k] = make(chan error, 1)
		go func() {
			for n := range requests * perRequest / len(clients) {
				f, err := c.ReadFrame()
				if err == nil && string(f.Payload) != fmt.Sprintf("%d", n) {
					err = fmt.Errorf("packet %d is %q", n, f.Payload)
				}
				if err != nil {
					read[k] <- fmt.Errorf("client %d: %w", k, err)
					return
				}
			}
			read[k] <- nil
		}()
	}
	sent := make([]int, len(clients)) // per client, packets sent so far
	for r := range requests {
		req := &tlsgatev1.SendStreamRequest{}
		for i := range perRequest {
			k := (r*perRequest + i) % len(clients)
			req.Items = append(req.Items, &tlsgatev1.SendItem{SessionId: clients[k].ID(), Payload: fmt.Appendf(nil, "%d", sent[k])})
			sent[k]++
		}
		if err := st.Send(req); err != nil {
			t.Fatalf("Send %d: %v", r, err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("Recv %d: %v", r, err)
		}
		if len(resp.GetResults()) != perRequest {
			t.Fatalf("response %d: %d results, want %d", r, len(resp.GetResults()), perRequest)
		}
		for i, res := range resp.GetResults() {
			// Round robin: item g of the stream is packet g/3 of its session.
			wantResult(t, i, res, uint64((r*perRequest+i)/len(clients)+1), codes.OK, "")
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, want the stream's end", err)
	}
	for k := range clients {
		if err := <-read[k]; err != nil {
			t.Fatal(err)
		}
	}
}

// itemFailed is an item's error as a Go error.
type itemFailed struct {
	i int
	e *tlsgatev1.ItemError
}

func (f itemFailed) Error() string {
	return fmt.Sprintf("item %d: %s: %s", f.i, codes.Code(f.e.GetCode()), f.e.GetMessage())
}

// sendStreamWait streams n packets of size bytes to id with the WAIT
// policy, one per request, and reports each response's error (nil when
// every item was queued) on the returned channel, closed at the end.
func sendStreamWait(t *testing.T, e *env, id uint64, n, size int) <-chan error {
	t.Helper()
	st, err := e.api.SendStream(timeout(t, wait))
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan error, n)
	go func() {
		defer close(results)
		for i := range n {
			p := bytes.Repeat([]byte{'x'}, size)
			copy(p, fmt.Sprintf("%08d", i))
			req := &tlsgatev1.SendStreamRequest{
				Items:     []*tlsgatev1.SendItem{{SessionId: id, Payload: p}},
				FullQueue: tlsgatev1.FullQueuePolicy_FULL_QUEUE_POLICY_WAIT,
			}
			if err := st.Send(req); err != nil {
				results <- fmt.Errorf("send %d: %w", i, err)
				return
			}
			resp, err := st.Recv()
			if err == nil && len(resp.GetResults()) != 1 {
				err = fmt.Errorf("response %d: %d results, want 1", i, len(resp.GetResults()))
			}
			if err == nil && resp.GetResults()[0].GetError() != nil {
				err = itemFailed{i, resp.GetResults()[0].GetError()}
			}
			results <- err
			if err != nil {
				return
			}
		}
		_ = st.CloseSend()
	}()
	return results
}

// TestSendStreamWaitSlowsInsteadOfRejecting: with WAIT, a stream to a
// client that does not read sends far more than the queue and the socket
// buffers hold, yet no item is rejected: the stream waits. Meanwhile sends
// to another session on another call go through. Once the client reads,
// it receives every packet, in order.
func TestSendStreamWaitSlowsInsteadOfRejecting(t *testing.T) {
	// 2,000 × 16 KB = 32 MB: far beyond a 64 KB queue and what loopback
	// sockets buffer (a few MB).
	const n, size = 2000, 16000
	e := start(t, setup{gateway: server.Config{MaxPayload: size, QueueBytes: 4 * (wire.HeaderLen + size)}})
	slow, other := e.dialRaw(t, nil), e.dialRaw(t, nil)
	results := sendStreamWait(t, e, slow.ID(), n, size)

	// The slow session's queue fills up; the stream waits, and another
	// session is not held up.
	resp, err := e.api.SendBatch(timeout(t, wait), &tlsgatev1.SendBatchRequest{Items: []*tlsgatev1.SendItem{{SessionId: other.ID(), Payload: []byte(`"other"`)}}})
	if err != nil {
		t.Fatal(err)
	}
	wantResult(t, 0, resp.GetResults()[0], 1, codes.OK, "")
	if f := other.Read(t); string(f.Payload) != `"other"` {
		t.Fatalf("other session: %q", f.Payload)
	}

	// The slow client reads: every packet, in order, and no item failed.
	for i := range n {
		f := slow.Read(t)
		if f.Type != wire.TypeData || string(f.Payload[:8]) != fmt.Sprintf("%08d", i) {
			t.Fatalf("packet %d: %s %q…", i, f.Type, f.Payload[:8])
		}
	}
	got := 0
	for err := range results {
		if err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got != n {
		t.Fatalf("%d responses, want %d", got, n)
	}
}

// TestSendStreamWaitEndsWhenTheSessionCloses: a stream waiting for room in
// the queue of a client that does not read does not wait forever when the
// session is closed: its item fails with NOT_FOUND.
func TestSendStreamWaitEndsWhenTheSessionCloses(t *testing.T) {
	const size = 16000
	// Room for 4 packets: each is charged its payload's allocation (at most
	// the 16 KiB size class) and the queue's per-entry overhead.
	e := start(t, setup{gateway: server.Config{MaxPayload: size, QueueBytes: 4 * (server.EntryOverhead + 16<<10)}})
	slow := e.dialRaw(t, nil)
	results := sendStreamWait(t, e, slow.ID(), 100000, size)
	// Wait until the queue is full: then the stream is waiting.
	ws, _ := e.watch(t)
	for s := e.getSession(t, slow.ID()); s.GetQueueBytes()+uint64(server.EntryOverhead+size) <= s.GetQueueLimitBytes(); s = e.getSession(t, slow.ID()) {
		// Each response is one more packet queued; the queue fills within
		// a few MB of the socket buffers.
		if err := <-results; err != nil {
			t.Fatalf("before the close: %v", err)
		}
	}
	if _, err := e.api.Disconnect(timeout(t, wait), &tlsgatev1.DisconnectRequest{SessionId: slow.ID(), Force: true}); err != nil {
		t.Fatal(err)
	}
	closedEvent(t, ws, slow.ID())
	var last error
	for err := range results {
		last = err
	}
	// The item that was waiting fails with "session closed"; one that came
	// after the close with "no such session": NOT_FOUND either way.
	var f itemFailed
	if !errors.As(last, &f) || codes.Code(f.e.GetCode()) != codes.NotFound {
		t.Fatalf("the stream's last item ended with %v, want NOT_FOUND", last)
	}
}

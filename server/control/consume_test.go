package control_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/tlsgate/tlsgate/client"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
	"github.com/tlsgate/tlsgate/wire"
)

type consumer = grpc.BidiStreamingClient[tlsgatev1.ConsumeRequest, tlsgatev1.ConsumeResponse]

// consume opens a Consume stream with open and waits until it is a member
// of its group (the response headers).
func (e *env) consume(ctx context.Context, t *testing.T, open *tlsgatev1.ConsumeOpen) consumer {
	t.Helper()
	st, err := e.api.Consume(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&tlsgatev1.ConsumeRequest{Request: &tlsgatev1.ConsumeRequest_Open{Open: open}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Header(); err != nil {
		t.Fatalf("Consume headers: %v", err)
	}
	return st
}

// nextPackets reads deliveries until n packets have come and returns
// them, failing on an end marker.
func nextPackets(t *testing.T, st consumer, n int) []*tlsgatev1.Delivery {
	t.Helper()
	var out []*tlsgatev1.Delivery
	for len(out) < n {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("Consume Recv after %d packets: %v", len(out), err)
		}
		for _, d := range resp.GetDeliveries() {
			if d.GetPacket() == nil {
				t.Fatalf("delivery %d: %v, want a packet", len(out), d)
			}
			out = append(out, d)
		}
	}
	if len(out) != n {
		t.Fatalf("%d packets delivered, want %d", len(out), n)
	}
	return out
}

func ack(t *testing.T, st consumer, id, through uint64) {
	t.Helper()
	req := &tlsgatev1.ConsumeRequest{Request: &tlsgatev1.ConsumeRequest_Acks{Acks: &tlsgatev1.ConsumeAcks{
		Acks: []*tlsgatev1.Ack{{SessionId: id, ThroughSeq: through}},
	}}}
	if err := st.Send(req); err != nil {
		t.Fatal(err)
	}
}

// wantPackets checks deliveries against the payloads "first".."first+n-1"
// of session id, with seqs from first, redelivered or not.
func wantPackets(t *testing.T, ds []*tlsgatev1.Delivery, id uint64, first int, redelivered bool) {
	t.Helper()
	for i, d := range ds {
		p := d.GetPacket()
		want := first + i
		if p.GetSessionId() != id || p.GetSeq() != uint64(want) || string(p.GetPayload()) != fmt.Sprint(want) || d.GetRedelivered() != redelivered {
			t.Fatalf("delivery %d: session %d seq %d %q redelivered %v; want session %d seq %d %q redelivered %v",
				i, p.GetSessionId(), p.GetSeq(), p.GetPayload(), d.GetRedelivered(), id, want, fmt.Sprint(want), redelivered)
		}
	}
}

// sendNumbered sends Data packets "from".."to" on c.
func sendNumbered(t *testing.T, c *client.Conn, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := c.Send(timeout(t, wait), client.Data(fmt.Append(nil, i))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConsumeDeliversInOrderAndFlushWaitsForTheAck: a consumer gets each
// session's packets in order with their seqs, and not the in-process
// handler (no echo); the client's Flush is answered only once the consumer
// acked what came before it.
func TestConsumeDeliversInOrderAndFlushWaitsForTheAck(t *testing.T) {
	e := start(t, setup{})
	st := e.consume(timeout(t, streamLife), t, &tlsgatev1.ConsumeOpen{})
	a, b := e.dialGo(t, nil), e.dialGo(t, nil)
	sendNumbered(t, a, 1, 50)
	sendNumbered(t, b, 1, 50)
	got := map[uint64][]*tlsgatev1.Delivery{}
	for _, d := range nextPackets(t, st, 100) {
		id := d.GetPacket().GetSessionId()
		got[id] = append(got[id], d)
	}
	wantPackets(t, got[a.ID()], a.ID(), 1, false)
	wantPackets(t, got[b.ID()], b.ID(), 1, false)
	ack(t, st, b.ID(), 50)

	flushed := make(chan time.Time, 1)
	go func() {
		if err := a.Flush(timeout(t, wait)); err != nil {
			t.Errorf("Flush: %v", err)
		}
		flushed <- time.Now()
	}()
	// The Flush waits for the ack of a's 50 packets.
	acked := time.Now()
	ack(t, st, a.ID(), 50)
	if at := <-flushed; at.Before(acked) {
		t.Fatalf("FlushAck at %s, before the consumer acked (%s)", at.Format(time.StampMicro), acked.Format(time.StampMicro))
	}
	// No echo: the consumer took the packets, not the echo handler.
	if err := a.Flush(timeout(t, wait)); err != nil {
		t.Fatal(err)
	}
	wantNoPacket(t, a)
}

// wantNoPacket fails if c has a packet waiting. Call it after a Flush:
// anything the gateway sent before the FlushAck is waiting by then.
func wantNoPacket(t *testing.T, c *client.Conn) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if p, err := c.Recv(ctx); err == nil {
		t.Fatalf("the client received %q: the echo handler took a consumed packet", p.Payload)
	}
}

// TestConsumeRedeliversWhatWasNotAcked: a member that ends after acking
// part of a session's packets leaves the rest, in order and flagged
// redelivered, to the other member of its group, which also gets the
// session's later packets, not flagged. Nothing acked comes again.
func TestConsumeRedeliversWhatWasNotAcked(t *testing.T) {
	e := start(t, setup{})
	first := e.consume(timeout(t, streamLife), t, &tlsgatev1.ConsumeOpen{Group: "workers"})
	c := e.dialGo(t, nil)
	sendNumbered(t, c, 1, 10)
	wantPackets(t, nextPackets(t, first, 10), c.ID(), 1, false)
	// A second member: the session stays with the first (sticky).
	second := e.consume(timeout(t, streamLife), t, &tlsgatev1.ConsumeOpen{Group: "workers"})
	ack(t, first, c.ID(), 4)
	// The first ends after its ack (the stream is ordered: the ack counts).
	if err := first.CloseSend(); err != nil {
		t.Fatal(err)
	}
	wantPackets(t, nextPackets(t, second, 6), c.ID(), 5, true)
	sendNumbered(t, c, 11, 12)
	wantPackets(t, nextPackets(t, second, 2), c.ID(), 11, false)
}

// TestConsumeGroupsEachGetEveryPacket: two groups both receive every
// packet.
func TestConsumeGroupsEachGetEveryPacket(t *testing.T) {
	e := start(t, setup{})
	one := e.consume(timeout(t, streamLife), t, &tlsgatev1.ConsumeOpen{Group: "one"})
	two := e.consume(timeout(t, streamLife), t, &tlsgatev1.ConsumeOpen{Group: "two"})
	c := e.dialGo(t, nil)
	sendNumbered(t, c, 1, 20)
	wantPackets(t, nextPackets(t, one, 20), c.ID(), 1, false)
	wantPackets(t, nextPackets(t, two, 20), c.ID(), 1, false)
}

// TestConsumeBackPressureStopsReading: a consumer that acks nothing gets
// up to its limit of unacked packets and no more: the gateway stops
// reading the client, whose writes block, rather than buffer; acks let the
// rest through, in order.
func TestConsumeBackPressureStopsReading(t *testing.T) {
	const limit, size = 8, 16000
	const n = 2000 // 32 MB: far more than the socket buffers hold
	e := start(t, setup{})
	st := e.consume(timeout(t, streamLife), t, &tlsgatev1.ConsumeOpen{MaxUnackedPackets: limit})
	rc := e.dialRaw(t, nil)
	written := writeNumbered(rc, n, size)
	ds := nextPackets(t, st, limit)
	if st := e.hub.Stats(); st.UnackedPackets != limit || st.UnackedBytes != limit*size {
		t.Fatalf("hub: %d packets, %d bytes unacked; want the limit, %d and %d", st.UnackedPackets, st.UnackedBytes, limit, limit*size)
	}
	select {
	case err := <-written:
		t.Fatalf("the client wrote 32 MB (%v) while its consumer acked nothing", err)
	default:
	}
	// Ack batch by batch: everything arrives, in order.
	ackInOrder(t, st, rc.ID(), ds, n)
	if err := <-written; err != nil {
		t.Fatal(err)
	}
}

// writeNumbered writes n Data frames of size bytes, numbered in their
// first 8, on rc from a goroutine, and reports the end of it.
func writeNumbered(rc *wiretest.Conn, n, size int) <-chan error {
	written := make(chan error, 1)
	go func() {
		for i := range n {
			p := make([]byte, size)
			copy(p, fmt.Sprintf("%08d", i+1))
			if _, err := rc.TLS().Write(wire.AppendFrame(nil, wire.TypeData, wire.JSON, p)); err != nil {
				written <- err
				return
			}
		}
		written <- nil
	}()
	return written
}

// ackInOrder checks the deliveries of writeNumbered's n packets of session
// id, first ds and then what st receives, in order, acking each batch.
func ackInOrder(t *testing.T, st consumer, id uint64, ds []*tlsgatev1.Delivery, n int) {
	t.Helper()
	for got := 0; got < n; {
		for _, d := range ds {
			got++
			p := d.GetPacket()
			if want := fmt.Sprintf("%08d", got); p == nil || string(p.GetPayload()[:8]) != want || p.GetSeq() != uint64(got) {
				t.Fatalf("delivery %d: %v", got, d)
			}
		}
		ack(t, st, id, uint64(got))
		if got < n {
			resp, err := st.Recv()
			if err != nil {
				t.Fatalf("Consume Recv after %d packets: %v", got, err)
			}
			ds = resp.GetDeliveries()
		}
	}
}

// TestConsumeRefusesABadOpen: the first request must be an open with
// valid fields; the error names the field.
func TestConsumeRefusesABadOpen(t *testing.T) {
	e := start(t, setup{})
	for _, tc := range []struct {
		req  *tlsgatev1.ConsumeRequest
		want string
	}{
		{&tlsgatev1.ConsumeRequest{Request: &tlsgatev1.ConsumeRequest_Acks{Acks: &tlsgatev1.ConsumeAcks{}}}, "open: the first request must open the stream"},
		{&tlsgatev1.ConsumeRequest{Request: &tlsgatev1.ConsumeRequest_Open{Open: &tlsgatev1.ConsumeOpen{Group: "Bad Group"}}}, `open.group: "Bad Group" must be`},
		{&tlsgatev1.ConsumeRequest{Request: &tlsgatev1.ConsumeRequest_Open{Open: &tlsgatev1.ConsumeOpen{MaxUnackedBytes: 10}}}, "open.max_unacked_bytes: 10 is not between"},
	} {
		st, err := e.api.Consume(timeout(t, wait))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(tc.req); err != nil {
			t.Fatal(err)
		}
		_, err = st.Recv()
		wantCode(t, err, codes.InvalidArgument, tc.want)
	}
}

// TestConsumePausedConnectionClosesClean: a graceful Disconnect of a
// client whose reads are paused by back-pressure does not wait out the
// linger timeout: the close reads on, every packet the client sent still
// reaches the group (past the limit), then the end marker, and the close
// is clean.
func TestConsumePausedConnectionClosesClean(t *testing.T) {
	const limit, n = 8, 200
	e := start(t, setup{gateway: server.Config{LingerTimeout: time.Hour, DrainTimeout: time.Hour}})
	st := e.consume(timeout(t, streamLife), t, &tlsgatev1.ConsumeOpen{MaxUnackedPackets: limit})
	c := e.dialGo(t, nil)
	var sent []<-chan error
	for i := 1; i <= n; i++ {
		sent = append(sent, c.SendAsync(client.Data(fmt.Append(nil, i))))
	}
	wantPackets(t, nextPackets(t, st, limit), c.ID(), 1, false)

	disc, err := e.api.Disconnect(timeout(t, wait), &tlsgatev1.DisconnectRequest{SessionId: c.ID()})
	if err != nil {
		t.Fatal(err)
	}
	if cc := disc.GetConnection(); cc.GetOutcome() != tlsgatev1.Outcome_OUTCOME_CLEAN {
		t.Fatalf("Disconnect: %v, want a clean close", cc)
	}
	for i, ch := range sent {
		if err := <-ch; err != nil {
			t.Fatalf("client send %d: %v", i+1, err)
		}
	}
	// The rest, then the end marker, which ends the deliveries.
	var rest []*tlsgatev1.Delivery
	for {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("Consume Recv after %d more packets: %v", len(rest), err)
		}
		ds := resp.GetDeliveries()
		for i, d := range ds {
			if cc := d.GetClosed(); cc != nil {
				if cc.GetSessionId() != c.ID() || i != len(ds)-1 {
					t.Fatalf("end marker %v at %d of %d", cc, i, len(ds))
				}
				wantPackets(t, rest, c.ID(), limit+1, false)
				if len(rest) != n-limit {
					t.Fatalf("%d packets after the first %d, want %d", len(rest), limit, n-limit)
				}
				return
			}
			rest = append(rest, d)
		}
	}
}

// TestConsumeLeftoversGoToTheHandler: with --no-consumer handler (the
// default), what a group held when its last member left goes to the
// in-process handler, in order, before the session's later packets: the
// echo handler echoes them all, in order.
func TestConsumeLeftoversGoToTheHandler(t *testing.T) {
	e := start(t, setup{})
	st := e.consume(timeout(t, streamLife), t, &tlsgatev1.ConsumeOpen{})
	c := e.dialGo(t, nil)
	sendNumbered(t, c, 1, 5)
	wantPackets(t, nextPackets(t, st, 5), c.ID(), 1, false)
	ack(t, st, c.ID(), 2)
	if err := st.CloseSend(); err != nil { // the member leaves after its ack
		t.Fatal(err)
	}
	sendNumbered(t, c, 6, 7)
	// The Flush waits for the group, whose leftovers go to the handler.
	if err := c.Flush(timeout(t, wait)); err != nil {
		t.Fatal(err)
	}
	// 3 to 5 were held; 6 and 7 came after, to the group or the handler.
	for want := 3; want <= 7; want++ {
		p, err := c.Recv(timeout(t, wait))
		if err != nil || string(p.Payload) != fmt.Sprint(want) {
			t.Fatalf("echo %d: %q, %v", want, p.Payload, err)
		}
	}
}

// TestConsumeHoldKeepsPacketsForAConsumer: with --no-consumer hold, the
// packets sent while no consumer is attached wait in the default group
// (the echo handler gets none) and go to the first consumer that joins.
func TestConsumeHoldKeepsPacketsForAConsumer(t *testing.T) {
	e := start(t, setup{noConsumer: control.NoConsumerHold})
	c := e.dialGo(t, nil)
	sendNumbered(t, c, 1, 3)
	st := e.consume(timeout(t, streamLife), t, &tlsgatev1.ConsumeOpen{})
	wantPackets(t, nextPackets(t, st, 3), c.ID(), 1, false)
	ack(t, st, c.ID(), 3)
	if err := c.Flush(timeout(t, wait)); err != nil { // answered once acked
		t.Fatal(err)
	}
	wantNoPacket(t, c)
}

// TestConsumePauseTimeoutClosesTheSession: with a pause timeout, a session
// paused that long by a consumer that acks nothing is closed with Goodbye
// backend_stalled, advising a reconnect; the close reads on, so every
// packet the client sent still reaches the group, then the end marker.
func TestConsumePauseTimeoutClosesTheSession(t *testing.T) {
	const limit, n = 4, 10
	e := start(t, setup{pauseTimeout: 100 * time.Millisecond})
	st := e.consume(timeout(t, streamLife), t, &tlsgatev1.ConsumeOpen{MaxUnackedPackets: limit})
	c := e.dialGo(t, nil)
	for i := 1; i <= n; i++ {
		c.SendAsync(client.Data(fmt.Append(nil, i)))
	}
	var packets []*tlsgatev1.Delivery
	var end *tlsgatev1.ClosedConnection
	for end == nil {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("Consume Recv after %d packets: %v", len(packets), err)
		}
		for _, d := range resp.GetDeliveries() {
			if cc := d.GetClosed(); cc != nil {
				end = cc
			} else {
				packets = append(packets, d)
			}
		}
	}
	wantPackets(t, packets, c.ID(), 1, false)
	if len(packets) != n || end.GetGoodbyeCode() != wire.GoodbyeBackendStalled {
		t.Fatalf("%d packets, then the end with Goodbye %q; want %d, then %q", len(packets), end.GetGoodbyeCode(), n, wire.GoodbyeBackendStalled)
	}
	<-c.Done()
	var ce *client.CloseError
	if !errors.As(c.Err(), &ce) || ce.Code != wire.GoodbyeBackendStalled || !ce.Reconnect {
		t.Fatalf("the client's close: %v, want Goodbye backend_stalled advising a reconnect", c.Err())
	}
	if st := e.hub.Stats(); st.Stalled != 1 {
		t.Fatalf("hub: %d stalled sessions, want 1", st.Stalled)
	}
}

// TestConsumePauseIsNotIdleness: while a session is paused for its
// consumer, the server reads nothing from the client, Pongs included; the
// keepalive watchdog must not count that time against the client. With a
// watchdog ten times quicker than the pause timeout, the session still
// ends for the stalled backend, not as idle.
func TestConsumePauseIsNotIdleness(t *testing.T) {
	const limit, n = 4, 10
	e := start(t, setup{
		gateway:      server.Config{IdleInterval: 50 * time.Millisecond, PongTimeout: 50 * time.Millisecond},
		pauseTimeout: time.Second,
	})
	st := e.consume(timeout(t, streamLife), t, &tlsgatev1.ConsumeOpen{MaxUnackedPackets: limit})
	c := e.dialGo(t, nil)
	for i := 1; i <= n; i++ {
		c.SendAsync(client.Data(fmt.Append(nil, i)))
	}
	var end *tlsgatev1.ClosedConnection
	for end == nil {
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("Consume Recv: %v", err)
		}
		for _, d := range resp.GetDeliveries() {
			if cc := d.GetClosed(); cc != nil {
				end = cc
			}
		}
	}
	if end.GetGoodbyeCode() != wire.GoodbyeBackendStalled {
		t.Fatalf("the paused session ended with Goodbye %q (%s), want %q", end.GetGoodbyeCode(), end.GetGoodbyeReason(), wire.GoodbyeBackendStalled)
	}
}

// TestConsumeMemoryBoundStopsReading: the packets a consumer group holds
// unacked count in the gateway's memory bound (--max-memory). With room
// for 8 in the bound and far more in the member's own limits, the
// session's reads stop at 8 unacked, and its acks let the rest through.
func TestConsumeMemoryBoundStopsReading(t *testing.T) {
	const held, size = 8, 16000
	const n = 2000                                      // 32 MB: far more than the socket buffers hold
	cost := int64(16384 + control.InboundEntryOverhead) // the payload's copy has the allocation size class's capacity
	e := start(t, setup{gateway: server.Config{MaxMemory: held * cost}})
	st := e.consume(timeout(t, streamLife), t, &tlsgatev1.ConsumeOpen{MaxUnackedPackets: 10000, MaxUnackedBytes: 64 << 20})
	rc := e.dialRaw(t, nil)
	written := writeNumbered(rc, n, size)
	ds := nextPackets(t, st, held)
	if st := e.hub.Stats(); st.UnackedPackets != held {
		t.Fatalf("hub: %d packets unacked; want %d, what the memory bound holds", st.UnackedPackets, held)
	}
	if s := e.getSession(t, rc.ID()); s.GetMemoryBytes() != uint64(held*cost) {
		t.Fatalf("the session's share of the memory bound: %d bytes, want %d", s.GetMemoryBytes(), held*cost)
	}
	select {
	case err := <-written:
		t.Fatalf("the client wrote 32 MB (%v) while its consumer acked nothing", err)
	default:
	}
	ackInOrder(t, st, rc.ID(), ds, n)
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	if peak := e.gw.Stats().MemoryHighWater; peak > held*cost {
		t.Fatalf("the sessions held up to %d bytes, over the bound %d", peak, held*cost)
	}
}

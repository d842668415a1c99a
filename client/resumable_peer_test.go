package client_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/wire"
)

// events collects a Resumable's events.
type events chan client.ResumeEvent

func (e events) next(t *testing.T, kind client.ResumeEventKind) client.ResumeEvent {
	t.Helper()
	for {
		select {
		case ev := <-e:
			if ev.Kind == kind {
				return ev
			}
			if kind != client.EventReconnectFailed && ev.Kind == client.EventReconnectFailed {
				continue
			}
			t.Fatalf("event %s (%+v), want %s", ev.Kind, ev, kind)
		case <-time.After(waitFor):
			t.Fatalf("no %s event", kind)
		}
	}
}

// dialResumable starts DialResumable against p, which must select
// wire.ALPNResume, answers the first Resume with resumed (after checking
// it asks for a fresh start) and returns the client and the peer's side.
func dialResumable(t *testing.T, p *peer, resumed wire.ResumedPayload, opts ...client.Option) (*client.Resumable, *peerConn, events) {
	t.Helper()
	ev := make(events, 1000)
	opts = append([]client.Option{
		client.WithFingerprint(p.fp),
		client.WithBackoff(time.Millisecond, 20*time.Millisecond),
		client.WithResumeEvents(func(e client.ResumeEvent) { ev <- e }),
	}, opts...)
	type result struct {
		r   *client.Resumable
		err error
	}
	res := make(chan result, 1)
	go func() {
		r, err := client.DialResumable(testCtx(t), p.ln.Addr().String(), newKey(t), opts...)
		res <- result{r, err}
	}()
	pc := acceptResume(t, p, "", 0, resumed)
	var r result
	select {
	case r = <-res:
	case <-time.After(waitFor):
		t.Fatal("DialResumable did not return")
	}
	if r.err != nil {
		t.Fatalf("DialResumable: %v", r.err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = r.r.Close(ctx)
	})
	if e := ev.next(t, client.EventResumed); e.Attempt != 0 || e.Epoch != resumed.Epoch {
		t.Fatalf("first event %+v", e)
	}
	return r.r, pc, ev
}

// acceptResume takes the next connection, checks its first frame is the
// Resume wanted, and answers resumed.
func acceptResume(t *testing.T, p *peer, epoch string, seq uint64, resumed wire.ResumedPayload) *peerConn {
	t.Helper()
	var pc *peerConn
	select {
	case pc = <-p.conns:
	case <-time.After(waitFor):
		t.Fatal("peer: no connection")
	}
	if got := pc.tc.ConnectionState().NegotiatedProtocol; got != wire.ALPNResume {
		t.Fatalf("ALPN %q, want %q", got, wire.ALPNResume)
	}
	f := pc.nextOf(wire.TypeResume)
	rp, err := wire.DecodeResume(f.Encoding, f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if rp.Epoch != epoch || rp.Seq != seq {
		t.Fatalf("Resume %+v, want epoch %q seq %d", rp, epoch, seq)
	}
	pc.send(wire.TypeResumed, f.Encoding, resumed)
	return pc
}

func decodeAck(t *testing.T, f wire.Frame) uint64 {
	t.Helper()
	ap, err := wire.DecodeAck(f.Encoding, f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return ap.Seq
}

// nextData skips control frames (Ping, Ack...) up to the next Data or
// Error frame.
func (pc *peerConn) nextData() wire.Frame {
	pc.t.Helper()
	for {
		f := pc.next()
		if f.Type == wire.TypeData || f.Type == wire.TypeError {
			return f
		}
	}
}

// nextSkipping returns the next frame of type typ, skipping Pings and Acks.
func (pc *peerConn) nextSkipping(typ wire.Type) wire.Frame {
	pc.t.Helper()
	for {
		f := pc.next()
		if f.Type == typ {
			return f
		}
		if f.Type != wire.TypePing && f.Type != wire.TypeAck {
			pc.t.Fatalf("peer: got %s frame %q, want %s", f.Type, f.Payload, typ)
		}
	}
}

func recvR(t *testing.T, r *client.Resumable, want string) {
	t.Helper()
	p, err := r.Recv(testCtx(t))
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	if p.Type != wire.TypeData || string(p.Payload) != want {
		t.Fatalf("Recv: got %s %q, want data %q", p.Type, p.Payload, want)
	}
}

func TestResumableUnsupported(t *testing.T) {
	p := newPeer(t) // selects no ALPN protocol
	_, err := client.DialResumable(testCtx(t), p.ln.Addr().String(), newKey(t), client.WithFingerprint(p.fp))
	if !errors.Is(err, client.ErrResumeUnsupported) {
		t.Fatalf("DialResumable to a v1 server: %v, want ErrResumeUnsupported", err)
	}
}

func TestResumableAcksAndFlush(t *testing.T) {
	p := newPeerALPN(t, wire.ALPNResume)
	r, pc, _ := dialResumable(t, p, wire.ResumedPayload{Epoch: "e1", Resumed: false})
	if r.Epoch() != "e1" {
		t.Fatalf("Epoch %q", r.Epoch())
	}
	ctx := testCtx(t)
	// Client → server: numbered by position, acked cumulatively.
	acked := make([]<-chan error, 3)
	for i := range acked {
		acked[i] = r.SendAsync(client.Data([]byte(strconv.Itoa(i))))
	}
	for i := range acked {
		if f := pc.nextData(); string(f.Payload) != strconv.Itoa(i) {
			t.Fatalf("peer got %q, want %d", f.Payload, i)
		}
	}
	if st := r.Stats(); st.Unacked != 3 {
		t.Fatalf("Unacked %d, want 3", st.Unacked)
	}
	pc.send(wire.TypeAck, wire.JSON, wire.AckPayload{Seq: 2})
	for i := range 2 {
		select {
		case err := <-acked[i]:
			if err != nil {
				t.Fatalf("packet %d: %v", i+1, err)
			}
		case <-time.After(waitFor):
			t.Fatalf("packet %d: no ack reported", i+1)
		}
	}
	select {
	case err := <-acked[2]:
		t.Fatalf("packet 3 reported %v before its ack", err)
	default:
	}
	// Sync asks with a Flush and returns on the Ack.
	synced := make(chan error, 1)
	go func() { synced <- r.Sync(ctx) }()
	fs := decodeFlush(t, pc.nextSkipping(wire.TypeFlush))
	pc.send(wire.TypeAck, wire.JSON, wire.AckPayload{Seq: 3})
	pc.send(wire.TypeFlushAck, wire.JSON, wire.FlushPayload{Seq: fs})
	select {
	case err := <-synced:
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Sync did not return")
	}
	if err := <-acked[2]; err != nil {
		t.Fatalf("packet 3: %v", err)
	}
	if err := r.Sync(ctx); err != nil { // nothing unacked: at once
		t.Fatalf("Sync with nothing unacked: %v", err)
	}

	// Server → client: acked once consumed, Ack before FlushAck.
	for i := range 100 {
		pc.send(wire.TypeData, wire.JSON, []byte(strconv.Itoa(i)))
	}
	pc.send(wire.TypeError, wire.JSON, wire.ErrorPayload{Error: "app", Code: "x"}) // not numbered
	pc.send(wire.TypeFlush, wire.JSON, wire.FlushPayload{Seq: 7})
	for i := range 100 {
		recvR(t, r, strconv.Itoa(i))
	}
	p2, err := r.Recv(ctx)
	if err != nil || p2.Type != wire.TypeError {
		t.Fatalf("Recv: %v %v, want the Error", p2.Type, err)
	}
	// The Flush is answered once everything before it is consumed: the
	// Ack of all 100 just before the FlushAck; earlier Acks increase.
	var acks []uint64
	for {
		f := pc.next()
		if f.Type == wire.TypeAck {
			acks = append(acks, decodeAck(t, f))
			continue
		}
		if f.Type == wire.TypePing {
			continue
		}
		if f.Type != wire.TypeFlushAck || decodeFlush(t, f) != 7 {
			t.Fatalf("got %s frame %q, want FlushAck 7", f.Type, f.Payload)
		}
		break
	}
	if len(acks) == 0 || acks[len(acks)-1] != 100 {
		t.Fatalf("acks %v, want the last one 100", acks)
	}
	for i := 1; i < len(acks); i++ {
		if acks[i] < acks[i-1] {
			t.Fatalf("acks %v go backwards", acks)
		}
	}
	t.Logf("acks for 100 packets: %v", acks)
}

// TestResumableResumes: after a cut, the client resumes the epoch with
// the last server Data it consumed, resends what the server had not
// accepted, keeping the numbers, and drops the server's resends of what
// it already has.
func TestResumableResumes(t *testing.T) {
	p := newPeerALPN(t, wire.ALPNResume)
	r, pc, ev := dialResumable(t, p, wire.ResumedPayload{Epoch: "e1"})
	ctx := testCtx(t)
	for i := range 4 {
		if err := r.Send(ctx, client.Data([]byte(strconv.Itoa(i+1)))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		pc.nextData()
		_ = i
	}
	pc.send(wire.TypeData, wire.JSON, []byte("s1"))
	pc.send(wire.TypeData, wire.JSON, []byte("s2"))
	pc.send(wire.TypeData, wire.JSON, []byte("s3"))
	recvR(t, r, "s1")
	recvR(t, r, "s2") // s3 stays buffered, unconsumed
	// s3 is not consumed and fewer than 64 are: no Ack is due yet, but
	// the Resume says 2.
	_ = pc.tc.Close()
	if e := ev.next(t, client.EventLost); e.Cause == nil {
		t.Fatal("EventLost without a cause")
	}
	// The server accepted 1 and 2 of the client's packets.
	pc = acceptResume(t, p, "e1", 2, wire.ResumedPayload{Epoch: "e1", Seq: 2, Resumed: true})
	e := ev.next(t, client.EventResumed)
	if e.Attempt < 1 || !e.Resumed || e.Resent != 2 || e.PeerSeq != 2 || e.Epoch != "e1" {
		t.Fatalf("EventResumed %+v, want attempt ≥ 1, resumed, 2 resent", e)
	}
	for _, want := range []string{"3", "4"} {
		if f := pc.nextData(); string(f.Payload) != want {
			t.Fatalf("resent %q, want %q", f.Payload, want)
		}
	}
	// The server resends everything after 2: s3 (the client has it, not
	// consumed) then s4.
	pc.send(wire.TypeData, wire.JSON, []byte("s3"))
	pc.send(wire.TypeData, wire.JSON, []byte("s4"))
	recvR(t, r, "s3")
	recvR(t, r, "s4")
	if f := pc.nextSkipping(wire.TypeAck); decodeAck(t, f) > 4 {
		t.Fatalf("ack %d beyond 4", decodeAck(t, f))
	}
	st := r.Stats()
	if st.Reconnects != 1 || st.Resent != 2 || st.DuplicatesDropped != 1 || st.Unacked != 4 || st.Gaps != 0 {
		t.Fatalf("Stats %+v", st)
	}
	// New packets follow the resends, numbered 5 on.
	if err := r.Send(ctx, client.Data([]byte("5"))); err != nil {
		t.Fatal(err)
	}
	if f := pc.nextData(); string(f.Payload) != "5" {
		t.Fatalf("got %q, want 5", f.Payload)
	}
	pc.send(wire.TypeAck, wire.JSON, wire.AckPayload{Seq: 5})
	if err := r.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// TestResumableGap: a server that cannot resume starts a new epoch; the
// client resends every unacknowledged packet renumbered from 1 and
// reports the gap, never as success.
func TestResumableGap(t *testing.T) {
	p := newPeerALPN(t, wire.ALPNResume)
	r, pc, ev := dialResumable(t, p, wire.ResumedPayload{Epoch: "e1"})
	ctx := testCtx(t)
	acked := []<-chan error{r.SendAsync(client.Data([]byte("a"))), r.SendAsync(client.Data([]byte("b")))}
	pc.nextData()
	pc.nextData()
	pc.send(wire.TypeData, wire.JSON, []byte("s1"))
	recvR(t, r, "s1")
	pc.nextSkipping(wire.TypeAck)
	synced := make(chan error, 1)
	go func() { synced <- r.Sync(ctx) }()
	pc.nextSkipping(wire.TypeFlush)
	_ = pc.tc.Close()
	ev.next(t, client.EventLost)
	pc = acceptResume(t, p, "e1", 1, wire.ResumedPayload{Epoch: "e2", Resumed: false})
	if e := ev.next(t, client.EventResumed); e.Resumed || e.Epoch != "e2" || e.PrevEpoch != "e1" || e.Resent != 2 {
		t.Fatalf("EventResumed %+v", e)
	}
	if e := ev.next(t, client.EventGap); e.Duplicates != 2 || e.Epoch != "e2" || e.PrevEpoch != "e1" {
		t.Fatalf("EventGap %+v", e)
	}
	for _, want := range []string{"a", "b"} {
		if f := pc.nextData(); string(f.Payload) != want {
			t.Fatalf("resent %q, want %q", f.Payload, want)
		}
	}
	// Sync is still waiting: the client asks again on the new connection.
	fs := decodeFlush(t, pc.nextSkipping(wire.TypeFlush))
	// Numbering restarted: the server acks 2 of the new epoch.
	pc.send(wire.TypeAck, wire.JSON, wire.AckPayload{Seq: 2})
	pc.send(wire.TypeFlushAck, wire.JSON, wire.FlushPayload{Seq: fs})
	var gap *client.GapError
	select {
	case err := <-synced:
		if !errors.As(err, &gap) || !errors.Is(err, client.ErrGap) || gap.Resent != 2 {
			t.Fatalf("Sync across a gap: %v, want a *GapError", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Sync did not return")
	}
	for i, ch := range acked {
		if err := <-ch; !errors.As(err, &gap) {
			t.Fatalf("packet %d acked after the gap: %v, want a *GapError", i+1, err)
		}
	}
	// Server data restarts at 1 too, and is not taken for a duplicate.
	pc.send(wire.TypeData, wire.JSON, []byte("t1"))
	recvR(t, r, "t1")
	if a := decodeAck(t, pc.nextSkipping(wire.TypeAck)); a != 1 {
		t.Fatalf("ack %d in the new epoch, want 1", a)
	}
	// A packet sent in the new epoch only is acked as a success.
	ch := r.SendAsync(client.Data([]byte("c")))
	pc.nextData()
	pc.send(wire.TypeAck, wire.JSON, wire.AckPayload{Seq: 3})
	if err := <-ch; err != nil {
		t.Fatalf("a packet of the new epoch: %v", err)
	}
	if st := r.Stats(); st.Gaps != 1 || st.GapResent != 2 {
		t.Fatalf("Stats %+v", st)
	}
}

// TestResumableKeepalive: a connection on which nothing arrives (the
// peer answers no Ping) is counted as lost, and the client reconnects.
func TestResumableKeepalive(t *testing.T) {
	p := newPeerALPN(t, wire.ALPNResume)
	_, pc, ev := dialResumable(t, p, wire.ResumedPayload{Epoch: "e1"}, client.WithKeepalive(20*time.Millisecond, 50*time.Millisecond))
	pc.nextOf(wire.TypePing)
	e := ev.next(t, client.EventLost)
	if !errors.Is(e.Cause, context.DeadlineExceeded) && !isTimeout(e.Cause) {
		t.Fatalf("EventLost cause %v, want a timeout", e.Cause)
	}
	acceptResume(t, p, "e1", 0, wire.ResumedPayload{Epoch: "e1", Resumed: true})
	ev.next(t, client.EventResumed)
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// TestResumableClose: Close asks for the acknowledgements, says Goodbye,
// and returns nil once the Goodbyes are exchanged with nothing unacked.
func TestResumableClose(t *testing.T) {
	p := newPeerALPN(t, wire.ALPNResume)
	r, pc, ev := dialResumable(t, p, wire.ResumedPayload{Epoch: "e1"})
	if err := r.Send(testCtx(t), client.Data([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- r.Close(testCtx(t)) }()
	pc.nextData()
	fs := decodeFlush(t, pc.nextSkipping(wire.TypeFlush))
	pc.nextOf(wire.TypeGoodbye)
	pc.send(wire.TypeData, wire.JSON, []byte("last"))
	pc.send(wire.TypeAck, wire.JSON, wire.AckPayload{Seq: 1})
	pc.send(wire.TypeFlushAck, wire.JSON, wire.FlushPayload{Seq: fs})
	pc.send(wire.TypeGoodbye, wire.JSON, wire.GoodbyePayload{Code: wire.GoodbyeNormal})
	recvR(t, r, "last")
	if err := r.Send(testCtx(t), client.Data(nil)); !errors.Is(err, client.ErrClosing) {
		t.Fatalf("Send while closing: %v, want ErrClosing", err)
	}
	if err := pc.end(); err == nil {
		t.Fatal("want the end of the stream")
	}
	_ = pc.tc.Close()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Close did not return")
	}
	var ce *client.CloseError
	if !errors.As(r.Err(), &ce) || ce.Outcome != client.OutcomeClean || ce.Initiator != client.InitiatorLocal {
		t.Fatalf("Err %v", r.Err())
	}
	if _, err := r.Recv(testCtx(t)); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Recv after the end: %v", err)
	}
	select {
	case e := <-ev:
		t.Fatalf("event %+v during a clean close", e)
	default:
	}
}

// TestResumableTakenOver: the server's Goodbye ends the session: no
// reconnect, and what was unacknowledged fails.
func TestResumableTakenOver(t *testing.T) {
	p := newPeerALPN(t, wire.ALPNResume)
	r, pc, ev := dialResumable(t, p, wire.ResumedPayload{Epoch: "e1"})
	ch := r.SendAsync(client.Data([]byte("x")))
	pc.nextData()
	pc.send(wire.TypeError, wire.JSON, wire.ErrorPayload{Error: wire.TakeoverMessage, Code: wire.CodeSessionTakenOver})
	pc.send(wire.TypeGoodbye, wire.JSON, wire.GoodbyePayload{Code: wire.GoodbyeSessionTakenOver})
	pkt, err := r.Recv(testCtx(t))
	if err != nil || pkt.Type != wire.TypeError {
		t.Fatalf("Recv: %v %v, want the takeover Error", pkt.Type, err)
	}
	if gb := decodeGoodbye(t, pc.nextSkipping(wire.TypeGoodbye)); gb.Code != wire.GoodbyeNormal {
		t.Fatalf("client goodbye %q", gb.Code)
	}
	_ = pc.tc.Close()
	select {
	case <-r.Done():
	case <-time.After(waitFor):
		t.Fatal("session did not end")
	}
	var ce *client.CloseError
	if !errors.As(r.Err(), &ce) || ce.Code != wire.GoodbyeSessionTakenOver || ce.Initiator != client.InitiatorRemote {
		t.Fatalf("Err %v", r.Err())
	}
	if err := <-ch; !errors.Is(err, client.ErrClosed) {
		t.Fatalf("unacked packet: %v, want ErrClosed", err)
	}
	if u := r.Unacked(); len(u) != 1 || u[0].Type != wire.TypeData || string(u[0].Payload) != "x" {
		t.Fatalf("Unacked %+v, want the packet x", u)
	}
	select {
	case e := <-ev:
		t.Fatalf("event %+v after the server's goodbye", e)
	default:
	}
	select {
	case pc := <-p.conns:
		t.Fatalf("the client reconnected (session %d)", pc.id)
	default:
	}
}

// TestResumableBufferFull: the bound is in frame bytes; past half of it
// the client asks for acks with a Flush; when full Send waits (or fails,
// with WithFailWhenFull) until an Ack frees room.
func TestResumableBufferFull(t *testing.T) {
	for _, failFast := range []bool{false, true} {
		t.Run(fmt.Sprint("failWhenFull=", failFast), func(t *testing.T) {
			p := newPeerALPN(t, wire.ALPNResume)
			opts := []client.Option{client.WithResumeBuffer(100)}
			if failFast {
				opts = append(opts, client.WithFailWhenFull())
			}
			r, pc, _ := dialResumable(t, p, wire.ResumedPayload{Epoch: "e1"}, opts...)
			ctx := testCtx(t)
			pkt := client.Data(make([]byte, 36)) // 40 bytes a frame
			for range 2 {
				if err := r.Send(ctx, pkt); err != nil {
					t.Fatal(err)
				}
			}
			pc.nextData()
			pc.nextData()
			fs := decodeFlush(t, pc.nextSkipping(wire.TypeFlush)) // 80 > 50
			if ch := r.SendAsync(pkt); !errors.Is(<-ch, client.ErrResumeBufferFull) {
				t.Fatal("SendAsync into a full buffer: want ErrResumeBufferFull")
			}
			sent := make(chan error, 1)
			go func() { sent <- r.Send(ctx, pkt) }()
			if failFast {
				if err := <-sent; !errors.Is(err, client.ErrResumeBufferFull) {
					t.Fatalf("Send: %v, want ErrResumeBufferFull", err)
				}
				return
			}
			select {
			case err := <-sent:
				t.Fatalf("Send into a full buffer returned %v", err)
			default:
			}
			pc.send(wire.TypeAck, wire.JSON, wire.AckPayload{Seq: 1})
			pc.send(wire.TypeFlushAck, wire.JSON, wire.FlushPayload{Seq: fs})
			if err := <-sent; err != nil {
				t.Fatalf("Send after an ack: %v", err)
			}
			if f := pc.nextData(); len(f.Payload) != 36 {
				t.Fatalf("got %d bytes", len(f.Payload))
			}
		})
	}
}

// TestResumableErrorRepliesAreNumbered: the Error a resumable client sends
// about a bad server frame counts like Data, as the server counts every
// Error it receives: it is kept until acked, and the next Data is number 2.
func TestResumableErrorRepliesAreNumbered(t *testing.T) {
	p := newPeerALPN(t, wire.ALPNResume)
	r, pc, _ := dialResumable(t, p, wire.ResumedPayload{Epoch: "e1"})
	pc.send(wire.Type(0x30), wire.JSON, []byte("from the future"))
	f := pc.nextData()
	e, err := wire.DecodeError(f.Encoding, f.Payload)
	if f.Type != wire.TypeError || err != nil || e.Code != wire.CodeUnknownType {
		t.Fatalf("peer got %s %q, want an Error unknown_type", f.Type, f.Payload)
	}
	if err := r.Send(testCtx(t), client.Data([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	if f := pc.nextData(); string(f.Payload) != "x" {
		t.Fatalf("peer got %q, want x", f.Payload)
	}
	if st := r.Stats(); st.Unacked != 2 {
		t.Fatalf("Unacked %d, want 2: the Error and the Data", st.Unacked)
	}
	pc.send(wire.TypeAck, wire.JSON, wire.AckPayload{Seq: 2})
	synced := make(chan error, 1)
	go func() { synced <- r.Sync(testCtx(t)) }()
	select {
	case err := <-synced:
		if err != nil {
			t.Fatalf("Sync after the Ack of both: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Sync did not return after the Ack of 2")
	}
}

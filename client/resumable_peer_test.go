package client_test

import (
	"context"
	"errors"
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

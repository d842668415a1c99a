package server_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// seqOf parses the "N:" prefix of a test payload.
func seqOf(t *testing.T, p []byte) int {
	t.Helper()
	i, err := strconv.Atoi(string(p[:bytes.IndexByte(p, ':')]))
	if err != nil {
		t.Fatalf("payload %.20q: %v", p, err)
	}
	return i
}

func queueNumbered(t *testing.T, sess *server.Session, from, to int) {
	t.Helper()
	filler := bytes.Repeat([]byte("x"), 1000)
	for i := from; i < to; i++ {
		p := append(strconv.AppendInt(nil, int64(i), 10), ':')
		if _, err := sess.SendAsync(wire.JSON, append(p, filler...)); err != nil {
			t.Fatalf("SendAsync %d: %v", i, err)
		}
	}
}

// TestTakeoverOfStuckConnection: the old client stopped reading, so the old
// writer is blocked mid-write when the new connection takes over. The old
// connection gives up within the linger timeout, hands its batch back, and
// the new connection gets every packet the old one did not, with no gap.
// Shutdown then completes within its deadline.
func TestTakeoverOfStuckConnection(t *testing.T) {
	const queued = 20000
	ts := startServer(t, server.Config{Handler: server.Discard{}, QueueBytes: 64 << 20, LingerTimeout: 300 * time.Millisecond})
	key := newKey(t)
	old := wiretest.Connect(t, ts.addr, key)
	ts.waitEvent(t, server.EventConnected, old.ID())
	sess, _ := ts.Session(old.ID())
	queueNumbered(t, sess, 0, queued)

	nu := wiretest.Connect(t, ts.addr, key)
	ts.waitEvent(t, server.EventTakenOver, nu.ID())
	first, last := -1, -1
	for last != queued-1 {
		i := seqOf(t, nu.Read(t).Payload)
		if first < 0 {
			first = i
		} else if i != last+1 {
			t.Fatalf("new connection: packet %d after %d", i, last)
		}
		last = i
	}
	// What the old client can still read ends no earlier than where the
	// new connection started: nothing fell between the two.
	oldLast := -1
	_ = old.TLS().SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := old.ReadFrame()
		if err != nil {
			break
		}
		if f.Type == wire.TypeData {
			oldLast = seqOf(t, f.Payload)
		}
	}
	if oldLast+1 < first {
		t.Fatalf("lost packets %d..%d between the old connection and the new", oldLast+1, first-1)
	}
	ev := ts.waitEvent(t, server.EventClosed, old.ID())
	if ev.Close.Outcome != server.OutcomeTimeout && ev.Close.Outcome != server.OutcomePeerClosed {
		t.Fatalf("old connection outcome %s", ev.Close.Outcome)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestDrainProgressesWhileTheQueueIsBusy: the writer records progress batch
// by batch, so Drain waits only for the packets queued before it, even
// while the queue never empties behind them.
func TestDrainProgressesWhileTheQueueIsBusy(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Discard{}, QueueBytes: 64 << 20, LingerTimeout: 300 * time.Millisecond})
	rc := wiretest.Connect(t, ts.addr, newKey(t))
	ts.waitEvent(t, server.EventConnected, rc.ID())
	sess, _ := ts.Session(rc.ID())
	// 20 MB: far more than the socket buffers hold, so the queue stays
	// busy while the client reads only the first 1,000.
	queueNumbered(t, sess, 0, 20000)
	for i := range 1000 {
		if got := seqOf(t, rc.Read(t).Payload); got != i {
			t.Fatalf("packet %d is %d", i, got)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sess.WaitWritten(ctx, 100); err != nil {
		t.Fatalf("waiting for the first 100 packets to be marked written: %v", err)
	}
	if n := sess.Info().QueueLen; n == 0 {
		t.Fatal("the queue emptied; the test proves nothing")
	}
}

// TestCloseFromHandler: a handler may close its own session without
// deadlocking; the client gets everything, then the Goodbye.
func TestCloseFromHandler(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.HandlerFunc(func(ctx context.Context, s *server.Session, p server.Packet) {
		_ = s.Reply(ctx, p.Type, p.Encoding, p.Payload)
		if string(p.Payload) == "bye" {
			if err := s.StartClose(server.CloseOptions{Reason: "asked to"}); err != nil {
				panic(err)
			}
		}
	})})
	rc := wiretest.Connect(t, ts.addr, newKey(t))
	rc.WriteFrame(t, wire.TypeData, wire.JSON, []byte("bye"))
	if f := rc.Read(t); string(f.Payload) != "bye" {
		t.Fatalf("got %q", f.Payload)
	}
	f := rc.Read(t)
	if gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload); f.Type != wire.TypeGoodbye || err != nil || gb.Code != wire.GoodbyeAdmin {
		t.Fatalf("got %s %q, want Goodbye admin", f.Type, f.Payload)
	}
	rc.WriteControl(t, wire.TypeGoodbye, wire.JSON, wire.GoodbyePayload{Code: wire.GoodbyeNormal})
	rc.ExpectEOF(t)
	_ = rc.Close()
	if ev := ts.waitEvent(t, server.EventClosed, rc.ID()); ev.Close.Outcome != server.OutcomeClean {
		t.Fatalf("outcome %s", ev.Close.Outcome)
	}
}

// failingListener fails its first Accept calls with EMFILE.
type failingListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return l.Listener.Accept()
}

// TestServeSurvivesAcceptErrors: running out of file descriptors is not
// the end of the server.
func TestServeSurvivesAcceptErrors(t *testing.T) {
	ts := startServer(t, server.Config{})
	srv2, err := server.New(server.Config{TLSConfig: ts.Config().TLSConfig})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &failingListener{Listener: inner}
	ln.failures.Store(3)
	served := make(chan error, 1)
	go func() { served <- srv2.Serve(ln) }()
	rc := wiretest.Connect(t, inner.Addr().String(), newKey(t), wiretest.Pin(ts.certHash))
	bystanderEcho(t, rc, "still serving")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = rc.Close()
	if err := srv2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
}

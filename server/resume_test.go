package server_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// The resume extension (docs/protocol.md §15), on the raw wire: what the
// server answers, keeps and replays. The Go client's resumable mode is
// tested through faults in package client.

// smallCost is what a queue charges a packet of 1 to 8 payload bytes: its
// entry and the smallest allocation size class.
const smallCost = server.EntryOverhead + 8

// dialResume connects a resumable raw connection (ALPN wire.ALPNResume),
// sends Resume{epoch, seq} and returns the server's Resumed.
func dialResume(t *testing.T, ts *testServer, key ed25519.PrivateKey, epoch string, seq uint64) (*wiretest.Conn, wire.ResumedPayload) {
	t.Helper()
	c := wiretest.Connect(t, ts.addr, key, wiretest.ALPN(wire.ALPNResume))
	if got := c.TLS().ConnectionState().NegotiatedProtocol; got != wire.ALPNResume {
		t.Fatalf("negotiated ALPN %q, want %q", got, wire.ALPNResume)
	}
	c.WriteControl(t, wire.TypeResume, wire.JSON, wire.ResumePayload{Epoch: epoch, Seq: seq})
	f := c.Read(t)
	if f.Type != wire.TypeResumed {
		t.Fatalf("first frame after Resume: %s %q, want Resumed", f.Type, f.Payload)
	}
	p, err := wire.DecodeResumed(f.Encoding, f.Payload)
	if err != nil {
		t.Fatalf("Resumed %q: %v", f.Payload, err)
	}
	return c, p
}

// readData reads until it has n Data frames and an Ack of at least ack
// (0: no Ack awaited), failing on any other frame; it returns the Data
// payloads in order.
func readData(t *testing.T, c *wiretest.Conn, n int, ack uint64) []string {
	t.Helper()
	var data []string
	var acked uint64
	for len(data) < n || acked < ack {
		f := c.Read(t)
		switch f.Type {
		case wire.TypeData:
			data = append(data, string(f.Payload))
		case wire.TypeAck:
			p, err := wire.DecodeAck(f.Encoding, f.Payload)
			if err != nil {
				t.Fatalf("Ack %q: %v", f.Payload, err)
			}
			if p.Seq < acked {
				t.Fatalf("Ack %d after Ack %d: acks are cumulative", p.Seq, acked)
			}
			acked = p.Seq
		default:
			t.Fatalf("got %s %q while reading %d Data (have %d) and Ack %d (have %d)", f.Type, f.Payload, n, len(data), ack, acked)
		}
	}
	return data
}

// expectProtocolError reads the Error with code, then the Goodbye
// protocol_error of the v1 protocol-error treatment.
func expectProtocolError(t *testing.T, c *wiretest.Conn, code string) {
	t.Helper()
	f := c.Read(t)
	if f.Type != wire.TypeError {
		t.Fatalf("got %s %q, want an Error %s", f.Type, f.Payload, code)
	}
	e, err := wire.DecodeError(f.Encoding, f.Payload)
	if err != nil || e.Code != code {
		t.Fatalf("Error %q (%v), want code %s", f.Payload, err, code)
	}
	f = c.Read(t)
	g, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
	if f.Type != wire.TypeGoodbye || err != nil || g.Code != wire.GoodbyeProtocolError {
		t.Fatalf("got %s %q, want Goodbye protocol_error", f.Type, f.Payload)
	}
	t.Logf("error %q", e.Error)
}

func sendData(t *testing.T, c *wiretest.Conn, payloads ...string) {
	t.Helper()
	for _, p := range payloads {
		c.WriteFrame(t, wire.TypeData, wire.JSON, []byte(p))
	}
}

func mustSession(t *testing.T, ts *testServer, id uint64) *server.Session {
	t.Helper()
	s, ok := ts.Session(id)
	if !ok {
		t.Fatalf("session %d not found", id)
	}
	return s
}

func equalStrings(got []string, want ...string) error {
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return fmt.Errorf("got %q, want %q", got, want)
	}
	return nil
}

// TestResumeFreshStartNumbersAndAcks: a fresh Resume starts an epoch; the
// client's Data is acked once processed, the echoes are numbered and kept
// until the client acks them, and the session's info says so.
func TestResumeFreshStartNumbersAndAcks(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}})
	c, r := dialResume(t, ts, newKey(t), "", 0)
	if r.Resumed || r.Seq != 0 || len(r.Epoch) != 16 {
		t.Fatalf("Resumed %+v, want a new 16-digit epoch, seq 0, resumed false", r)
	}
	sendData(t, c, "a", "b")
	if err := equalStrings(readData(t, c, 2, 2), "a", "b"); err != nil {
		t.Fatal(err)
	}
	info := mustSession(t, ts, c.ID()).Info()
	if info.Epoch != r.Epoch || info.SentSeq != 2 || info.AckedSeq != 0 || info.UnackedBytes != 2*smallCost ||
		info.ReceivedSeq != 2 || info.ServerAckedSeq != 2 {
		t.Fatalf("info %+v: want epoch %s, 2 sent, 0 acked, %d bytes retained, 2 received and acked", info, r.Epoch, 2*smallCost)
	}
	// The client's Ack frees the retained bytes; the FlushAck behind it
	// proves the server processed it.
	c.WriteControl(t, wire.TypeAck, wire.JSON, wire.AckPayload{Seq: 2})
	c.WriteControl(t, wire.TypeFlush, wire.JSON, wire.FlushPayload{Seq: 1})
	if f := c.Read(t); f.Type != wire.TypeFlushAck {
		t.Fatalf("got %s %q, want FlushAck", f.Type, f.Payload)
	}
	if info := mustSession(t, ts, c.ID()).Info(); info.AckedSeq != 2 || info.UnackedBytes != 0 {
		t.Fatalf("after the client's Ack: %d acked, %d bytes retained; want 2 and 0", info.AckedSeq, info.UnackedBytes)
	}
}

// TestResumeAfterLossReplaysInOrder: a resumable connection lost without a
// Goodbye leaves its session detached; sends still queue into it, and a
// Resume on a new connection replays what the client had not processed,
// then the queue, in order, with resumed=true.
func TestResumeAfterLossReplaysInOrder(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}})
	key := newKey(t)
	c1, r1 := dialResume(t, ts, key, "", 0)
	sendData(t, c1, "a", "b")
	readData(t, c1, 2, 2)
	_ = c1.Abort()
	ts.waitEvent(t, server.EventDetached, c1.ID())
	sess := mustSession(t, ts, c1.ID())
	if info := sess.Info(); info.State != server.StateDetached || info.DetachedSince.IsZero() ||
		info.ExpiresAt.Sub(info.DetachedSince) != server.DefaultResumeWindow {
		t.Fatalf("after the loss: state %s, detached %v, expires %v; want detached for the %v window", info.State, info.DetachedSince, info.ExpiresAt, server.DefaultResumeWindow)
	}
	if _, err := sess.SendAsync(wire.JSON, []byte("c")); err != nil {
		t.Fatalf("SendAsync to a detached session: %v", err)
	}
	replayed := ts.Stats().Replayed

	// The client processed the echo of "a" only.
	c2, r2 := dialResume(t, ts, key, r1.Epoch, 1)
	if !r2.Resumed || r2.Epoch != r1.Epoch || r2.Seq != 2 {
		t.Fatalf("Resumed %+v, want epoch %s resumed with the server at seq 2", r2, r1.Epoch)
	}
	if e := ts.waitEvent(t, server.EventResumed, c2.ID()); !e.Resumed || e.Session.Epoch != r1.Epoch {
		t.Fatalf("resumed event %+v", e)
	}
	if err := equalStrings(readData(t, c2, 2, 0), "b", "c"); err != nil {
		t.Fatalf("after the Resume: %v", err)
	}
	if got := ts.Stats().Replayed - replayed; got != 1 {
		t.Fatalf("%d packets counted as replayed, want 1 (the echo of b)", got)
	}
	// Numbering went on: the next echo is Data 4 of the epoch.
	sendData(t, c2, "d")
	readData(t, c2, 1, 3)
	if info := sess.Info(); info.State != server.StateActive || info.SentSeq != 4 || info.ReceivedSeq != 3 {
		t.Fatalf("info %+v: want active, 4 sent, 3 received", info)
	}
}

// TestResumeAfterExpiry: once the resume window passes, the session ends
// and counts what it dropped; a Resume of its epoch then gets resumed=false
// and a new epoch, never a silent partial replay.
func TestResumeAfterExpiry(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}, ResumeWindow: 50 * time.Millisecond})
	key := newKey(t)
	c1, r1 := dialResume(t, ts, key, "", 0)
	sendData(t, c1, "a", "b")
	readData(t, c1, 2, 2)
	_ = c1.Abort()
	e := ts.waitEvent(t, server.EventExpired, c1.ID())
	if e.Ended.Reason != server.EndResumeWindow || e.Ended.Packets != 2 || e.Ended.Bytes != 2*smallCost {
		t.Fatalf("expired %+v, want the resume window, 2 packets, %d bytes", e.Ended, 2*smallCost)
	}
	if _, ok := ts.Session(c1.ID()); ok {
		t.Fatal("the expired session is still listed")
	}
	if st := ts.Stats(); st.Expired != 1 || st.ExpiredBytes != uint64(e.Ended.Bytes) || st.Detached != 0 {
		t.Fatalf("stats %+v: want 1 expired, its bytes, none detached", st)
	}
	c2, r2 := dialResume(t, ts, key, r1.Epoch, 2)
	if r2.Resumed || r2.Epoch == r1.Epoch || r2.Seq != 0 {
		t.Fatalf("Resumed %+v after expiry, want a new epoch, seq 0, resumed false", r2)
	}
	sendData(t, c2, "x")
	if err := equalStrings(readData(t, c2, 1, 1), "x"); err != nil {
		t.Fatal(err)
	}
}

// TestResumeAfterRestart: a server that never knew the epoch (another
// process, after a restart) answers resumed=false with a new epoch.
func TestResumeAfterRestart(t *testing.T) {
	key := newKey(t)
	first := startServer(t, server.Config{Handler: server.Echo{}})
	c1, r1 := dialResume(t, first, key, "", 0)
	sendData(t, c1, "a")
	readData(t, c1, 1, 1)

	second := startServer(t, server.Config{Handler: server.Echo{}})
	_, r2 := dialResume(t, second, key, r1.Epoch, 1)
	if r2.Resumed || r2.Epoch == r1.Epoch || r2.Seq != 0 {
		t.Fatalf("Resumed %+v from a server that never saw epoch %s, want a new epoch, seq 0, resumed false", r2, r1.Epoch)
	}
	if st := second.Stats(); st.ResumesFresh != 1 || st.ResumesResumed != 0 {
		t.Fatalf("stats %+v: want 1 fresh resume", st)
	}
}

// TestResumeBufferFullRefusesNotDrops: a detached session's sends stop at
// the resume buffer with ErrQueueFull; nothing accepted is dropped, so the
// Resume is resumed=true and delivers every accepted packet.
func TestResumeBufferFullRefusesNotDrops(t *testing.T) {
	const limit = 1 << 10
	ts := startServer(t, server.Config{Handler: server.Echo{}, ResumeBuffer: limit})
	key := newKey(t)
	c1, r1 := dialResume(t, ts, key, "", 0)
	_ = c1.Abort()
	ts.waitEvent(t, server.EventDetached, c1.ID())
	sess := mustSession(t, ts, c1.ID())
	var accepted []string
	for i := 0; ; i++ {
		p := fmt.Sprintf("packet-%03d", i)
		_, err := sess.SendAsync(wire.JSON, []byte(p))
		if errors.Is(err, server.ErrQueueFull) {
			break
		}
		if err != nil {
			t.Fatalf("SendAsync %d: %v", i, err)
		}
		accepted = append(accepted, p)
		if i > limit {
			t.Fatalf("%d sends accepted into a %d-byte resume buffer", i, limit)
		}
	}
	if held := len(accepted) * (server.EntryOverhead + len("packet-000")); held > limit {
		t.Fatalf("%d bytes accepted, over the %d-byte bound", held, limit)
	}
	c2, r2 := dialResume(t, ts, key, r1.Epoch, 0)
	if !r2.Resumed {
		t.Fatalf("Resumed %+v after refused sends, want resumed=true: nothing was dropped", r2)
	}
	if err := equalStrings(readData(t, c2, len(accepted), 0), accepted...); err != nil {
		t.Fatal(err)
	}
}

// TestResumeTakesOverHalfOpenConnection: a Resume on a second connection
// while the first still looks alive (it went silent, no FIN, no RST) takes
// the session over: the old connection is told, and the new one gets the
// replay of what the client had not processed.
func TestResumeTakesOverHalfOpenConnection(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}})
	key := newKey(t)
	c1, r1 := dialResume(t, ts, key, "", 0)
	sendData(t, c1, "a", "b")
	readData(t, c1, 2, 2)

	c2, r2 := dialResume(t, ts, key, r1.Epoch, 0)
	if !r2.Resumed || r2.Seq != 2 {
		t.Fatalf("Resumed %+v, want resumed at seq 2", r2)
	}
	if e := ts.waitEvent(t, server.EventTakenOver, c2.ID()); e.Session.Takeovers != 1 {
		t.Fatalf("taken over event %+v", e)
	}
	f := c1.Read(t)
	if e, err := wire.DecodeError(f.Encoding, f.Payload); f.Type != wire.TypeError || err != nil || e.Code != wire.GoodbyeSessionTakenOver {
		t.Fatalf("the old connection got %s %q, want the takeover notice, Error session_taken_over", f.Type, f.Payload)
	}
	f = c1.Read(t)
	if g, err := wire.DecodeGoodbye(f.Encoding, f.Payload); f.Type != wire.TypeGoodbye || err != nil || g.Code != wire.GoodbyeSessionTakenOver {
		t.Fatalf("the old connection got %s %q, want Goodbye session_taken_over", f.Type, f.Payload)
	}
	if err := equalStrings(readData(t, c2, 2, 0), "a", "b"); err != nil {
		t.Fatalf("replay on the new connection: %v", err)
	}
}

// TestResumeConnectionLostBeforeItsResume: a connection that takes a
// detached session and is lost before it sends its Resume leaves the
// session detached, with everything it held.
func TestResumeConnectionLostBeforeItsResume(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}})
	key := newKey(t)
	c1, r1 := dialResume(t, ts, key, "", 0)
	sendData(t, c1, "a")
	readData(t, c1, 1, 1)
	_ = c1.Abort()
	ts.waitEvent(t, server.EventDetached, c1.ID())

	c2 := wiretest.Connect(t, ts.addr, key, wiretest.ALPN(wire.ALPNResume))
	_ = c2.Abort()
	ts.waitEvent(t, server.EventDetached, c2.ID())

	c3, r3 := dialResume(t, ts, key, r1.Epoch, 0)
	if !r3.Resumed || r3.Seq != 1 {
		t.Fatalf("Resumed %+v, want resumed at seq 1", r3)
	}
	if err := equalStrings(readData(t, c3, 1, 0), "a"); err != nil {
		t.Fatal(err)
	}
}

// TestResumeDisconnectDetached: Close (the control plane's Disconnect) of a
// detached session ends it at once and reports what it dropped.
func TestResumeDisconnectDetached(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}})
	c1, _ := dialResume(t, ts, newKey(t), "", 0)
	sendData(t, c1, "a")
	readData(t, c1, 1, 1)
	_ = c1.Abort()
	ts.waitEvent(t, server.EventDetached, c1.ID())
	sess := mustSession(t, ts, c1.ID())
	bc := []byte("bc")
	if _, err := sess.SendAsync(wire.JSON, bc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := sess.Close(ctx, server.CloseOptions{})
	if err != nil {
		t.Fatalf("Close of a detached session: %v", err)
	}
	want := server.Ended{Reason: server.EndDisconnect, Packets: 2, Bytes: smallCost + server.EntryOverhead + cap(bc)}
	if info.Ended == nil || *info.Ended != want {
		t.Fatalf("Close: %+v (ended %+v), want Ended %+v", info, info.Ended, want)
	}
	if e := ts.waitEvent(t, server.EventExpired, c1.ID()); e.Ended != want {
		t.Fatalf("expired event %+v, want %+v", e.Ended, want)
	}
	if _, err := sess.Close(ctx, server.CloseOptions{}); !errors.Is(err, server.ErrClosed) {
		t.Fatalf("second Close: %v, want ErrClosed", err)
	}
}

// TestResumeProtocolErrors: a Resume that does not decode, comes anywhere
// but first, or claims more than the server sent, and a resumable
// connection that does not start with Resume, get the v1 protocol-error
// treatment: an Error naming the problem, then Goodbye protocol_error.
func TestResumeProtocolErrors(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}})
	resumable := func(t *testing.T) *wiretest.Conn {
		return wiretest.Connect(t, ts.addr, newKey(t), wiretest.ALPN(wire.ALPNResume))
	}
	t.Run("bad payload", func(t *testing.T) {
		c := resumable(t)
		c.WriteFrame(t, wire.TypeResume, wire.JSON, []byte(`{"epoch": 1, "seq": 0}`))
		expectProtocolError(t, c, wire.CodeBadPayload)
	})
	t.Run("missing field", func(t *testing.T) {
		c := resumable(t)
		c.WriteFrame(t, wire.TypeResume, wire.JSON, []byte(`{"epoch": ""}`))
		expectProtocolError(t, c, wire.CodeBadPayload)
	})
	t.Run("not first", func(t *testing.T) {
		c := resumable(t)
		sendData(t, c, "a")
		expectProtocolError(t, c, wire.CodeProtocolError)
	})
	t.Run("twice", func(t *testing.T) {
		c, _ := dialResume(t, ts, newKey(t), "", 0)
		c.WriteControl(t, wire.TypeResume, wire.JSON, wire.ResumePayload{})
		expectProtocolError(t, c, wire.CodeProtocolError)
	})
	// A failed Resume replays nothing: the Error comes first, though the
	// session holds unacked Data.
	badSeq := func(t *testing.T, acked, seq uint64) {
		key := newKey(t)
		c1, r1 := dialResume(t, ts, key, "", 0)
		sendData(t, c1, "a", "b")
		readData(t, c1, 2, 2)
		if acked > 0 {
			c1.WriteControl(t, wire.TypeAck, wire.JSON, wire.AckPayload{Seq: acked})
			c1.WriteControl(t, wire.TypeFlush, wire.JSON, wire.FlushPayload{Seq: 1})
			if f := c1.Read(t); f.Type != wire.TypeFlushAck {
				t.Fatalf("got %s, want FlushAck", f.Type)
			}
		}
		_ = c1.Abort()
		ts.waitEvent(t, server.EventDetached, c1.ID())
		c2 := wiretest.Connect(t, ts.addr, key, wiretest.ALPN(wire.ALPNResume))
		c2.WriteControl(t, wire.TypeResume, wire.JSON, wire.ResumePayload{Epoch: r1.Epoch, Seq: seq})
		expectProtocolError(t, c2, wire.CodeProtocolError)
	}
	t.Run("seq beyond what was sent", func(t *testing.T) { badSeq(t, 0, 5) })
	t.Run("seq below what was acked", func(t *testing.T) { badSeq(t, 2, 1) })
	// A bad Ack is logged and dropped, never answered (§15): the echo
	// and the Ack of the next Data are all that comes.
	t.Run("ack beyond what was sent", func(t *testing.T) {
		c, _ := dialResume(t, ts, newKey(t), "", 0)
		c.WriteControl(t, wire.TypeAck, wire.JSON, wire.AckPayload{Seq: 1})
		sendData(t, c, "still served")
		if err := equalStrings(readData(t, c, 1, 1), "still served"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestResumeV1Unaffected: a client that offers no ALPN gets none, and the
// resume extension's types are unknown to its connection, answered with
// unknown_type as before the extension existed; it never gets an Ack.
func TestResumeV1Unaffected(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}})
	c := wiretest.Connect(t, ts.addr, newKey(t))
	if p := c.TLS().ConnectionState().NegotiatedProtocol; p != "" {
		t.Fatalf("a v1 client got ALPN %q", p)
	}
	for _, typ := range []wire.Type{wire.TypeResume, wire.TypeAck, wire.TypeResumed} {
		c.WriteControl(t, typ, wire.JSON, wire.AckPayload{Seq: 1})
		f := c.Read(t)
		e, err := wire.DecodeError(f.Encoding, f.Payload)
		if f.Type != wire.TypeError || err != nil || e.Code != wire.CodeUnknownType {
			t.Fatalf("%s on a v1 connection: got %s %q, want Error unknown_type", typ, f.Type, f.Payload)
		}
	}
	sendData(t, c, "a")
	c.WriteControl(t, wire.TypeFlush, wire.JSON, wire.FlushPayload{Seq: 1})
	if f := c.Read(t); f.Type != wire.TypeData || string(f.Payload) != "a" {
		t.Fatalf("got %s %q, want the echo", f.Type, f.Payload)
	}
	if f := c.Read(t); f.Type != wire.TypeFlushAck {
		t.Fatalf("got %s %q, want FlushAck (and no Ack)", f.Type, f.Payload)
	}
	if info := mustSession(t, ts, c.ID()).Info(); info.Epoch != "" || info.SentSeq != 0 {
		t.Fatalf("a v1 session has resume state: %+v", info)
	}
}

// drainAsync runs sess.Drain(ack) and delivers its result.
func drainAsync(t *testing.T, sess *server.Session) <-chan error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() {
		res, err := sess.Drain(ctx, true)
		if err == nil && !res.Acked {
			err = fmt.Errorf("drain %+v not acked", res)
		}
		done <- err
	}()
	return done
}

// readUntilFlush reads frames until a Flush, returning its seq.
func readUntilFlush(t *testing.T, c *wiretest.Conn) uint64 {
	t.Helper()
	for {
		f := c.Read(t)
		if f.Type == wire.TypeFlush {
			p, err := wire.DecodeFlush(f.Encoding, f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			return p.Seq
		}
		if f.Type != wire.TypeAck {
			t.Fatalf("got %s %q, want a Flush", f.Type, f.Payload)
		}
	}
}

func sendAsyncSeq(t *testing.T, sess *server.Session, payload string) uint64 {
	t.Helper()
	e, err := sess.SendAsync(wire.JSON, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return e.Seq
}

// TestSendAsyncSeqIsTheDeliveryNumber: SendAsync's seq is the number the
// resumable client counts the packet by: replies count, Drain's Flush
// does not; and Drain with ack returns on the client's Ack of it.
func TestSendAsyncSeqIsTheDeliveryNumber(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}})
	c, _ := dialResume(t, ts, newKey(t), "", 0)
	sess := mustSession(t, ts, c.ID())
	for i := range uint64(3) {
		if seq := sendAsyncSeq(t, sess, "s"); seq != i+1 {
			t.Fatalf("SendAsync %d: seq %d", i+1, seq)
		}
	}
	readData(t, c, 3, 0)
	sendData(t, c, "e") // its echo is Data 4
	readData(t, c, 1, 1)
	drained := drainAsync(t, sess)
	flush := readUntilFlush(t, c)
	c.WriteControl(t, wire.TypeAck, wire.JSON, wire.AckPayload{Seq: 4})
	c.WriteControl(t, wire.TypeFlushAck, wire.JSON, wire.FlushPayload{Seq: flush})
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if seq := sendAsyncSeq(t, sess, "s"); seq != 5 {
		t.Fatalf("SendAsync after the echo and a Drain: seq %d, want 5", seq)
	}
	if n := readData(t, c, 1, 0); n[0] != "s" || mustSession(t, ts, c.ID()).Info().SentSeq != 5 {
		t.Fatalf("the server sent %d Data, want 5", mustSession(t, ts, c.ID()).Info().SentSeq)
	}
}

// TestSendAsyncSeqSkipsBarriersV1: on a v1 session too, seq counts the
// Data packets only: a Drain's Flush barrier takes no number.
func TestSendAsyncSeqSkipsBarriersV1(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}})
	c := wiretest.Connect(t, ts.addr, newKey(t))
	sess := mustSession(t, ts, c.ID())
	sendAsyncSeq(t, sess, "a")
	sendAsyncSeq(t, sess, "b")
	drained := drainAsync(t, sess)
	for range 2 {
		if f := c.Read(t); f.Type != wire.TypeData {
			t.Fatalf("got %s, want Data", f.Type)
		}
	}
	flush := readUntilFlush(t, c)
	c.WriteControl(t, wire.TypeFlushAck, wire.JSON, wire.FlushPayload{Seq: flush})
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if seq := sendAsyncSeq(t, sess, "c"); seq != 3 {
		t.Fatalf("SendAsync after a Drain with ack: seq %d, want 3", seq)
	}
}

// detachDraining sends "a" to a new resumable session, which its client
// reads without acking, starts a Drain with ack, and loses the connection
// with the Drain's Flush unanswered: the session is detached, the Drain
// waiting.
func detachDraining(t *testing.T, ts *testServer, key ed25519.PrivateKey) (epoch string, sess *server.Session, drained <-chan error) {
	t.Helper()
	c1, r1 := dialResume(t, ts, key, "", 0)
	sess = mustSession(t, ts, c1.ID())
	sendAsyncSeq(t, sess, "a")
	readData(t, c1, 1, 0)
	drained = drainAsync(t, sess)
	readUntilFlush(t, c1)
	_ = c1.Abort()
	ts.waitEvent(t, server.EventDetached, c1.ID())
	return r1.Epoch, sess, drained
}

// TestResumeDrainAckSurvivesReconnect: a Drain with ack waiting on a
// connection that is lost returns once the client, resumed on a new
// connection, has acked (here by its Resume's seq).
func TestResumeDrainAckSurvivesReconnect(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}})
	key := newKey(t)
	epoch, _, drained := detachDraining(t, ts, key)
	dialResume(t, ts, key, epoch, 1)
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
}

// TestResumeNewEpochRenumbers: after resumed=false, what the session still
// held is numbered from 1 again, SendAsync goes on from there, and a Drain
// with ack waiting for the old epoch fails with ErrNewEpoch.
func TestResumeNewEpochRenumbers(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}})
	key := newKey(t)
	_, sess, drained := detachDraining(t, ts, key)
	if seq := sendAsyncSeq(t, sess, "b"); seq != 2 {
		t.Fatalf("SendAsync to the detached session: seq %d, want 2", seq)
	}
	c2, r2 := dialResume(t, ts, key, "", 0) // the client lost its state
	if r2.Resumed {
		t.Fatalf("Resumed %+v, want a new epoch", r2)
	}
	if err := <-drained; !errors.Is(err, server.ErrNewEpoch) {
		t.Fatalf("Drain across a new epoch: %v, want ErrNewEpoch", err)
	}
	if err := equalStrings(readData(t, c2, 2, 0), "a", "b"); err != nil {
		t.Fatal(err)
	}
	if seq := sendAsyncSeq(t, sess, "c"); seq != 3 {
		t.Fatalf("SendAsync in the new epoch after 2 resent: seq %d, want 3", seq)
	}
}

// TestResumeClientThatNeverAcksIsClosed: replies cannot wait for a
// client's Acks, so a client that reads its echoes and never acks them is
// closed with Goodbye slow_consumer once twice the resume buffer is
// unacked, instead of making the server hold them without bound.
func TestResumeClientThatNeverAcksIsClosed(t *testing.T) {
	const buffer = 4 << 10
	ts := startServer(t, server.Config{Handler: server.Echo{}, ResumeBuffer: buffer})
	c, _ := dialResume(t, ts, newKey(t), "", 0)
	payload := make([]byte, 100)
	go func() { // sends until the connection ends
		for {
			if err := c.TLS().SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
				return
			}
			if _, err := c.TLS().Write(wire.AppendFrame(nil, wire.TypeData, wire.JSON, payload)); err != nil {
				return
			}
		}
	}()
	echoes := 0
	for {
		f := c.Read(t)
		switch f.Type {
		case wire.TypeData:
			echoes++
			continue
		case wire.TypeAck:
			continue
		}
		g, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
		if f.Type != wire.TypeGoodbye || err != nil || g.Code != wire.GoodbyeSlowConsumer {
			t.Fatalf("after %d echoes: %s %q, want Goodbye slow_consumer", echoes, f.Type, f.Payload)
		}
		t.Logf("Goodbye after %d echoes: %s", echoes, g.Reason)
		break
	}
	cost := server.EntryOverhead + 112 // a 100-byte echo: its entry and the 112-byte size class
	if held := echoes * cost; held <= 2*buffer || held > 2*buffer+server.DefaultQueueBytes+cost {
		t.Fatalf("closed after %d echoes (%d bytes unacked), want just past twice the %d-byte resume buffer", echoes, held, buffer)
	}
}

package server_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// readUntilGoodbye reads data frames until a Goodbye, returning the data
// payloads and the Error packets seen.
func readUntilGoodbye(t *testing.T, rc *wiretest.Conn) (data [][]byte, errs []wire.Frame, bye wire.GoodbyePayload) {
	t.Helper()
	for {
		f := rc.Read(t)
		switch f.Type {
		case wire.TypeData:
			data = append(data, f.Payload)
		case wire.TypeError:
			errs = append(errs, f)
		case wire.TypeGoodbye:
			gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
			if err != nil {
				t.Fatal(err)
			}
			return data, errs, gb
		default:
			t.Fatalf("unexpected %s frame", f.Type)
		}
	}
}

// TestTakeover: the old connection gets the exact Error and Goodbye, the
// inbound order is kept, and the outbound queue moves to the new
// connection in order, losing nothing.
func TestTakeover(t *testing.T) {
	const queued = 20000
	h := &countingHandler{}
	ts := startServer(t, server.Config{Handler: h, QueueBytes: 64 << 20})
	key := newKey(t)
	old := wiretest.Connect(t, ts.addr, key)
	ts.waitEvent(t, server.EventConnected, old.ID())
	sess, _ := ts.Session(old.ID())

	// Inbound: the old connection sends A0..A499 and stops.
	for i := range 500 {
		old.WriteFrame(t, wire.TypeData, wire.MsgPack, fmt.Appendf(nil, "A%d", i))
	}
	// Outbound: 20 MB, more than loopback's socket buffers hold, while the old client does not read, so that much of
	// it is still queued at the takeover.
	payload := bytes.Repeat([]byte("x"), 1000)
	for i := range queued {
		p := append(strconv.AppendInt(nil, int64(i), 10), ':')
		if _, err := sess.SendAsync(wire.JSON, append(p, payload...)); err != nil {
			t.Fatalf("SendAsync %d: %v", i, err)
		}
	}

	nu := wiretest.Connect(t, ts.addr, key)
	ev := ts.waitEvent(t, server.EventTakenOver, nu.ID())
	if ev.OldConnID == ev.ConnID || ev.Session.Takeovers != 1 {
		t.Fatalf("takeover event %+v", ev)
	}
	for i := range 500 {
		nu.WriteFrame(t, wire.TypeData, wire.MsgPack, fmt.Appendf(nil, "B%d", i))
	}
	// After the takeover the old connection's input is discarded.
	old.WriteFrame(t, wire.TypeData, wire.MsgPack, []byte("late"))

	var (
		wg              sync.WaitGroup
		oldData, nuData [][]byte
		oldErrs         []wire.Frame
		oldBye          wire.GoodbyePayload
	)
	wg.Go(func() {
		oldData, oldErrs, oldBye = readUntilGoodbye(t, old)
		old.WriteControl(t, wire.TypeGoodbye, wire.MsgPack, wire.GoodbyePayload{Code: wire.GoodbyeNormal})
		old.ExpectEOF(t)
	})
	wg.Go(func() {
		for {
			f := nu.Read(t)
			if f.Type != wire.TypeData {
				t.Errorf("new connection: unexpected %s", f.Type)
				return
			}
			if f.Payload[0] == 'B' { // an echo? the handler does not echo
				t.Errorf("new connection got %q", f.Payload)
				return
			}
			nuData = append(nuData, f.Payload)
			if bytes.HasPrefix(f.Payload, []byte(strconv.Itoa(queued-1)+":")) {
				return
			}
		}
	})
	wg.Wait()

	// The Error and the Goodbye are exactly as the original gateway's
	// clients expect, in the encoding the old client last used.
	if len(oldErrs) != 1 {
		t.Fatalf("old connection got %d Error packets, want 1", len(oldErrs))
	}
	ep, err := wire.DecodeError(oldErrs[0].Encoding, oldErrs[0].Payload)
	if err != nil || oldErrs[0].Encoding != wire.MsgPack || ep != (wire.ErrorPayload{Error: wire.TakeoverMessage, PktType: 0, Code: wire.CodeSessionTakenOver}) {
		t.Fatalf("takeover Error %+v (%s), %v", ep, oldErrs[0].Encoding, err)
	}
	if oldBye.Code != wire.GoodbyeSessionTakenOver || oldBye.Reconnect {
		t.Fatalf("takeover Goodbye %+v", oldBye)
	}
	// Outbound: what the old connection got, then what the new one got, is
	// every packet once, in order.
	all := append(oldData, nuData...)
	if len(all) != queued {
		t.Fatalf("old got %d, new got %d: %d in all, want %d", len(oldData), len(nuData), len(all), queued)
	}
	for i, p := range all {
		if !bytes.HasPrefix(p, []byte(strconv.Itoa(i)+":")) {
			t.Fatalf("packet %d is %.10q", i, p)
		}
	}
	if len(nuData) == 0 {
		t.Fatal("nothing was still queued at the takeover; the test proves nothing")
	}

	// Inbound: a prefix of the old connection's packets, then all of the
	// new one's, in order. Flush on the new connection proves they are done.
	nu.WriteControl(t, wire.TypeFlush, wire.JSON, wire.FlushPayload{Seq: 1})
	if f := nu.Read(t); f.Type != wire.TypeFlushAck {
		t.Fatalf("got %s, want FlushAck", f.Type)
	}
	got := h.got(nu.ID())
	i := 0
	for ; i < len(got) && got[i][0] == 'A'; i++ {
		if string(got[i]) != fmt.Sprintf("A%d", i) {
			t.Fatalf("inbound %d: %q", i, got[i])
		}
	}
	if len(got)-i != 500 {
		t.Fatalf("%d packets of the new connection processed, want 500 (after %d old ones)", len(got)-i, i)
	}
	for j := range 500 {
		if string(got[i+j]) != fmt.Sprintf("B%d", j) {
			t.Fatalf("inbound %d: %q, want B%d", i+j, got[i+j], j)
		}
	}
	closed := ts.waitEvent(t, server.EventClosed, old.ID())
	if closed.Close.ConnID != ev.OldConnID || closed.Close.Code != wire.GoodbyeSessionTakenOver || closed.Close.Discarded == 0 {
		t.Fatalf("old connection closed %+v: want its conn, code session_taken_over, discarded input", closed.Close)
	}
	if info := sess.Info(); info.ConnID != ev.ConnID {
		t.Fatalf("session is on conn %d, want %d", info.ConnID, ev.ConnID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		_, _, _ = readUntilGoodbye(t, nu)
		nu.WriteControl(t, wire.TypeGoodbye, wire.JSON, wire.GoodbyePayload{Code: wire.GoodbyeNormal})
	}()
	if info, err := sess.Close(ctx, server.CloseOptions{}); err != nil || info.Outcome != server.OutcomeClean {
		t.Fatalf("close: %+v %v", info, err)
	}
}

// TestTakeoverOfAStuckConnectionIsRecordedAsSuch: the old connection of a
// takeover whose client reads nothing (its writer is stuck on a full
// socket) and then goes away without a Goodbye is recorded as what
// happened: the server decided session_taken_over, and received no
// Goodbye; not "normal, peer closed", as when the client's end came first.
func TestTakeoverOfAStuckConnectionIsRecordedAsSuch(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Discard{}, QueueBytes: 64 << 20, LingerTimeout: 200 * time.Millisecond})
	key := newKey(t)
	old := wiretest.Connect(t, ts.addr, key)
	ts.waitEvent(t, server.EventConnected, old.ID())
	sess, _ := ts.Session(old.ID())
	payload := bytes.Repeat([]byte("x"), 1000)
	for i := range 20000 { // 20 MB, more than the socket buffers hold: the writer is stuck
		if _, err := sess.SendAsync(wire.JSON, payload); err != nil {
			t.Fatalf("SendAsync %d: %v", i, err)
		}
	}
	nu := wiretest.Connect(t, ts.addr, key)
	taken := ts.waitEvent(t, server.EventTakenOver, nu.ID())
	// The old client goes away without a Goodbye (close_notify, then
	// nothing) while its writer is still stuck.
	if err := old.TLS().CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var closed server.Event
	for {
		closed = ts.waitEvent(t, server.EventClosed, old.ID())
		if closed.ConnID == taken.OldConnID {
			break
		}
	}
	c := closed.Close
	if c.Code != wire.GoodbyeSessionTakenOver || c.Reason != wire.TakeoverMessage || c.PeerCode != "" {
		t.Fatalf("the stuck connection is recorded with code %q (reason %q), peer's code %q; want %q, none received",
			c.Code, c.Reason, c.PeerCode, wire.GoodbyeSessionTakenOver)
	}
	if c.Outcome == server.OutcomeClean {
		t.Fatalf("outcome %s, want anything but clean", c.Outcome)
	}
}

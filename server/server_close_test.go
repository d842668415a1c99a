package server_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestServerCloseWritesQueueFirst: 10,000 packets queued, then the session
// is closed. The client receives all of them, in order, then Goodbye, then
// EOF, and the outcome is clean.
func TestServerCloseWritesQueueFirst(t *testing.T) {
	const n = 10000
	ts := startServer(t, server.Config{Handler: server.Discard{}})
	rc := wiretest.Connect(t, ts.addr, newKey(t))
	ts.waitEvent(t, server.EventConnected, rc.ID())
	sess, ok := ts.Session(rc.ID())
	if !ok {
		t.Fatal("session not found")
	}
	for i := range n {
		if _, err := sess.SendAsync(wire.JSON, strconv.AppendInt(nil, int64(i), 10)); err != nil {
			t.Fatalf("SendAsync %d: %v", i, err)
		}
	}
	closed := make(chan server.CloseInfo, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		info, err := sess.Close(ctx, server.CloseOptions{Reason: "test"})
		if err != nil {
			t.Errorf("Close: %v", err)
		}
		closed <- info
	}()
	for i := range n {
		f := rc.Read(t)
		if f.Type != wire.TypeData || string(f.Payload) != strconv.Itoa(i) {
			t.Fatalf("packet %d: got %s %q", i, f.Type, f.Payload)
		}
	}
	f := rc.Read(t)
	if f.Type != wire.TypeGoodbye {
		t.Fatalf("after the data: got %s %q, want Goodbye", f.Type, f.Payload)
	}
	gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
	if err != nil || gb.Code != wire.GoodbyeAdmin {
		t.Fatalf("goodbye %+v, %v; want code admin", gb, err)
	}
	if _, err := sess.SendAsync(wire.JSON, []byte("late")); err == nil {
		t.Fatal("SendAsync after close started: want an error")
	}
	rc.WriteControl(t, wire.TypeGoodbye, wire.JSON, wire.GoodbyePayload{Code: wire.GoodbyeNormal})
	rc.ExpectEOF(t)
	_ = rc.Close()
	info := <-closed
	if info.Outcome != server.OutcomeClean || info.PacketsOut != n+1 || info.Code != wire.GoodbyeAdmin {
		t.Fatalf("close info %+v: want clean, %d packets out, code admin", info, n+1)
	}
}

// TestServerCloseTimesOutOnSilentPeer: a peer that never answers the
// Goodbye is closed after the linger timeout with outcome timeout.
func TestServerCloseTimesOutOnSilentPeer(t *testing.T) {
	ts := startServer(t, server.Config{LingerTimeout: 200 * time.Millisecond})
	rc := wiretest.Connect(t, ts.addr, newKey(t))
	ts.waitEvent(t, server.EventConnected, rc.ID())
	sess, _ := ts.Session(rc.ID())
	info, err := sess.Close(context.Background(), server.CloseOptions{Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if info.Outcome != server.OutcomeTimeout {
		t.Fatalf("outcome %s, want timeout", info.Outcome)
	}
	if f := rc.Read(t); f.Type != wire.TypeGoodbye {
		t.Fatalf("got %s, want Goodbye", f.Type)
	}
}

// TestClientGoodbyeIsAnswered: the client-initiated exchange. Echoes of
// packets sent before the Goodbye arrive before the server's Goodbye.
func TestClientGoodbyeIsAnswered(t *testing.T) {
	ts := startServer(t, server.Config{})
	rc := wiretest.Connect(t, ts.addr, newKey(t))
	for i := range 100 {
		rc.WriteFrame(t, wire.TypeData, wire.MsgPack, fmt.Appendf(nil, "%d", i))
	}
	rc.WriteControl(t, wire.TypeGoodbye, wire.MsgPack, wire.GoodbyePayload{Code: wire.GoodbyeNormal})
	for i := range 100 {
		f := rc.Read(t)
		if f.Type != wire.TypeData || f.Encoding != wire.MsgPack || string(f.Payload) != strconv.Itoa(i) {
			t.Fatalf("echo %d: got %s/%s %q", i, f.Type, f.Encoding, f.Payload)
		}
	}
	f := rc.Read(t)
	gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
	if f.Type != wire.TypeGoodbye || f.Encoding != wire.MsgPack || err != nil || gb.Code != wire.GoodbyeNormal {
		t.Fatalf("got %s/%s %+v %v, want msgpack Goodbye normal", f.Type, f.Encoding, gb, err)
	}
	rc.ExpectEOF(t)
	_ = rc.Close()
	ev := ts.waitEvent(t, server.EventClosed, rc.ID())
	if ev.Close.Outcome != server.OutcomeClean || ev.Close.PeerCode != wire.GoodbyeNormal {
		t.Fatalf("close %+v: want clean", ev.Close)
	}
}

package control_test

import (
	"slices"
	"testing"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/wire"
)

// TestWatchSessions: the snapshot of the current sessions, then live
// events: connected, taken over, closed.
func TestWatchSessions(t *testing.T) {
	e := start(t, setup{})
	existing := []uint64{e.dialRaw(t, nil).ID(), e.dialRaw(t, nil).ID()}
	slices.Sort(existing)

	ws, snapshot := e.watch(t)
	var got []uint64
	for _, s := range snapshot {
		got = append(got, s.GetSessionId())
		if s.GetState() != tlsgatev1.SessionState_SESSION_STATE_ACTIVE || s.GetConnectionId() == 0 {
			t.Fatalf("snapshot session %v", s)
		}
	}
	if !slices.Equal(got, existing) {
		t.Fatalf("snapshot %v, want %v", got, existing)
	}

	key := newKey(t)
	old := e.dialRaw(t, key)
	ev := ws.recvNext(t)
	conn := ev.GetConnected().GetSession()
	if conn.GetSessionId() != old.ID() || conn.GetConnectionId() == 0 || ev.GetTime() == nil {
		t.Fatalf("want connected of %d, got %v", old.ID(), ev)
	}

	nu := e.dialRaw(t, key)
	ev = ws.recvNext(t)
	to := ev.GetTakenOver()
	if to.GetSessionId() != old.ID() || to.GetOldConnectionId() != conn.GetConnectionId() ||
		to.GetNewConnectionId() == conn.GetConnectionId() || to.GetSession().GetConnectionId() != to.GetNewConnectionId() ||
		to.GetSession().GetTakeovers() != 1 {
		t.Fatalf("want taken_over of %d from connection %d, got %v", old.ID(), conn.GetConnectionId(), ev)
	}
	// The old connection is told, then closes; its closed event names it.
	if f := old.Read(t); f.Type != wire.TypeError {
		t.Fatalf("old connection got %s, want the takeover Error", f.Type)
	}
	if _, gb := readGoodbye(t, old); gb.Code != wire.GoodbyeSessionTakenOver {
		t.Fatalf("old connection's Goodbye %+v", gb)
	}
	_ = old.Close()
	cl := ws.recvNext(t).GetClosed()
	if cl.GetSessionId() != old.ID() || cl.GetConnectionId() != to.GetOldConnectionId() ||
		cl.GetGoodbyeCode() != wire.GoodbyeSessionTakenOver || cl.GetOutcome() != tlsgatev1.Outcome_OUTCOME_PEER_CLOSED {
		t.Fatalf("closed event of the old connection %v", cl)
	}

	// The new connection sends 3 packets (echoed) and says Goodbye.
	for range 3 {
		nu.WriteFrame(t, wire.TypeData, wire.JSON, []byte(`"x"`))
	}
	nu.WriteControl(t, wire.TypeGoodbye, wire.JSON, wire.GoodbyePayload{Code: "bye"})
	if data, gb := readGoodbye(t, nu); len(data) != 3 || gb.Code != wire.GoodbyeNormal {
		t.Fatalf("new connection got %d echoes and Goodbye %+v", len(data), gb)
	}
	_ = nu.Close()
	cl = ws.recvNext(t).GetClosed()
	if cl.GetSessionId() != old.ID() || cl.GetConnectionId() != to.GetNewConnectionId() || cl.GetGoodbyeCode() != wire.GoodbyeNormal ||
		cl.GetPeerGoodbyeCode() != "bye" || cl.GetOutcome() != tlsgatev1.Outcome_OUTCOME_CLEAN {
		t.Fatalf("closed event of the new connection %v", cl)
	}
	if c := cl.GetCounters(); c.GetPacketsIn() != 4 || c.GetPacketsOut() != 4 || c.GetUnwritten() != 0 {
		t.Fatalf("counters %v; want 4 in (3 + Goodbye), 4 out (3 echoes + Goodbye)", c)
	}
}

// TestWatchSessionsLiveOnly: without include_snapshot the stream starts
// with live events; its headers say when it is subscribed.
func TestWatchSessionsLiveOnly(t *testing.T) {
	e := start(t, setup{})
	e.dialRaw(t, nil)
	ws, err := e.api.WatchSessions(timeout(t, wait), &tlsgatev1.WatchSessionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Header(); err != nil {
		t.Fatal(err)
	}
	rc := e.dialRaw(t, nil)
	ev, err := ws.Recv()
	if err != nil || ev.GetConnected().GetSession().GetSessionId() != rc.ID() {
		t.Fatalf("first event %v, %v; want connected of %d", ev, err, rc.ID())
	}
}

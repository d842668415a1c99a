package control_test

import (
	"crypto/sha256"
	"testing"

	"google.golang.org/grpc/codes"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestResumableSessionThroughTheAPI: a resumable session's life as the
// control plane shows it: the resumed event, its resume state in
// GetSession, the closed and detached events when its connection is lost,
// state DETACHED in ListSessions, sends that still queue, and a Disconnect
// that ends it and counts what it dropped, with its expired event.
func TestResumableSessionThroughTheAPI(t *testing.T) {
	e := start(t, setup{})
	ws, _ := e.watch(t)
	r := wiretest.Connect(t, e.gwAddr, newKey(t), wiretest.Pin(sha256.Sum256(e.cert.Certificate[0])), wiretest.Wait(wait), wiretest.ALPN(wire.ALPNResume))
	r.WriteControl(t, wire.TypeResume, wire.JSON, wire.ResumePayload{})
	if f := r.Read(t); f.Type != wire.TypeResumed {
		t.Fatalf("got %s, want Resumed", f.Type)
	}
	id := r.ID()
	ev := nextEvent(t, ws, func(ev *tlsgatev1.WatchSessionsResponse) bool { return ev.GetResumed() != nil })
	epoch := ev.GetResumed().GetSession().GetResume().GetEpoch()
	if ev.GetResumed().GetResumed() || ev.GetResumed().GetSession().GetSessionId() != id || len(epoch) != 16 {
		t.Fatalf("resumed event %v: want session %d, a new epoch, resumed false", ev, id)
	}

	// A 1-byte packet is charged its entry and its payload's allocation:
	// gRPC's decoding makes that the smallest size class.
	const frame = uint64(server.EntryOverhead + 8)
	for _, p := range []string{"a", "b"} {
		if seq := e.sendAsync(t, id, tlsgatev1.Encoding_ENCODING_JSON, []byte(p)).GetSeq(); seq == 0 {
			t.Fatal("SendAsync seq 0")
		}
	}
	for range 2 {
		if f := r.Read(t); f.Type != wire.TypeData {
			t.Fatalf("got %s, want Data", f.Type)
		}
	}
	rs := e.getSession(t, id).GetResume()
	if rs.GetEpoch() != epoch || rs.GetSentSeq() != 2 || rs.GetClientAckedSeq() != 0 || rs.GetRetainedBytes() != 2*frame ||
		rs.GetDetachedTime() != nil {
		t.Fatalf("resume state %v: want 2 sent, none acked, %d bytes retained, not detached", rs, 2*frame)
	}

	_ = r.Abort()
	closedEvent(t, ws, id)
	det := nextEvent(t, ws, func(ev *tlsgatev1.WatchSessionsResponse) bool { return ev.GetDetached() != nil }).GetDetached().GetSession()
	if det.GetSessionId() != id || det.GetState() != tlsgatev1.SessionState_SESSION_STATE_DETACHED ||
		det.GetResume().GetDetachedTime() == nil || !det.GetResume().GetExpireTime().AsTime().After(det.GetResume().GetDetachedTime().AsTime()) {
		t.Fatalf("detached event %v", det)
	}
	list, err := e.api.ListSessions(timeout(t, wait), &tlsgatev1.ListSessionsRequest{States: []tlsgatev1.SessionState{tlsgatev1.SessionState_SESSION_STATE_DETACHED}})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetSessions()) != 1 || list.GetSessions()[0].GetSessionId() != id || list.GetSessions()[0].GetResume().GetRetainedBytes() != 2*frame ||
		list.GetSessions()[0].GetMemoryBytes() != 2*frame { // its share of --max-memory: the retained bytes
		t.Fatalf("detached sessions listed: %v", list.GetSessions())
	}
	e.sendAsync(t, id, tlsgatev1.Encoding_ENCODING_JSON, []byte("c"))

	resp, err := e.api.Disconnect(timeout(t, wait), &tlsgatev1.DisconnectRequest{SessionId: id})
	if err != nil {
		t.Fatalf("Disconnect of a detached session: %v", err)
	}
	ended := resp.GetEnded()
	if resp.GetConnection() != nil || ended.GetSessionId() != id || ended.GetReason() != "disconnect" ||
		ended.GetDroppedPackets() != 3 || ended.GetDroppedBytes() != 3*frame {
		t.Fatalf("Disconnect: %v; want no connection, 3 packets and %d bytes dropped", resp, 3*frame)
	}
	exp := nextEvent(t, ws, func(ev *tlsgatev1.WatchSessionsResponse) bool { return ev.GetExpired() != nil }).GetExpired().GetEnded()
	if exp.GetSessionId() != id || exp.GetReason() != "disconnect" || exp.GetDroppedPackets() != 3 {
		t.Fatalf("expired event %v", exp)
	}
	_, err = e.api.GetSession(timeout(t, wait), &tlsgatev1.GetSessionRequest{SessionId: id})
	wantCode(t, err, codes.NotFound)
}

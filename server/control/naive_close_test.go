package control_test

import (
	"fmt"
	"sync"
	"testing"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/wire"
)

// TestNaiveClientCloseLosesNothingThroughTheAPI: a naive raw-TLS client
// (no library, no Goodbye) writes 1,000 Data packets from several
// goroutines, then closes its tls.Conn, and the control plane loses none of
// them. A Receive stream opened beforehand gets all 1,000, in per-session
// seq order, then the connection's closed marker; WatchSessions' closed
// event for the connection counts 1,000 packets in.
//
// The hub hands a connection's packets to every Receive stream before it
// publishes the connection's closed event, which goes to the Receive
// streams' and the watchers' buffers in that order. Two gRPC streams have
// no order between them on the wire, so what a client can check is what
// this test checks: on the Receive stream every packet precedes the closed
// marker, and the watcher's closed event (published at the same moment as
// that marker) counts every packet delivered. The timestamps agree: the
// last packet's received_time is not after the closed event's time.
func TestNaiveClientCloseLosesNothingThroughTheAPI(t *testing.T) {
	const frames, writers = 1000, 8
	reps := 100
	if testing.Short() {
		reps = 10
	}
	e := start(t, setup{})
	rs := e.receive(t, nil)
	ws, _ := e.watch(t)
	for rep := range reps {
		rc := e.dialRaw(t, nil)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := w; i < frames; i += writers {
					rc.WriteFrame(t, wire.TypeData, wire.JSON, fmt.Appendf(nil, "%d", i))
				}
			})
		}
		wg.Wait()
		if err := rc.Close(); err != nil {
			t.Fatal(err)
		}

		in := readUntilClosed(t, rs, rc.ID())[rc.ID()]
		seen := make([]bool, frames)
		for i, p := range in.packets {
			if p.GetSeq() != uint64(i+1) || p.GetType() != tlsgatev1.PacketType_PACKET_TYPE_DATA {
				t.Fatalf("rep %d: packet %d has seq %d, type %s", rep, i, p.GetSeq(), p.GetType())
			}
			var v int
			if _, err := fmt.Sscan(string(p.GetPayload()), &v); err != nil || v < 0 || v >= frames || seen[v] {
				t.Fatalf("rep %d: packet %d: payload %q duplicated or not sent", rep, i, p.GetPayload())
			}
			seen[v] = true
		}
		if len(in.packets) != frames {
			t.Fatalf("rep %d: the Receive stream got %d of %d packets before the closed marker", rep, len(in.packets), frames)
		}
		if got := in.closed.GetCounters().GetPacketsIn(); got != frames {
			t.Fatalf("rep %d: the closed marker counts %d packets in, want %d", rep, got, frames)
		}

		closed := nextEvent(t, ws, func(ev *tlsgatev1.WatchSessionsResponse) bool { return ev.GetClosed().GetSessionId() == rc.ID() })
		ev := closed.GetClosed()
		if last := in.packets[frames-1].GetReceivedTime().AsTime(); last.After(closed.GetTime().AsTime()) {
			t.Fatalf("rep %d: the last packet was received at %s, after the closed event at %s", rep, last, closed.GetTime().AsTime())
		}
		if got := ev.GetCounters().GetPacketsIn(); got != frames {
			t.Fatalf("rep %d: the closed event counts %d packets in, want %d", rep, got, frames)
		}
		if ev.GetOutcome() != tlsgatev1.Outcome_OUTCOME_PEER_CLOSED || ev.GetConnectionId() != in.closed.GetConnectionId() {
			t.Fatalf("rep %d: closed event %v", rep, ev)
		}
	}
}

package server_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestNaiveClientCloseLosesNothing: a client that knows nothing of Goodbye
// writes 1,000 frames from several goroutines, then calls tls.Conn.Close.
// The server has processed all 1,000 when the connection's closed event
// comes, with outcome peer_closed, every time.
func TestNaiveClientCloseLosesNothing(t *testing.T) {
	const frames, writers = 1000, 8
	reps := 200
	if testing.Short() {
		reps = 20
	}
	h := &countingHandler{}
	ts := startServer(t, server.Config{Handler: h})
	for rep := range reps {
		key := newKey(t)
		rc := wiretest.Connect(t, ts.addr, key)
		ts.waitEvent(t, server.EventConnected, rc.ID())
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
		ev := ts.waitEvent(t, server.EventClosed, rc.ID())
		if n := len(h.got(rc.ID())); n != frames {
			t.Fatalf("rep %d: handler processed %d of %d frames", rep, n, frames)
		}
		if ev.Close.PacketsIn != frames {
			t.Fatalf("rep %d: closed event counts %d packets in, want %d", rep, ev.Close.PacketsIn, frames)
		}
		if ev.Close.Outcome != server.OutcomePeerClosed {
			t.Fatalf("rep %d: outcome %s, want peer_closed", rep, ev.Close.Outcome)
		}
	}
}

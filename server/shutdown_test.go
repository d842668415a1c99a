package server_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestShutdownDrainsEverySession: 100 sessions with queued packets are shut
// down; each client receives everything, then Goodbye server_shutdown.
func TestShutdownDrainsEverySession(t *testing.T) {
	const sessions, queued = 100, 500
	ts := startServer(t, server.Config{Handler: server.Discard{}})
	conns := make([]*client.Conn, sessions)
	for i := range conns {
		conns[i] = ts.dialClient(t, newKey(t))
		ts.waitEvent(t, server.EventConnected, conns[i].ID())
	}
	for _, c := range conns {
		sess, ok := ts.Session(c.ID())
		if !ok {
			t.Fatal("no session")
		}
		for j := range queued {
			if _, err := sess.SendAsync(wire.MsgPack, fmt.Appendf(nil, "%d", j)); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			for j := range queued {
				p, err := c.Recv(ctx)
				if err != nil || string(p.Payload) != fmt.Sprint(j) {
					t.Errorf("session %d packet %d: %q, %v", c.ID(), j, p.Payload, err)
					return
				}
			}
			_, err := c.Recv(ctx)
			var ce *client.CloseError
			if !errors.As(err, &ce) || ce.Code != wire.GoodbyeServerShutdown || !ce.Reconnect || ce.Outcome != client.OutcomeClean {
				t.Errorf("session %d ended with %v, want a clean Goodbye server_shutdown", c.ID(), err)
			}
		})
	}
	wg.Wait()
	if n := len(ts.Sessions()); n != 0 {
		t.Fatalf("%d sessions left after Shutdown", n)
	}
}

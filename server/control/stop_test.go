package control_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/tlsgate/tlsgate/client"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/wire"
)

// TestStop: shut down as serve does, the gateway first: the streams get
// the connections' closed events, then end with UNAVAILABLE, and Stop
// returns without being forced.
func TestStop(t *testing.T) {
	e := start(t, setup{})
	c := e.dialGo(t, nil)
	rs := e.receive(t, nil)
	ws, _ := e.watch(t)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.gw.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if ce := closeError(t, c); ce.Code != wire.GoodbyeServerShutdown || ce.Outcome != client.OutcomeClean {
		t.Fatalf("client saw %+v", ce)
	}
	stopped := make(chan struct{})
	go func() {
		e.ctl.Stop(ctx)
		close(stopped)
	}()

	item, err := rs.Recv()
	if err != nil || item.GetClosed().GetSessionId() != c.ID() || item.GetClosed().GetGoodbyeCode() != wire.GoodbyeServerShutdown {
		t.Fatalf("Receive: %v, %v; want the closed marker of %d", item, err, c.ID())
	}
	_, err = rs.Recv()
	wantCode(t, err, codes.Unavailable, "shutting down")

	if cl := closedEvent(t, ws, c.ID()); cl.GetOutcome() != tlsgatev1.Outcome_OUTCOME_CLEAN {
		t.Fatalf("closed event %v", cl)
	}
	_, err = ws.Recv()
	wantCode(t, err, codes.Unavailable, "shutting down")

	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("Stop did not return")
	}
	if ctx.Err() != nil {
		t.Fatal("Stop returned only when its context ended: it was forced")
	}
}

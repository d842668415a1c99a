package server_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestAsyncSendThenCloseLosesNothing: SendAsync("ONE"), SendAsync("TWO"),
// then Close at once, 1,000 times. Close exchanges the Goodbyes only after
// both packets: the echo server's handler sees both, in order, the client
// receives both echoes before ErrClosed, and the connection ends clean.
func TestAsyncSendThenCloseLosesNothing(t *testing.T) {
	reps := 1000
	if testing.Short() {
		reps = 50
	}
	h := &recordingEcho{}
	ts := startServer(t, server.Config{Handler: h})
	for rep := range reps {
		c := ts.dialClient(t, newKey(t))
		one := c.SendAsync(client.Data([]byte("ONE")))
		two := c.SendAsync(client.Data([]byte("TWO")))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := c.Close(ctx); err != nil {
			cancel()
			t.Fatalf("rep %d: Close: %v", rep, err)
		}
		if err := errors.Join(<-one, <-two); err != nil {
			t.Fatalf("rep %d: SendAsync: %v", rep, err)
		}
		for _, want := range []string{"ONE", "TWO"} {
			p, err := c.Recv(ctx)
			if err != nil || string(p.Payload) != want {
				t.Fatalf("rep %d: Recv = %q, %v; want %q", rep, p.Payload, err, want)
			}
		}
		if _, err := c.Recv(ctx); !errors.Is(err, client.ErrClosed) {
			t.Fatalf("rep %d: Recv after the echoes = %v, want ErrClosed", rep, err)
		}
		cancel()
		ev := ts.waitEvent(t, server.EventClosed, c.ID())
		if got := h.got(c.ID()); len(got) != 2 || string(got[0]) != "ONE" || string(got[1]) != "TWO" {
			t.Fatalf("rep %d: handler saw %q", rep, got)
		}
		if ev.Close.Outcome != server.OutcomeClean {
			t.Fatalf("rep %d: outcome %s, want clean", rep, ev.Close.Outcome)
		}
	}
}

// TestClientEOFWithoutGoodbyeGetsGoodbyePeerClosed: protocol.md §7.1's
// naive close. A client that half-closes without a Goodbye still gets the
// echoes of what it sent, then Goodbye normal "peer closed", then EOF; the
// server records peer_closed, not clean.
func TestClientEOFWithoutGoodbyeGetsGoodbyePeerClosed(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}})
	c := wiretest.Connect(t, ts.addr, newKey(t))
	for i := range 3 {
		c.WriteFrame(t, wire.TypeData, wire.JSON, fmt.Appendf(nil, "%d", i))
	}
	if err := c.TLS().CloseWrite(); err != nil { // close_notify, no Goodbye
		t.Fatal(err)
	}
	data, errs, bye := readUntilGoodbye(t, c)
	if len(data) != 3 || len(errs) != 0 || bye.Code != wire.GoodbyeNormal || bye.Reason != "peer closed" {
		t.Fatalf("got %d echoes, %d errors, then Goodbye %+v; want 3 echoes, then Goodbye normal \"peer closed\"", len(data), len(errs), bye)
	}
	c.ExpectEOF(t)
	if o := ts.waitEvent(t, server.EventClosed, c.ID()).Close.Outcome; o != server.OutcomePeerClosed {
		t.Fatalf("outcome %s, want peer_closed", o)
	}
}

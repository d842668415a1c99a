package server_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/server"
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

package server_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestFlushFromClient: when Flush returns, the server has processed every
// earlier packet, and their echoes were written ahead of the FlushAck.
func TestFlushFromClient(t *testing.T) {
	const n = 100
	h := &recordingEcho{}
	ts := startServer(t, server.Config{Handler: h})
	c := ts.dialClient(t, newKey(t))
	for i := range n {
		c.SendAsync(client.Data(fmt.Appendf(nil, "%d", i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(h.got(c.ID())); got != n {
		t.Fatalf("after Flush the handler had processed %d of %d", got, n)
	}
	// The echoes arrived before the FlushAck: they are already buffered, so
	// Recv returns them even with a dead context.
	dead, stop := context.WithCancel(context.Background())
	stop()
	for i := range n {
		p, err := c.Recv(dead)
		if err != nil || string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("echo %d: %q, %v", i, p.Payload, err)
		}
	}
}

// TestDrainAckWaitsForTheApplication: Drain with ack returns only once the
// client application has consumed every earlier packet.
func TestDrainAckWaitsForTheApplication(t *testing.T) {
	const n = 100
	ts := startServer(t, server.Config{Handler: server.Discard{}})
	var consumed atomic.Int64
	var atAck atomic.Int64
	handled := ts.dialClient(t, newKey(t), client.WithHandler(func(client.Packet) { consumed.Add(1) }))
	sess, _ := ts.Session(handled.ID())
	for i := range n {
		if _, err := sess.SendAsync(wire.JSON, fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := sess.Drain(ctx, true)
	atAck.Store(consumed.Load())
	if err != nil || res.Seq != n || res.Target != n || !res.Acked {
		t.Fatalf("Drain = %+v, %v; want seq %d acknowledged", res, err, n)
	}
	if atAck.Load() != n {
		t.Fatalf("Drain returned when the handler had consumed %d of %d", atAck.Load(), n)
	}

	// With Recv: the barrier waits while the application reads nothing.
	polled := ts.dialClient(t, newKey(t))
	sess, _ = ts.Session(polled.ID())
	for i := range n {
		if _, err := sess.SendAsync(wire.JSON, fmt.Appendf(nil, "%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	if res, err := sess.Drain(short, true); !errors.Is(err, context.DeadlineExceeded) || res.Acked {
		t.Fatalf("Drain while nothing is consumed = %+v, %v; want DeadlineExceeded, not acknowledged", res, err)
	}
	// Without ack, Drain only needs the packets written.
	if res, err := sess.Drain(ctx, false); err != nil || res.Seq < n {
		t.Fatalf("Drain without ack = %+v, %v", res, err)
	}
	for i := range n {
		if p, err := polled.Recv(ctx); err != nil || string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("Recv %d: %q, %v", i, p.Payload, err)
		}
	}
	if _, err := sess.Drain(ctx, true); err != nil {
		t.Fatalf("Drain after the application consumed everything: %v", err)
	}
	if info := sess.Info(); info.LastFlushAck != 2 {
		t.Fatalf("last flush ack %d, want 2", info.LastFlushAck)
	}
}

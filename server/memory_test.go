package server_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestMaxMemoryBoundsEverySession: Config.MaxMemory bounds what the
// sessions hold together, resume buffers included. With a bound below one
// packet, a resumable client that reads but never acks holds it alone:
// further sends to it are refused with ErrMemoryFull (a SendWait waits for
// its Ack), new connections are refused, and a session that holds nothing
// still gets its packets one at a time. The client's Ack gives the memory
// back, and connections are admitted again.
func TestMaxMemoryBoundsEverySession(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}, MaxMemory: 1})
	a, _ := dialResume(t, ts, newKey(t), "", 0)
	b := wiretest.Connect(t, ts.addr, newKey(t))
	sa, sb := mustSession(t, ts, a.ID()), mustSession(t, ts, b.ID())

	// a's first packet goes into its empty queue; a never acks it, so its
	// resume buffer keeps it, and the bound is reached.
	first := []byte(`"a1"`)
	if _, err := sa.SendAsync(wire.JSON, first); err != nil {
		t.Fatalf("first send into an empty queue: %v", err)
	}
	readData(t, a, 1, 0)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := sa.Drain(ctx, false); err != nil { // its writer is done with it
		t.Fatal(err)
	}
	_, err := sa.SendAsync(wire.JSON, []byte(`"a2"`))
	if !errors.Is(err, server.ErrMemoryFull) || !errors.Is(err, server.ErrQueueFull) {
		t.Fatalf("send past the memory bound: %v, want ErrMemoryFull (an ErrQueueFull)", err)
	}
	cost := int64(server.EntryOverhead + cap(first))
	if st := ts.Stats(); st.MemoryHeld != cost || st.MemoryLimit != 1 {
		t.Fatalf("stats: %d bytes held of %d; want %d (a's unacked packet) of 1", st.MemoryHeld, st.MemoryLimit, cost)
	}

	// b holds nothing between its packets: each one waits only for the
	// previous one to be written.
	for i := range 10 {
		if _, err := sb.SendWait(ctx, wire.JSON, fmt.Appendf(nil, `"b%d"`, i)); err != nil {
			t.Fatalf("send %d to a session that holds nothing: %v", i, err)
		}
		if f := b.Read(t); f.Type != wire.TypeData || string(f.Payload) != fmt.Sprintf(`"b%d"`, i) {
			t.Fatalf("b got %s %q, want Data \"b%d\"", f.Type, f.Payload, i)
		}
	}

	refused(t, ts.addr)
	if st := ts.Stats(); st.RefusedMemory != 1 {
		t.Fatalf("stats: %d connections refused for memory, want 1", st.RefusedMemory)
	}

	// A SendWait to a waits for memory; a's Ack frees it.
	sent := make(chan error, 1)
	go func() {
		_, err := sa.SendWait(ctx, wire.JSON, []byte(`"a2"`))
		sent <- err
	}()
	select {
	case err := <-sent:
		t.Fatalf("SendWait returned %v before the client acked anything", err)
	default:
	}
	a.WriteControl(t, wire.TypeAck, wire.JSON, wire.AckPayload{Seq: 1})
	if err := <-sent; err != nil {
		t.Fatalf("SendWait after the Ack: %v", err)
	}
	if got := readData(t, a, 1, 0); got[0] != `"a2"` {
		t.Fatalf("a got %q, want \"a2\"", got)
	}
	// Its Ack, proved processed by the FlushAck behind it, leaves nothing
	// held: connections are admitted again.
	a.WriteControl(t, wire.TypeAck, wire.JSON, wire.AckPayload{Seq: 2})
	a.WriteControl(t, wire.TypeFlush, wire.JSON, wire.FlushPayload{Seq: 1})
	if f := a.Read(t); f.Type != wire.TypeFlushAck {
		t.Fatalf("got %s %q, want FlushAck", f.Type, f.Payload)
	}
	// (The FlushAck, and b's last packet, count until their writers have
	// finished with them: Drain waits for that.)
	for _, s := range []*server.Session{sa, sb} {
		if _, err := s.Drain(ctx, false); err != nil {
			t.Fatal(err)
		}
	}
	if held := ts.Stats().MemoryHeld; held != 0 {
		t.Fatalf("%d bytes held after every packet was acked, want 0", held)
	}
	wiretest.Connect(t, ts.addr, newKey(t))
}

// TestMaxMemoryDefault: MaxMemory defaults to half the memory of the
// cgroup or the machine, and -1 turns the bound off (the gateway's
// TestValidate has the invalid values).
func TestMaxMemoryDefault(t *testing.T) {
	def := server.DefaultMaxMemory()
	if def <= 0 {
		t.Skip("neither the cgroup's nor the machine's memory is readable here")
	}
	if st := startServer(t, server.Config{}).Stats(); st.MemoryLimit != def {
		t.Errorf("default bound %d, want DefaultMaxMemory() = %d", st.MemoryLimit, def)
	}
	if st := startServer(t, server.Config{MaxMemory: -1}).Stats(); st.MemoryLimit != 0 {
		t.Errorf("MaxMemory -1: bound %d, want 0 (none)", st.MemoryLimit)
	}
}

package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestMaxMemoryBoundsEverySession: Config.MaxMemory bounds what the
// sessions hold together, resume buffers included. With a bound below one
// packet, a resumable client that reads but never acks holds it alone:
// further sends to it are refused with ErrMemoryFull (a SendWait waits for
// its Ack), new sessions are refused but the client's own Resume is not,
// and a session that holds nothing still gets its packets one at a time.
// The client's Ack gives the memory back, and new sessions are admitted
// again.
func TestMaxMemoryBoundsEverySession(t *testing.T) {
	ts := startServer(t, server.Config{Handler: server.Echo{}, MaxMemory: 1})
	keyA := newKey(t)
	a, r := dialResume(t, ts, keyA, "", 0)
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
	if share := sa.Info().MemoryBytes; share != int(cost) {
		t.Fatalf("a's share of the bound: %d bytes, want %d", share, cost)
	}
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

	// A new session is refused once its handshake is done (closed before
	// its session ID)...
	if err := wiretest.Dial(t, ts.addr).Handshake(newKey(t)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("handshake of a new session past the memory bound: %v, want the connection closed", err)
	}
	if st := ts.Stats(); st.RefusedMemory != 1 {
		t.Fatalf("stats: %d new sessions refused for memory, want 1", st.RefusedMemory)
	}
	// ...but a returning client is not: acking is how it gives memory
	// back. a's connection is lost; detached, its session still holds
	// the packet, and its Resume gets it again.
	_ = a.Abort()
	ts.waitEvent(t, server.EventDetached, a.ID())
	if held := ts.Stats().MemoryHeld; held != cost {
		t.Fatalf("a detached session's packet: %d bytes held, want %d", held, cost)
	}
	a, r = dialResume(t, ts, keyA, r.Epoch, 0)
	if !r.Resumed {
		t.Fatalf("Resumed %+v, want the epoch resumed", r)
	}
	if got := readData(t, a, 1, 0); got[0] != `"a1"` {
		t.Fatalf("replayed %q, want \"a1\"", got)
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

// TestMaxMemoryReachedByManySessions: sessions whose clients never read,
// fed at once, reach the gateway's bound together (not their own, which
// is larger): each is refused with ErrMemoryFull, what they hold stays
// within the bound plus one packet each, and a session below it is still
// served both ways.
func TestMaxMemoryReachedByManySessions(t *testing.T) {
	const sessions, bound, payload = 20, 2 << 20, 4096
	ts := startServer(t, server.Config{Handler: server.Echo{}, QueueBytes: 8 << 20, MaxMemory: bound})
	reader := ts.dialClient(t, newKey(t))
	var stuck []*server.Session
	for range sessions {
		stuck = append(stuck, mustSession(t, ts, wiretest.Connect(t, ts.addr, newKey(t)).ID()))
	}
	before := heapInUse()
	errs := make(chan error, sessions)
	for _, s := range stuck {
		go func() {
			p := make([]byte, payload)
			for {
				if _, err := s.SendAsync(wire.JSON, p); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range sessions {
		if err := <-errs; !errors.Is(err, server.ErrMemoryFull) {
			t.Fatalf("a non-reading session was refused with %v, want ErrMemoryFull", err)
		}
	}
	growth := heapInUse() - before
	// (The writers may have drained some since: the kernel's socket
	// buffers grow. The high-water mark is what they held at most.)
	peak := ts.Stats().MemoryHighWater
	perPacket := int64(server.EntryOverhead + payload)
	t.Logf("%d sessions held at most %d KiB of a %d KiB bound; heap growth %d KiB", sessions, peak>>10, bound>>10, growth>>10)
	if peak > bound+sessions*perPacket || peak < bound-perPacket {
		t.Fatalf("the sessions held at most %d bytes; want the bound %d reached, and at most one packet each past it", peak, bound)
	}
	// Each stuck writer also holds its write buffer (at most 64 KiB).
	if limit := uint64(2*bound + sessions*128<<10); growth > limit {
		t.Fatalf("heap grew %d bytes, over %d (twice the bound, and 128 KiB a session)", growth, limit)
	}

	// The session below the bound: its client's packets are echoed, and
	// the server's sends reach it.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	sr := mustSession(t, ts, reader.ID())
	for i := range 20 {
		want := fmt.Sprintf(`"%d"`, i)
		if err := reader.Send(ctx, client.Data([]byte(want))); err != nil {
			t.Fatal(err)
		}
		if _, err := sr.SendWait(ctx, wire.JSON, []byte(want)); err != nil {
			t.Fatalf("send %d to the session below the bound: %v", i, err)
		}
		for range 2 { // the echo and the server's send, in either order
			p, err := reader.Recv(ctx)
			if err != nil || string(p.Payload) != want {
				t.Fatalf("packet %d: %q, %v; want %s", i, p.Payload, err, want)
			}
		}
	}
}

// TestMaxMemoryBoundsReplies: clients that send 0-byte Data and never read
// the echoes (the costliest frames for their size) are held to the memory
// bound, not to their much larger queue bounds: their connections stop
// being read once the bound is reached, and a session below it is still
// served.
func TestMaxMemoryBoundsReplies(t *testing.T) {
	const flooders, bound = 10, 1 << 20
	ts := startServer(t, server.Config{Handler: server.Echo{}, QueueBytes: 4 << 20, MaxMemory: bound})
	reader := ts.dialClient(t, newKey(t))
	frame := wire.AppendFrame(nil, wire.TypeData, wire.JSON, nil)
	burst := bytes.Repeat(frame, 4096)
	var floods []*wiretest.Conn // all connected first: past the bound, new sessions are refused
	for range flooders {
		floods = append(floods, wiretest.Connect(t, ts.addr, newKey(t)))
	}
	for _, c := range floods {
		go func() { // until its writes block, and the close at the end
			for {
				if _, err := c.TLS().Write(burst); err != nil {
					return
				}
			}
		}()
	}
	// Every flooder's reader ends up waiting: then nothing more is
	// queued, and the round trip of the session below the bound proves
	// it is served.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	echo := func() {
		t.Helper()
		if err := reader.Send(ctx, client.Data([]byte(`"ping"`))); err != nil {
			t.Fatal(err)
		}
		if p, err := reader.Recv(ctx); err != nil || string(p.Payload) != `"ping"` {
			t.Fatalf("echo below the bound: %q, %v", p.Payload, err)
		}
	}
	for ts.Stats().MemoryHighWater < bound {
		echo()
	}
	for range 100 { // the flooders go on meanwhile
		echo()
	}
	// Past the bound by at most a writer's batch of entries a session: the
	// writer takes without a check, and its array's room is charged.
	perSession := int64(server.MaxBatchEntries*server.EntryOverhead + server.EntryOverhead + 8)
	peak := ts.Stats().MemoryHighWater
	t.Logf("%d flooders held at most %d KiB of a %d KiB bound", flooders, peak>>10, bound>>10)
	if peak > bound+(flooders+1)*perSession {
		t.Fatalf("the sessions held up to %d bytes, over the bound %d plus a batch and a reply each", peak, bound)
	}
}

package server_test

// Bad input that tests a connection's bounds: floods, clients that never
// read, and clients that go silent.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestBadInputLimits: a flooding, non-reading or silent client is held to
// bounded memory and time: back-pressure, a byte-bounded queue and the
// slow-consumer timeout, the idle Ping and its timeout.
func TestBadInputLimits(t *testing.T) {
	runRows(t, []inputRow{
		{"flood", badInputFlood},
		{"slow reader", badInputSlowReader},
		{"idle client", badInputIdleClient},
	})
}

// badInputFlood: clients write Data frames as fast as they can while the
// handler of their sessions is blocked. The server stops reading them, so
// the back-pressure reaches the clients through TCP: their writes block (a
// write deadline expires). The server's memory stays bounded (it holds one
// frame per flooder, and its read buffer), the bystander keeps its round
// trips, and once the handler is released every frame the clients wrote
// is processed, in order.
func badInputFlood(t *testing.T) {
	const flooders = 4
	type flooder struct {
		rc      *wiretest.Conn
		sess    *server.Session
		written int
		err     error
		got     []int // guarded by mu
		blocked chan struct{}
		once    sync.Once
	}
	var (
		mu      sync.Mutex
		byID    = map[uint64]*flooder{}
		release = make(chan struct{})
	)
	handler := server.HandlerFunc(func(ctx context.Context, s *server.Session, p server.Packet) {
		mu.Lock()
		f := byID[s.ID()]
		mu.Unlock()
		if f == nil {
			_ = s.Reply(ctx, p.Type, p.Encoding, p.Payload)
			return
		}
		f.once.Do(func() { close(f.blocked) })
		select {
		case <-release:
		case <-ctx.Done():
			return
		}
		n, err := strconv.Atoi(string(p.Payload[:bytes.IndexByte(p.Payload, ':')]))
		if err != nil {
			n = -1
		}
		mu.Lock()
		f.got = append(f.got, n)
		mu.Unlock()
	})
	r := newRow(t, server.Config{Handler: handler})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	fs := make([]*flooder, flooders)
	for i := range fs {
		key := newKey(t)
		f := &flooder{blocked: make(chan struct{})}
		mu.Lock()
		byID[wire.SessionID(key.Public().(ed25519.PublicKey))] = f
		mu.Unlock()
		f.rc = wiretest.Connect(t, r.ts.addr, key)
		var ok bool
		if f.sess, ok = r.ts.Session(f.rc.ID()); !ok {
			t.Fatal("no flood session")
		}
		fs[i] = f
	}

	runtime.GC()
	var before, during runtime.MemStats
	runtime.ReadMemStats(&before)

	filler := bytes.Repeat([]byte("f"), 8000)
	frameLen := len(wire.AppendFrame(nil, wire.TypeData, wire.JSON, append([]byte("00000:"), filler...)))
	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Go(func() {
			for ; f.written < 100000; f.written++ {
				frame := wire.AppendFrame(nil, wire.TypeData, wire.JSON, fmt.Appendf(nil, "%05d:%s", f.written, filler))
				_ = f.rc.TLS().SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
				if _, f.err = f.rc.TLS().Write(frame); f.err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	flooded := 0
	for i, f := range fs {
		if !errors.Is(f.err, os.ErrDeadlineExceeded) {
			t.Fatalf("flooder %d: after %d frames its write returned %v, want its deadline exceeded: no back-pressure", i, f.written, f.err)
		}
		<-f.blocked
		flooded += f.written * frameLen
		// The server read one frame (the handler holds it) and stopped.
		if in := f.sess.Info().PacketsIn; in != 1 {
			t.Errorf("flooder %d: the server read %d frames while the handler was blocked, want 1", i, in)
		}
	}
	r.by.waitTrips(t, 20) // other sessions keep their round trips
	runtime.GC()
	runtime.ReadMemStats(&during)
	growth := int64(during.HeapInuse) - int64(before.HeapInuse)
	t.Logf("flood: %.1f MB written by %d clients before their writes blocked; heap in use grew %.1f MB",
		float64(flooded)/(1<<20), flooders, float64(growth)/(1<<20))
	if flooded < 2<<20 {
		t.Errorf("only %d bytes flooded before the writes blocked: want more than 2 MB (what the socket buffers hold)", flooded)
	}
	if growth > int64(flooded/4) {
		t.Errorf("heap in use grew %.1f MB while %.1f MB of flood was blocked, want less than a quarter of it",
			float64(growth)/(1<<20), float64(flooded)/(1<<20))
	}
	for i, f := range fs {
		if in := f.sess.Info().PacketsIn; in != 1 {
			t.Errorf("flooder %d: the server read %d frames while the handler was blocked, want 1", i, in)
		}
	}

	// Released, the server reads and processes everything the clients
	// wrote; the clients then go away (the last frame of each was cut
	// short by the write deadline and is lost with the socket).
	released = true
	close(release)
	for _, f := range fs {
		_ = f.rc.Abort()
	}
	closed := map[uint64]server.CloseInfo{}
	for len(closed) < flooders { // in any order: waitEvent drops the others
		ev := r.ts.nextEvent(t, server.EventClosed)
		closed[ev.SessionID] = ev.Close
	}
	for i, f := range fs {
		ev := closed[f.rc.ID()]
		mu.Lock()
		got := f.got
		mu.Unlock()
		if len(got) != f.written || ev.PacketsIn != uint64(f.written) {
			t.Errorf("flooder %d: the handler processed %d frames (%d read), want the %d the client wrote", i, len(got), ev.PacketsIn, f.written)
		}
		for j, n := range got {
			if n != j {
				t.Fatalf("flooder %d: frame %d processed as the %dth", i, n, j)
			}
		}
	}
	r.unaffected(t)
}

// badInputSlowReader: the server pushes to a client that never reads. The
// session's byte-bounded queue fills and SendAsync is refused with
// ErrQueueFull (ResourceExhausted in the API) while nothing queued is
// dropped; once the writer has made no progress for the slow-consumer
// timeout, the session closes with Goodbye slow_consumer. Every packet is
// accounted for: written, or counted unwritten; and what the client can
// still read is a gapless prefix.
func badInputSlowReader(t *testing.T) {
	const slowTimeout = 1500 * time.Millisecond
	r := newRow(t, server.Config{QueueBytes: 256 << 10, SlowConsumerTimeout: slowTimeout, LingerTimeout: 200 * time.Millisecond})
	slow := wiretest.Connect(t, r.ts.addr, newKey(t))
	sess, ok := r.ts.Session(slow.ID())
	if !ok {
		t.Fatal("no session")
	}
	filler := bytes.Repeat([]byte("s"), 16000)
	numbered := func(i int) []byte {
		return append(strconv.AppendInt(nil, int64(i), 10), append([]byte{':'}, filler...)...)
	}
	// Push until the queue is full and the writer makes no progress: the
	// socket buffers are full too. Then SendAsync is refused, time and
	// again, and the queue neither grows nor shrinks.
	accepted := 0
	var last uint64
	for attempt := 0; ; attempt++ {
		if attempt == 100 {
			t.Fatal("the writer kept making progress although the client never reads")
		}
		for {
			e, err := sess.SendAsync(wire.JSON, numbered(accepted))
			if errors.Is(err, server.ErrQueueFull) {
				break
			}
			if err != nil {
				t.Fatalf("SendAsync %d: %v", accepted, err)
			}
			accepted, last = accepted+1, e.Seq
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		written, _ := sess.WaitWritten(ctx, last)
		cancel()
		ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
		again, _ := sess.WaitWritten(ctx, written+1)
		cancel()
		if again != written {
			continue // progress: not stuck yet
		}
		depth := sess.Info().QueueLen
		refused := 0
		for ; refused < 5; refused++ {
			e, err := sess.SendAsync(wire.JSON, numbered(accepted))
			if err == nil { // the writer moved after all
				accepted, last = accepted+1, e.Seq
				break
			}
			if !errors.Is(err, server.ErrQueueFull) {
				t.Fatalf("SendAsync into the full queue: %v, want ErrQueueFull", err)
			}
		}
		if refused == 5 && sess.Info().QueueLen == depth {
			break
		}
	}
	r.by.waitTrips(t, 10) // nothing else stalls
	ev := r.ts.waitEvent(t, server.EventClosed, slow.ID())
	c := ev.Close
	if c.Code != wire.GoodbyeSlowConsumer || c.Outcome != server.OutcomeTimeout || c.GoodbyeSent {
		t.Fatalf("closed %+v, want slow_consumer, outcome timeout, Goodbye not written", c)
	}
	if c.PacketsOut+c.Unwritten != uint64(accepted)+1 { // +1: the Goodbye, queued, never written
		t.Errorf("%d packets written + %d unwritten, want the %d accepted and the Goodbye", c.PacketsOut, c.Unwritten, accepted)
	}
	if n := r.ts.Stats().SlowConsumers; n != 1 {
		t.Errorf("slow consumers counted %d, want 1", n)
	}
	r.logs.want(t, 1, `msg="slow consumer: the client has not read for the slow-consumer timeout; closing"`)
	// The client reads at last: packets 0, 1, 2, ... with no gap, at least
	// those the server counted written.
	_ = slow.TLS().SetReadDeadline(time.Now().Add(10 * time.Second))
	n := 0
	for {
		f, err := slow.ReadFrame()
		if err != nil {
			break
		}
		if i, err := strconv.Atoi(string(f.Payload[:bytes.IndexByte(f.Payload, ':')])); err != nil || i != n {
			t.Fatalf("packet %d read as %.10q", n, f.Payload)
		}
		n++
	}
	if n < int(c.PacketsOut) || n > accepted {
		t.Errorf("the client read %d packets; the server wrote %d of %d", n, c.PacketsOut, accepted)
	}
	t.Logf("slow reader: %d accepted, %d written, %d read by the client afterwards", accepted, c.PacketsOut, n)
	r.unaffected(t)
}

// badInputIdleClient: a client that sends nothing gets a Ping after the
// idle interval; answering keeps it open; staying silent past the pong
// timeout closes it with Goodbye idle_timeout, counted. The bystander, busy,
// is never closed.
func badInputIdleClient(t *testing.T) {
	const idle, pong = 150 * time.Millisecond, 300 * time.Millisecond
	r := newRow(t, server.Config{IdleInterval: idle, PongTimeout: pong, LingerTimeout: 200 * time.Millisecond})
	start := time.Now()
	rc := wiretest.Connect(t, r.ts.addr, newKey(t))
	f := rc.Read(t)
	p, err := wire.DecodePing(f.Encoding, f.Payload)
	if f.Type != wire.TypePing || err != nil {
		t.Fatalf("got %s %q, want Ping", f.Type, f.Payload)
	}
	if e := time.Since(start); e < idle {
		t.Errorf("pinged after %s, before the idle interval of %s", e, idle)
	}
	rc.WriteControl(t, wire.TypePong, f.Encoding, wire.PingPayload{Nonce: p.Nonce})
	f = rc.Read(t)
	second := time.Now()
	if f.Type != wire.TypePing {
		t.Fatalf("got %s, want a second Ping after the Pong", f.Type)
	}
	r.by.waitTrips(t, 1)
	f = rc.Read(t) // stay silent
	gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
	if f.Type != wire.TypeGoodbye || err != nil || gb.Code != wire.GoodbyeIdleTimeout || !gb.Reconnect {
		t.Fatalf("got %s %+v, want Goodbye idle_timeout with reconnect", f.Type, gb)
	}
	if e := time.Since(second); e < pong {
		t.Errorf("closed %s after the Ping, before the pong timeout of %s", e, pong)
	}
	ev := r.ts.waitEvent(t, server.EventClosed, rc.ID())
	if ev.Close.Code != wire.GoodbyeIdleTimeout {
		t.Fatalf("closed %+v", ev.Close)
	}
	if n := r.ts.Stats().IdleTimeouts; n != 1 {
		t.Errorf("idle timeouts counted %d, want 1", n)
	}
	r.logs.want(t, 1, `msg="idle timeout: no packet and no Pong; closing"`)
	r.unaffected(t)
}

package server_test

import (
	"context"
	"errors"
	"io"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// The hot paths of the data plane, over real TLS on loopback. Run them
// with -benchmem (`make bench`): allocs/op is per packet. In steady state a
// packet should cost no allocation beyond its payload.

var benchPayloads = []struct {
	name string
	n    int
}{{"64B", 64}, {"1KiB", 1024}}

// benchWait bounds every wait of a benchmark.
const benchWait = time.Minute

// BenchmarkSessionSendAsync is session enqueue: Session.SendAsync of one
// Data packet to a live session whose client reads and discards. A full
// queue is waited out with Drain.
func BenchmarkSessionSendAsync(b *testing.B) {
	for _, sz := range benchPayloads {
		b.Run(sz.name, func(b *testing.B) {
			ts := startServer(b, server.Config{Handler: server.Discard{}})
			rc := wiretest.Connect(b, ts.addr, newKey(b))
			copied := make(chan struct{})
			go func() { // until the connection ends
				defer close(copied)
				_, _ = io.Copy(io.Discard, rc.Stream())
			}()
			b.Cleanup(func() { _ = rc.Close(); <-copied })
			sess, ok := ts.Session(rc.ID())
			if !ok {
				b.Fatal("no session")
			}
			ctx, cancel := context.WithTimeout(context.Background(), benchWait)
			defer cancel()
			payload := make([]byte, sz.n)
			b.SetBytes(int64(wire.HeaderLen + sz.n))
			b.ReportAllocs()
			for b.Loop() {
				for {
					_, err := sess.SendAsync(wire.JSON, payload)
					if err == nil {
						break
					}
					if !errors.Is(err, server.ErrQueueFull) {
						b.Fatal(err)
					}
					if _, err := sess.Drain(ctx, false); err != nil {
						b.Fatal(err)
					}
				}
			}
			if _, err := sess.Drain(ctx, false); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkWriterBatching is the writer alone: b.N packets are queued
// while the client does not read (the timer stopped), then the client
// reads and the time until Drain sees every packet written is measured.
// The writer pops up to 64 KiB of frames at a time into its buffer and
// flushes once per batch.
func BenchmarkWriterBatching(b *testing.B) {
	for _, sz := range benchPayloads {
		b.Run(sz.name, func(b *testing.B) {
			payload := make([]byte, sz.n)
			ts := startServer(b, server.Config{Handler: server.Discard{}, QueueBytes: math.MaxInt}) // b.N packets all fit
			rc := wiretest.Connect(b, ts.addr, newKey(b))
			start := make(chan struct{})
			copied := make(chan struct{})
			go func() {
				defer close(copied)
				select {
				case <-start:
				case <-b.Context().Done():
					return
				}
				_, _ = io.Copy(io.Discard, rc.Stream())
			}()
			b.Cleanup(func() { _ = rc.Close(); <-copied })
			sess, ok := ts.Session(rc.ID())
			if !ok {
				b.Fatal("no session")
			}
			ctx, cancel := context.WithTimeout(context.Background(), benchWait)
			defer cancel()
			b.StopTimer()
			for range b.N {
				if _, err := sess.SendAsync(wire.JSON, payload); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(wire.HeaderLen + sz.n))
			b.ReportAllocs()
			b.StartTimer()
			close(start)
			if _, err := sess.Drain(ctx, false); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// countHandler counts the packets it is handed and drops them.
type countHandler struct{ n atomic.Int64 }

func (h *countHandler) Handle(context.Context, *server.Session, server.Packet) { h.n.Add(1) }

// BenchmarkInboundDispatch is the reader: a client writes b.N Data frames
// (pre-encoded, 64 KiB per write), the server decodes each and hands it to
// a counting handler; a Flush barrier marks the end. allocs/op is the
// server's per-packet cost (the client allocates nothing per frame).
func BenchmarkInboundDispatch(b *testing.B) {
	for _, sz := range benchPayloads {
		b.Run(sz.name, func(b *testing.B) {
			h := &countHandler{}
			ts := startServer(b, server.Config{Handler: h})
			rc := wiretest.Connect(b, ts.addr, newKey(b))
			frame := wire.AppendFrame(nil, wire.TypeData, wire.JSON, make([]byte, sz.n))
			perChunk := max(1, (64<<10)/len(frame))
			var chunk []byte
			for range perChunk {
				chunk = append(chunk, frame...)
			}
			b.SetBytes(int64(len(frame)))
			b.ReportAllocs()
			b.ResetTimer()
			for left := b.N; left > 0; {
				n := min(left, perChunk)
				if _, err := rc.TLS().Write(chunk[:n*len(frame)]); err != nil {
					b.Fatal(err)
				}
				left -= n
			}
			rc.WriteControl(b, wire.TypeFlush, wire.JSON, wire.FlushPayload{Seq: 1})
			if f := rc.Read(b); f.Type != wire.TypeFlushAck {
				b.Fatalf("got %s, want flush_ack", f.Type)
			}
			b.StopTimer()
			if got := h.n.Load(); got != int64(b.N) {
				b.Fatalf("handler processed %d of %d", got, b.N)
			}
		})
	}
}

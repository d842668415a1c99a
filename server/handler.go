package server

import (
	"context"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// Packet is one inbound Data or Error packet, delivered to the Handler as
// opaque bytes with its encoding bits.
type Packet struct {
	// Seq is the packet's per-session inbound sequence number, from 1,
	// continuous across takeovers.
	Seq uint64
	// ConnID is the connection the packet arrived on.
	ConnID uint64
	// Type is wire.TypeData or wire.TypeError.
	Type     wire.Type
	Encoding wire.Encoding
	// Payload is read in place from the connection's buffer: it is valid
	// only until Handle returns, and is then overwritten by the packets
	// that follow. A handler that keeps it, hands it to another goroutine
	// or forwards it with Session.SendAsync (which queues the slice
	// itself) copies it first (bytes.Clone); Session.Reply copies it
	// itself. This is what makes the inbound path allocation-free.
	Payload    []byte
	ReceivedAt time.Time
	// Closing is closed when a close of the connection the packet arrived
	// on starts. A Handler that holds the reader back on purpose (waiting
	// for room downstream, say) stops waiting then, so that the close can
	// read the rest of what the client sent, and its Goodbye.
	Closing <-chan struct{}
}

// Handler processes inbound Data and Error packets. Calls for one session
// are sequential and in the order the client sent the packets; a packet is
// "processed" when Handle returns. ctx ends when the connection does. The
// packet's Payload is borrowed for the call only: see Packet.
//
// Replies queued with Session.Reply during Handle are written ahead of the
// FlushAck that answers any later Flush.
//
// A Handler must not call Session.Close on its own session (the connection
// cannot end while its handler runs); it calls Session.StartClose.
type Handler interface {
	Handle(ctx context.Context, s *Session, p Packet)
}

// A FlushWaiter is a Handler whose packets are processed after Handle
// returns, by another process, say. Before the server answers a client's
// Flush, it calls WaitProcessed with the seq of the last packet before the
// Flush, and answers once it returns: the FlushAck then means that every
// packet before it was processed there. ctx ends when the connection
// starts to close.
type FlushWaiter interface {
	WaitProcessed(ctx context.Context, s *Session, seq uint64)
}

// A ProcessedReporter is a FlushWaiter that can say, without waiting,
// whether a session's packets through seq are processed. The server asks
// it before it acks a resumable client's Data (docs/protocol.md §15);
// with a FlushWaiter that is not one, it acks only in answer to a Flush.
type ProcessedReporter interface {
	ProcessedThrough(s *Session, seq uint64) bool
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, s *Session, p Packet)

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, s *Session, p Packet) { f(ctx, s, p) }

// Echo answers every packet with an identical one: same type, encoding and
// bytes. It is the dev-mode default.
type Echo struct{}

// Handle queues the echo, waiting for queue space while ctx allows.
func (Echo) Handle(ctx context.Context, s *Session, p Packet) {
	_ = s.Reply(ctx, p.Type, p.Encoding, p.Payload)
}

// Discard drops every packet after it is counted.
type Discard struct{}

// Handle does nothing.
func (Discard) Handle(context.Context, *Session, Packet) {}

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
}

// Handler processes inbound Data and Error packets. Calls for one session
// are sequential and in the order the client sent the packets; a packet is
// "processed" when Handle returns. ctx ends when the connection does. The
// packet's Payload is borrowed for the call only: see Packet.
//
// Replies queued with Session.Reply during Handle are written ahead of the
// FlushAck that answers any later Flush.
type Handler interface {
	Handle(ctx context.Context, s *Session, p Packet)
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

package client

import (
	"context"
	"fmt"

	"github.com/tlsgate/tlsgate/wire"
)

// Recv returns the next received Data or Error packet, in order. Once the
// connection has ended and every buffered packet is consumed, it returns an
// error wrapping ErrClosed and the *CloseError.
func (c *Conn) Recv(ctx context.Context) (Packet, error) {
	if c.cfg.handler != nil {
		return Packet{}, ErrHandlerSet
	}
	for {
		c.mu.Lock()
		p, got, popped := c.popLocked()
		more := len(c.recvQ) > 0
		ended := c.readerEnded
		c.mu.Unlock()
		if popped {
			signal(c.recvSpace)
		}
		if got {
			if more {
				signal(c.recvReady) // for another concurrent Recv
			}
			return p, nil
		}
		if ended && !more {
			select {
			case <-c.done:
				return Packet{}, fmt.Errorf("%w: %w", ErrClosed, c.err)
			case <-ctx.Done():
				return Packet{}, ctx.Err()
			}
		}
		select {
		case <-c.recvReady:
		case <-c.readerDone:
		case <-ctx.Done():
			return Packet{}, ctx.Err()
		}
	}
}

// popLocked pops the next packet and then the flush markers that follow it,
// acknowledging them: once the packet is handed over, the application has
// consumed everything before them.
func (c *Conn) popLocked() (p Packet, got, popped bool) {
	for len(c.recvQ) > 0 {
		it := c.recvQ[0]
		if !it.marker && got {
			break
		}
		c.recvQ[0] = recvItem{}
		c.recvQ = c.recvQ[1:]
		popped = true
		if it.marker {
			c.replyLocked(wire.TypeFlushAck, it.enc, wire.FlushPayload{Seq: it.seq})
			continue
		}
		p, got = it.pkt, true
	}
	return p, got, popped
}

// deliver hands a received packet to the handler or the receive queue,
// waiting for room. It returns false if the connection was forced closed.
func (c *Conn) deliver(p Packet) bool {
	if c.cfg.handler != nil {
		c.cfg.handler(p)
		return true
	}
	c.mu.Lock()
	for len(c.recvQ) >= c.cfg.recvBuffer {
		c.mu.Unlock()
		select {
		case <-c.recvSpace:
		case <-c.forceCh:
			return false
		}
		c.mu.Lock()
	}
	c.recvQ = append(c.recvQ, recvItem{pkt: p})
	c.mu.Unlock()
	signal(c.recvReady)
	return true
}

// deliverFlush handles the server's Flush: it is acknowledged at once if
// every earlier packet is consumed, else when Recv reaches it.
func (c *Conn) deliverFlush(seq uint64, enc wire.Encoding) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.handler != nil || len(c.recvQ) == 0 {
		c.replyLocked(wire.TypeFlushAck, enc, wire.FlushPayload{Seq: seq})
		return
	}
	c.recvQ = append(c.recvQ, recvItem{marker: true, seq: seq, enc: enc})
}

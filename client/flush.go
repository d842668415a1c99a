package client

import (
	"context"

	"github.com/tlsgate/tlsgate/wire"
)

// Flush is a barrier round trip: it sends Flush and waits for the server's
// FlushAck. When it returns nil, the server has processed every packet
// sent before it. It fails once the server's Goodbye arrives or the
// connection ends.
func (c *Conn) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch := make(chan error, 1)
	c.mu.Lock()
	if c.goodbyeRecv && !c.finished {
		c.mu.Unlock()
		return ErrGoodbyeReceived
	}
	if err := c.refusedLocked(); err != nil {
		c.mu.Unlock()
		return err
	}
	c.flushSeq++
	seq := c.flushSeq
	c.flushWaiters[seq] = ch
	c.replyLocked(wire.TypeFlush, c.startEncoding(), wire.FlushPayload{Seq: seq})
	c.mu.Unlock()

	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.flushWaiters, seq)
		c.mu.Unlock()
		return ctx.Err()
	}
}

// completeFlush resolves the Flush answered by a FlushAck.
func (c *Conn) completeFlush(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.flushWaiters[seq]
	if !ok {
		c.log.Debug("flush ack for no pending flush", "seq", seq)
		return
	}
	delete(c.flushWaiters, seq)
	ch <- nil
}

package server

import (
	"context"

	"github.com/tlsgate/tlsgate/wire"
)

// barrier sends a Flush and waits for the client's FlushAck: when it
// returns nil, the client has processed everything written before it.
func (c *conn) barrier(ctx context.Context) error {
	c.mu.Lock()
	if c.goodbyeRecv || c.state != StateActive { // the close has started
		c.mu.Unlock()
		return ErrClosing
	}
	c.flushSeq++
	seq := c.flushSeq
	ch := make(chan error, 1)
	if c.flushWaiters == nil {
		c.flushWaiters = make(map[uint64]chan error)
	}
	c.flushWaiters[seq] = ch
	c.mu.Unlock()

	enc := c.encoding()
	payload, err := wire.Marshal(enc, wire.FlushPayload{Seq: seq})
	if err == nil {
		_, _, err = c.sess.q.enqueueWait(ctx, entry{typ: wire.TypeFlush, enc: enc, payload: payload, only: c})
	}
	if err == nil {
		select {
		case err = <-ch:
			return err
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	c.mu.Lock()
	delete(c.flushWaiters, seq)
	c.mu.Unlock()
	return err
}

// askAck sends a resumable client a Flush, which it answers with its Ack
// of everything it processed, then a FlushAck that nobody waits for. It
// gives up quietly if the connection is closing.
func (c *conn) askAck(ctx context.Context) {
	c.mu.Lock()
	if !c.resumedOK.Load() || c.goodbyeRecv || c.state != StateActive {
		c.mu.Unlock()
		return
	}
	c.flushSeq++
	seq := c.flushSeq
	if c.flushWaiters == nil {
		c.flushWaiters = make(map[uint64]chan error)
	}
	c.flushWaiters[seq] = make(chan error, 1) // answered into its buffer
	c.mu.Unlock()
	enc := c.encoding()
	payload, _ := wire.Marshal(enc, wire.FlushPayload{Seq: seq})
	if _, _, err := c.sess.q.enqueueWait(ctx, entry{typ: wire.TypeFlush, enc: enc, payload: payload, only: c}); err != nil {
		c.mu.Lock()
		delete(c.flushWaiters, seq)
		c.mu.Unlock()
	}
}

// flushAcked resolves the barrier the client acknowledged. The reader
// calls it.
func (c *conn) flushAcked(seq uint64) {
	c.mu.Lock()
	ch, ok := c.flushWaiters[seq]
	delete(c.flushWaiters, seq)
	if ok && seq > c.lastFlushAck {
		c.lastFlushAck = seq
	}
	c.mu.Unlock()
	if !ok {
		c.peerSlip("FlushAck for no pending Flush", "seq", seq)
		return
	}
	ch <- nil
}

// failFlushes fails every pending barrier.
func (c *conn) failFlushes(err error) {
	c.mu.Lock()
	waiters := c.flushWaiters
	c.flushWaiters = nil
	c.mu.Unlock()
	for _, ch := range waiters {
		ch <- err
	}
}

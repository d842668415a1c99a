package client

import (
	"context"
	"fmt"
)

// SendAsync queues p and returns a channel that receives nil once p is
// written (flushed to the TLS connection), or the error that prevented it.
// Packets go out in call order. The payload is copied.
func (c *Conn) SendAsync(p Packet) <-chan error {
	ch := make(chan error, 1)
	if err := c.enqueue(p, ch); err != nil {
		ch <- err
	}
	return ch
}

// Send queues p and returns once it is written. If ctx ends first, Send
// returns ctx's error and the packet may still be written.
func (c *Conn) Send(ctx context.Context, p Packet) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ch := c.SendAsync(p)
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Conn) enqueue(p Packet, done chan<- error) error {
	if err := p.validate(); err != nil {
		return err
	}
	frame := p.frame()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.refusedLocked(); err != nil {
		return err
	}
	c.queueLocked(outItem{frame: frame, done: done})
	return nil
}

// refusedLocked returns why new application packets are refused, or nil.
func (c *Conn) refusedLocked() error {
	if c.finished {
		return fmt.Errorf("%w: %w", ErrClosed, c.err)
	}
	return c.sendErr
}

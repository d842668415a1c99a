package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// Close closes the connection gracefully: it refuses new sends, writes
// everything already queued, sends Goodbye, keeps delivering received
// packets until the server's Goodbye, then sends close_notify and reads
// until EOF or the linger timeout.
//
// It returns nil only if both Goodbyes were exchanged, else the *CloseError
// saying what happened. If ctx ends first, the socket is closed at once and
// the error wraps ctx's error. A later call returns the same result.
func (c *Conn) Close(ctx context.Context) error {
	c.mu.Lock()
	if !c.closeCalled {
		c.closeCalled = true
		if c.initiator == "" {
			c.initiator = InitiatorLocal
		}
		if c.sendErr == nil {
			c.sendErr = ErrClosing
		}
		c.queueGoodbyeLocked(c.startEncoding())
	}
	c.mu.Unlock()

	select {
	case <-c.done:
	case <-ctx.Done():
		c.force(ctx.Err())
		<-c.done
	}
	if c.err.Outcome == OutcomeClean {
		return nil
	}
	return c.err
}

// finish records why the connection ended, fails what is left and closes
// Done. It runs once, on the reader goroutine, after the writer exited.
func (c *Conn) finish() {
	c.mu.Lock()
	ce := &CloseError{Initiator: c.initiator}
	if c.goodbyeRecv {
		ce.Code, ce.Reason, ce.Reconnect = c.peerGoodbye.Code, c.peerGoodbye.Reason, c.peerGoodbye.Reconnect
	}
	switch {
	case c.goodbyeSent && c.goodbyeRecv:
		ce.Outcome = OutcomeClean
	case c.forced:
		ce.Outcome, ce.Cause = OutcomeForced, c.forceErr
	case c.brokenErr != nil:
		ce.Outcome, ce.Cause = OutcomeLost, c.brokenErr
	case c.writeErr != nil:
		ce.Outcome, ce.Cause = OutcomeLost, c.writeErr
	case errors.Is(c.readErr, io.EOF):
		ce.Outcome, ce.Cause = OutcomePeerClosed, c.readErr
	case errors.Is(c.readErr, os.ErrDeadlineExceeded) && c.goodbyeSent:
		ce.Outcome, ce.Cause = OutcomeTimeout, c.readErr
	default:
		ce.Outcome, ce.Cause = OutcomeLost, c.readErr
	}
	c.err = ce
	c.finished = true
	rest := c.out
	c.out = nil
	c.mu.Unlock()

	sendErr := fmt.Errorf("%w: %w", ErrClosed, ce)
	for _, it := range rest {
		if it.done != nil {
			it.done <- sendErr
		}
	}
	c.log.Debug("connection ended", "outcome", ce.Outcome, "initiator", ce.Initiator, "code", ce.Code, "cause", ce.Cause)
	close(c.done)
}

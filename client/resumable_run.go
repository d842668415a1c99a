package client

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// run is the Resumable's supervising goroutine: it runs each connection
// until it ends, then reconnects after a loss, and finishes the session.
func (s *Resumable) run(c *rconn, evs []ResumeEvent) {
	defer s.cancel()
	for _, ev := range evs {
		s.emit(ev)
	}
	for c != nil {
		go c.readLoop()
		go c.writeLoop()
		<-c.done
		over, cause := s.connEnded(c)
		if over {
			break
		}
		s.log.Info("connection lost, reconnecting", "cause", cause)
		s.emit(ResumeEvent{Kind: EventLost, Cause: cause})
		c = s.reconnect()
	}
	s.finish()
}

// connEnded retires c and tells whether the session is over.
func (s *Resumable) connEnded(c *rconn) (over bool, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == c {
		s.cur = nil
	}
	cause = c.writeErr
	if cause == nil {
		cause = c.readErr
	}
	return c.goodbyeRecv || s.forced || s.fatal != nil, cause
}

// reconnect dials until a connection resumes (returned) or the session
// ends (nil): forced, or a permanent failure.
func (s *Resumable) reconnect() *rconn {
	for attempt := 1; ; attempt++ {
		t := time.NewTimer(backoff(attempt-1, s.rc.backoffMin, s.rc.backoffMax, randInt64N))
		select {
		case <-t.C:
		case <-s.forceCh:
			t.Stop()
			return nil
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.rc.dialTimeout)
		c, evs, err := s.connect(ctx)
		cancel()
		if err == nil {
			for _, ev := range evs {
				ev.Attempt = attempt
				s.emit(ev)
			}
			return c
		}
		s.mu.Lock()
		forced := s.forced
		var pe *permanentError
		permanent := errors.As(err, &pe)
		if permanent && s.fatal == nil {
			s.fatal = err
		}
		s.mu.Unlock()
		if forced || permanent {
			s.log.Warn("reconnect failed for good", "attempt", attempt, "err", err)
			return nil
		}
		s.log.Info("reconnect failed", "attempt", attempt, "err", err)
		s.emit(ResumeEvent{Kind: EventReconnectFailed, Attempt: attempt, Cause: err})
	}
}

func (s *Resumable) emit(ev ResumeEvent) {
	if ev.Kind == EventResumed || ev.Kind == EventGap {
		s.log.Info("session "+ev.Kind.String(), "attempt", ev.Attempt, "resumed", ev.Resumed, "epoch", ev.Epoch,
			"prev_epoch", ev.PrevEpoch, "peer_seq", ev.PeerSeq, "resent", ev.Resent, "duplicates", ev.Duplicates)
	}
	if f := s.rc.events; f != nil {
		f(ev)
	}
}

// finish records why the session ended, fails what is left and closes
// Done. It runs once, on the supervising goroutine, after the last
// connection's goroutines exited.
func (s *Resumable) finish() {
	s.mu.Lock()
	c := s.last
	ce := &CloseError{Initiator: InitiatorRemote}
	if s.closeCalled && (c == nil || !c.goodbyeRecv || c.peerGoodbye.Code == "" || c.peerGoodbye.Code == "normal") {
		ce.Initiator = InitiatorLocal
	}
	if c != nil && c.goodbyeRecv {
		ce.Code, ce.Reason, ce.Reconnect = c.peerGoodbye.Code, c.peerGoodbye.Reason, c.peerGoodbye.Reconnect
	}
	var ge *goodbyeError
	switch {
	case c != nil && c.goodbyeSent && c.goodbyeRecv:
		ce.Outcome = OutcomeClean
	case s.forced:
		ce.Outcome, ce.Cause = OutcomeForced, s.forceErr
	case errors.As(s.fatal, &ge):
		ce.Code, ce.Reason, ce.Reconnect = ge.gb.Code, ge.gb.Reason, ge.gb.Reconnect
		ce.Outcome, ce.Cause = OutcomePeerClosed, s.fatal
	case s.fatal != nil:
		ce.Outcome, ce.Cause = OutcomeLost, s.fatal
	case c != nil && c.writeErr != nil:
		ce.Outcome, ce.Cause = OutcomeLost, c.writeErr
	case c != nil:
		ce.Outcome, ce.Cause = OutcomePeerClosed, c.readErr
	default:
		ce.Outcome = OutcomeLost
	}
	s.err, s.ended, s.cur = ce, true, nil
	s.unackedEnd = len(s.out.pkts)
	pkts, syncs := s.out.pkts, s.syncs
	s.syncs = nil
	s.mu.Unlock()

	err := fmt.Errorf("%w before the packet was acknowledged: %w", ErrClosed, ce)
	for _, p := range pkts {
		if p.done != nil {
			p.done <- err
		}
	}
	for _, w := range syncs {
		w.ch <- err
	}
	s.log.Debug("session ended", "outcome", ce.Outcome, "initiator", ce.Initiator, "code", ce.Code, "cause", ce.Cause, "unacked", len(pkts))
	close(s.done)
}

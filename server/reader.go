package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// readLoop reads and processes inbound packets, in order, until EOF, an
// error, or the linger deadline. A packet is processed in this goroutine
// before the next is read, so nothing fully received is ever left
// unprocessed when the connection ends, and a slow handler pushes back on
// the client through TCP.
func (c *conn) readLoop() {
	fr := wire.NewReader(c.br, c.srv.cfg.MaxPayload)
	discarding := false      // after a takeover: read, count and drop
	first := c.resumable     // the next frame must be Resume
	var now time.Time        // when the frame's bytes arrived
	defer c.openGateIfShut() // a connection lost before its Resume
	for {
		buffered := c.br.Buffered()
		// Borrowed: the payload is read in place, valid until the next
		// frame, which is all a Handler is promised (see Packet).
		f, err := fr.ReadFrameBorrowed()
		if err != nil {
			var fe *wire.FramingError
			var tl *wire.TooLargeError
			switch {
			case discarding:
			case errors.As(err, &fe):
				c.protocolError(wire.CodeProtocolError, err.Error(), 0, wire.JSON)
				c.discardRest()
				return
			case errors.As(err, &tl):
				c.protocolError(wire.CodeFrameTooLarge, err.Error(), tl.Type, tl.Encoding)
				c.discardRest()
				return
			}
			c.readEnded(err)
			return
		}
		// Frames decoded from one buffer refill arrived together: read the
		// clock once per refill, not per frame.
		if buffered < f.Len() || now.IsZero() {
			now = time.Now()
			if limit := c.lingerCap.Load(); limit != 0 {
				// Lingering: the peer is still sending, so keep reading
				// for another linger timeout, up to the cap.
				_ = c.nc.SetReadDeadline(time.Unix(0, min(now.Add(c.srv.cfg.LingerTimeout).UnixNano(), limit)))
			}
		}
		c.lastEnc.Store(uint32(f.Encoding))
		c.lastActivity.Store(now.UnixNano())
		c.in.add(f.Type, 1, uint64(f.Len()))
		if !discarding {
			c.sess.inbound.Lock()
			if c.sess.cur.Load() == c {
				c.processing.Store(true)
				if first {
					first = false
					c.resumeFirst(f)
				} else {
					c.process(f, now)
				}
				c.processing.Store(false)
				c.sess.inbound.Unlock()
				continue
			}
			c.sess.inbound.Unlock()
			discarding = true
		}
		if f.Type == wire.TypeGoodbye {
			c.peerGoodbye(f)
		} else {
			c.stats.discarded.Add(1)
		}
	}
}

// process handles one packet. The caller holds the session's inbound lock.
func (c *conn) process(f wire.Frame, receivedAt time.Time) {
	switch {
	case f.Type == wire.TypeData, f.Type == wire.TypeError:
		s := c.sess
		s.inSeq++
		s.srv.cfg.Handler.Handle(c.ctx, s, Packet{
			Seq: s.inSeq, ConnID: c.id, Type: f.Type, Encoding: f.Encoding, Payload: f.Payload, ReceivedAt: receivedAt, Closing: c.closing,
		})
		if c.resumedOK.Load() {
			s.inEpoch.Add(1)
			c.maybeAck(f.Encoding, false)
		}
	case f.Type == wire.TypeFlush:
		p, err := wire.DecodeFlush(f.Encoding, f.Payload)
		if err != nil {
			c.replyError(wire.CodeBadPayload, err.Error(), f.Type, f.Encoding)
			return
		}
		// Everything before the Flush is processed, and its replies are
		// queued: the FlushAck goes behind them.
		processed := true
		if fw, ok := c.srv.cfg.Handler.(FlushWaiter); ok {
			processed = c.waitProcessed(fw)
		}
		if processed { // an Ack means processed, end to end
			c.maybeAck(f.Encoding, true)
		}
		c.replyControl(wire.TypeFlushAck, f.Encoding, wire.FlushPayload{Seq: p.Seq})
	case f.Type == wire.TypePing:
		p, err := wire.DecodePing(f.Encoding, f.Payload)
		if err != nil {
			c.replyError(wire.CodeBadPayload, err.Error(), f.Type, f.Encoding)
			return
		}
		c.replyControl(wire.TypePong, f.Encoding, wire.PingPayload{Nonce: p.Nonce})
	case f.Type == wire.TypePong:
		if _, err := wire.DecodePing(f.Encoding, f.Payload); err != nil {
			c.badControl(f, err)
		}
	case f.Type == wire.TypeFlushAck:
		p, err := wire.DecodeFlush(f.Encoding, f.Payload)
		if err != nil {
			c.badControl(f, err)
			return
		}
		c.flushAcked(p.Seq)
	case f.Type == wire.TypeGoodbye:
		c.peerGoodbye(f)
	case c.resumable && f.Type == wire.TypeResume:
		c.protocolError(wire.CodeProtocolError, errResumeAgain.Error(), f.Type, f.Encoding)
	case c.resumedOK.Load() && f.Type == wire.TypeAck:
		p, err := wire.DecodeAck(f.Encoding, f.Payload)
		if err == nil {
			err = c.sess.q.ack(p.Seq)
		}
		if err != nil {
			c.badControl(f, err)
		}
	default:
		// On a v1 connection the resume extension's types are unknown,
		// exactly as before it existed.
		c.replyError(wire.CodeUnknownType, "unknown packet type "+f.Type.String(), f.Type, f.Encoding)
	}
}

// waitProcessed waits until fw has processed everything before a Flush,
// or the connection starts to close: then the FlushAck would come after
// this side's Goodbye (and be dropped), and the close must read on.
//
// It reports whether the wait ended because the packets were processed,
// not because the connection started to close first.
func (c *conn) waitProcessed(fw FlushWaiter) bool {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	go func() {
		select {
		case <-c.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	fw.WaitProcessed(ctx, c.sess, c.sess.inSeq)
	if ctx.Err() != nil {
		return false
	}
	if pr, ok := fw.(ProcessedReporter); ok { // it may have given up (a stall)
		return pr.ProcessedThrough(c.sess, c.sess.inSeq)
	}
	return true
}

// badControl records an undecodable FlushAck or Pong. These are never
// answered with an Error, so that two peers cannot loop.
func (c *conn) badControl(f wire.Frame, err error) {
	c.stats.badControl.Add(1)
	c.peerSlip("undecodable control packet", "type", f.Type, "err", err)
}

// peerSlip logs a peer's protocol slip that the connection survives: at
// warn the first time on the connection, then at debug, so that a client
// repeating it cannot flood the log. Call from the reader only.
func (c *conn) peerSlip(msg string, args ...any) {
	level := slog.LevelDebug
	if !c.slipLogged {
		c.slipLogged = true
		level = slog.LevelWarn
		args = append(args, "note", "further slips of this connection are logged at debug")
	}
	c.log.Log(c.ctx, level, msg, args...)
}

// replyControl queues a control reply for this connection only.
func (c *conn) replyControl(typ wire.Type, enc wire.Encoding, v any) {
	payload, err := wire.Marshal(enc, v)
	if err != nil {
		c.log.Error("encoding control reply", "type", typ, "err", err)
		return
	}
	err = c.sess.q.enqueueReply(c.ctx, entry{typ: typ, enc: enc, payload: payload, only: c})
	if errors.Is(err, errReplyAfterGoodbye) {
		c.stats.repliesDropped.Add(1)
	}
}

func (c *conn) replyError(code, msg string, pktType wire.Type, enc wire.Encoding) {
	c.log.Debug("protocol error reply", "code", code, "pkt_type", pktType, "err", msg)
	c.replyControl(wire.TypeError, enc, wire.ErrorPayload{Error: msg, PktType: int(pktType), Code: code})
}

// protocolError answers a frame the connection cannot recover from: an
// Error, then the graceful close with Goodbye protocol_error.
func (c *conn) protocolError(code, msg string, pktType wire.Type, enc wire.Encoding) {
	c.log.Info("protocol error, closing", "code", code, "err", msg)
	c.replyError(code, msg, pktType, enc)
	c.startCloseIn(wire.GoodbyePayload{Code: wire.GoodbyeProtocolError, Reason: msg}, enc, 0)
}

// discardRest reads and drops the rest of a stream whose framing is lost,
// until EOF or the linger deadline the writer sets after its Goodbye.
func (c *conn) discardRest() {
	n, err := io.Copy(io.Discard, c.br)
	if n > 0 {
		c.stats.discarded.Add(1)
	}
	c.readEnded(err)
}

// peerGoodbye handles the peer's Goodbye: it stops new sends and answers
// with this side's Goodbye, behind everything already owed. A Goodbye that
// does not decode still counts as one.
func (c *conn) peerGoodbye(f wire.Frame) {
	p, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
	if err != nil {
		c.badControl(f, err)
	}
	c.mu.Lock()
	first := !c.goodbyeRecv
	c.goodbyeRecv = true
	c.peerCode = p.Code
	c.mu.Unlock()
	if !first {
		return
	}
	close(c.gotGoodbye)
	c.failFlushes(ErrClosing)
	c.log.Debug("peer goodbye", "code", p.Code, "reason", p.Reason)
	c.startCloseIn(wire.GoodbyePayload{Code: wire.GoodbyeNormal, Reason: "reply to goodbye"}, f.Encoding, 0)
}

// readEnded records why reading stopped and makes sure the close runs.
func (c *conn) readEnded(err error) {
	switch {
	case err == nil, errors.Is(err, io.EOF):
	case errors.Is(err, wire.ErrTruncated):
		c.mu.Lock()
		c.truncated = true
		c.mu.Unlock()
		c.log.Info("stream ended inside a frame")
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.mu.Lock()
		if c.outcome == "" && !(c.goodbyeSent && c.goodbyeRecv) {
			c.outcome = OutcomeTimeout
		}
		c.mu.Unlock()
	default:
		c.log.Debug("read ended", "err", err)
	}
	if c.resumable && !c.closeStarted() {
		// A resumable connection that ends without a Goodbye is lost,
		// not closed: its session is kept for a Resume, and what is
		// queued waits for the next connection rather than this socket.
		c.abort(OutcomePeerClosed)
		return
	}
	// The peer is done sending; write what is owed and say goodbye.
	c.startClose(CloseOptions{Code: wire.GoodbyeNormal, Reason: "peer closed"})
}

// resumeFirst handles the first frame of a resumable connection, which
// must be Resume. The caller holds the session's inbound lock.
func (c *conn) resumeFirst(f wire.Frame) {
	if f.Type != wire.TypeResume {
		c.openGate(nil, 0)
		c.protocolError(wire.CodeProtocolError, errResumeNotFirst.Error()+", not "+f.Type.String(), f.Type, f.Encoding)
		return
	}
	c.liftHandshakeDeadline()
	c.handleResume(f)
}

// openGateIfShut opens the writer's gate of a resumable connection whose
// reader stopped before its first frame, so that the writer can end.
func (c *conn) openGateIfShut() {
	select {
	case <-c.gate:
	default:
		if c.resumable {
			c.openGate(nil, 0)
		}
	}
}

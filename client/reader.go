package client

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// readLoop is the reader goroutine. When reading ends it finishes the
// connection.
func (c *Conn) readLoop() {
	for {
		if c.awaitGoodbye.Load() {
			c.setReadLinger()
		}
		f, err := c.fr.ReadFrame()
		if err != nil {
			var fe *wire.FramingError
			var tl *wire.TooLargeError
			if errors.As(err, &fe) || errors.As(err, &tl) {
				c.inputBroken(err)
				_, _ = io.Copy(io.Discard, c.br) // until EOF or the linger timeout
			}
			c.endRead(err)
			return
		}
		c.lastEnc.Store(int32(f.Encoding))
		if !c.dispatch(f) {
			c.endRead(errors.New("forced close"))
			return
		}
	}
}

// dispatch handles one frame. It returns false if the connection was
// forced closed while delivering.
func (c *Conn) dispatch(f wire.Frame) bool {
	switch f.Type {
	case wire.TypeData, wire.TypeError:
		return c.deliver(Packet{Type: f.Type, Encoding: f.Encoding, Payload: f.Payload})
	case wire.TypeFlush:
		fp, err := wire.DecodeFlush(f.Encoding, f.Payload)
		if err != nil {
			c.replyError(f, wire.CodeBadPayload, err)
			return true
		}
		c.deliverFlush(fp.Seq, f.Encoding)
	case wire.TypeFlushAck:
		fp, err := wire.DecodeFlush(f.Encoding, f.Payload)
		if err != nil {
			c.log.Warn("undecodable flush ack", "err", err)
			return true
		}
		c.completeFlush(fp.Seq)
	case wire.TypePing:
		pp, err := wire.DecodePing(f.Encoding, f.Payload)
		if err != nil {
			c.replyError(f, wire.CodeBadPayload, err)
			return true
		}
		c.mu.Lock()
		c.replyLocked(wire.TypePong, f.Encoding, pp)
		c.mu.Unlock()
	case wire.TypePong:
		c.log.Debug("unsolicited pong")
	case wire.TypeGoodbye:
		c.onGoodbye(f)
	default:
		c.replyError(f, wire.CodeUnknownType, errors.New("unknown packet type "+f.Type.String()))
	}
	return true
}

func (c *Conn) replyError(f wire.Frame, code string, err error) {
	c.log.Warn("bad packet from server", "type", f.Type, "code", code, "err", err)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.replyLocked(wire.TypeError, f.Encoding, wire.ErrorPayload{Error: err.Error(), PktType: int(f.Type), Code: code})
}

// onGoodbye handles the server's Goodbye: sends are refused, pending
// flushes fail, and our Goodbye follows what is already queued.
func (c *Conn) onGoodbye(f wire.Frame) {
	gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
	if err != nil {
		c.log.Warn("undecodable goodbye, counted as a goodbye", "err", err)
	}
	c.awaitGoodbye.Store(false)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.goodbyeRecv {
		c.log.Warn("duplicate goodbye from server")
		return
	}
	c.log.Debug("server goodbye", "code", gb.Code, "reason", gb.Reason, "reconnect", gb.Reconnect)
	c.goodbyeRecv, c.peerGoodbye = true, gb
	if c.initiator == "" {
		c.initiator = InitiatorRemote
	}
	if c.sendErr == nil {
		c.sendErr = ErrGoodbyeReceived
	}
	c.failFlushesLocked(ErrGoodbyeReceived)
	c.queueGoodbyeLocked(f.Encoding)
	signal(c.wake)
}

// inputBroken handles a framing error: the stream can no longer be parsed,
// so the client reports it, says Goodbye and discards the rest.
func (c *Conn) inputBroken(err error) {
	c.log.Warn("framing error from server", "err", err)
	pktType := 0
	var tl *wire.TooLargeError
	code := wire.CodeProtocolError
	if errors.As(err, &tl) {
		pktType, code = int(tl.Type), wire.CodeFrameTooLarge
	}
	c.awaitGoodbye.Store(false)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.brokenErr = err
	if c.sendErr == nil {
		c.sendErr = ErrClosing
	}
	if c.initiator == "" {
		c.initiator = InitiatorRemote
	}
	c.replyLocked(wire.TypeError, wire.JSON, wire.ErrorPayload{Error: err.Error(), PktType: pktType, Code: code})
	if !c.goodbyeQueued && !c.writerGone {
		payload, _ := wire.Marshal(wire.JSON, wire.GoodbyePayload{Code: wire.GoodbyeProtocolError, Reason: err.Error()})
		c.goodbyeQueued = true
		c.queueLocked(outItem{frame: wire.AppendFrame(nil, wire.TypeGoodbye, wire.JSON, payload), goodbye: true})
	}
	signal(c.wake)
}

// endRead runs when reading has ended: it lets the writer finish (bounded
// by the linger timeout) after a clean EOF, else closes the socket, then
// finishes the connection.
func (c *Conn) endRead(err error) {
	c.mu.Lock()
	c.readerEnded, c.readErr = true, err
	if c.initiator == "" {
		c.initiator = InitiatorRemote
	}
	if c.sendErr == nil {
		c.sendErr = ErrClosing
	}
	c.failFlushesLocked(fmt.Errorf("%w: before the flush was acknowledged: %v", ErrClosed, err))
	graceful := errors.Is(err, io.EOF) && c.goodbyeRecv && !c.forced
	c.mu.Unlock()
	close(c.readerDone)
	if graceful {
		_ = c.tc.SetWriteDeadline(time.Now().Add(c.cfg.linger))
	} else {
		_ = c.raw.Close()
	}
	<-c.writerDone
	_ = c.raw.Close()
	c.finish()
}

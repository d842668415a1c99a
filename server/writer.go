package server

import (
	"errors"
	"os"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// writeLoop is the connection's only writer. It takes everything queued at
// once, writes it through the buffer and flushes when the queue is empty,
// so a busy session costs one syscall per 64 KiB, not per packet. It never
// holds a lock while writing. It ends after this side's Goodbye and the
// close_notify, or when the connection is aborted.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	var batch []entry
	var last uint64 // sequence of the last entry written, not yet marked
	for {
		var owned bool
		batch, owned = c.sess.q.pop(c, batch[:0], WriteBufferSize)
		if !owned {
			// Taken over: what is still queued belongs to the new
			// connection. Tell this one why it is closed.
			if c.flushMarked(last) && c.writeTakeover() {
				c.linger()
			}
			return
		}
		if len(batch) == 0 {
			if !c.flushMarked(last) {
				return
			}
			select {
			case <-c.wake:
				continue
			case <-c.ctx.Done():
				return
			}
		}
		goodbye := false
		for i := range batch {
			e := &batch[i]
			last = e.seq
			if e.only != nil && e.only != c {
				continue // a reply or barrier for the connection taken over
			}
			if err := c.writeFrame(e.typ, e.enc, e.payload); err != nil {
				c.writeFailed(err)
				return
			}
			if e.typ == wire.TypeGoodbye {
				goodbye = true // the queue is sealed: nothing follows it
				break
			}
		}
		clear(batch)
		if goodbye {
			if !c.flushMarked(last) {
				return
			}
			c.mu.Lock()
			c.goodbyeSent = true
			c.mu.Unlock()
			c.linger()
			return
		}
	}
}

func (c *conn) writeFrame(typ wire.Type, enc wire.Encoding, payload []byte) error {
	h := wire.Header(typ, enc, len(payload))
	if _, err := c.bw.Write(h[:]); err != nil {
		return err
	}
	if _, err := c.bw.Write(payload); err != nil {
		return err
	}
	c.stats.packetsOut.Add(1)
	c.stats.bytesOut.Add(uint64(wire.HeaderLen + len(payload)))
	return nil
}

// flushMarked flushes the buffer and records that everything through last
// is on the wire. It reports false, after aborting, if the write failed.
func (c *conn) flushMarked(last uint64) bool {
	if c.bw.Buffered() > 0 {
		if err := c.bw.Flush(); err != nil {
			c.writeFailed(err)
			return false
		}
	}
	if last > 0 {
		c.sess.q.markWritten(last)
	}
	return true
}

// writeFailed aborts after a failed write: a missed drain deadline is a
// timeout; anything else means the peer is gone.
func (c *conn) writeFailed(err error) {
	o := OutcomePeerClosed
	if errors.Is(err, os.ErrDeadlineExceeded) {
		o = OutcomeTimeout
	}
	c.log.Debug("write failed", "err", err)
	c.abort(o)
}

// writeTakeover sends the taken-over connection its Error and Goodbye,
// in the encoding of the last frame it sent.
func (c *conn) writeTakeover() bool {
	c.mu.Lock()
	c.closeStarted = true
	c.code, c.reason = wire.GoodbyeSessionTakenOver, wire.TakeoverMessage
	c.state = StateClosing
	c.mu.Unlock()
	c.failFlushes(ErrClosed)
	enc := c.encoding()
	errPayload, _ := wire.Marshal(enc, wire.ErrorPayload{Error: wire.TakeoverMessage, PktType: 0, Code: wire.CodeSessionTakenOver})
	byePayload, _ := wire.Marshal(enc, wire.GoodbyePayload{Code: wire.GoodbyeSessionTakenOver, Reason: wire.TakeoverMessage})
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.LingerTimeout))
	for _, f := range []struct {
		typ     wire.Type
		payload []byte
	}{{wire.TypeError, errPayload}, {wire.TypeGoodbye, byePayload}} {
		if err := c.writeFrame(f.typ, enc, f.payload); err != nil {
			c.writeFailed(err)
			return false
		}
	}
	if !c.flushMarked(0) {
		return false
	}
	c.mu.Lock()
	c.goodbyeSent = true
	c.mu.Unlock()
	c.log.Info("session taken over by another connection")
	return true
}

// linger runs after this side's Goodbye is on the wire: it waits for the
// peer's Goodbye (or EOF), sends close_notify, and lets the reader read
// until EOF. The linger timeout bounds all of it.
func (c *conn) linger() {
	c.setState(StateClosing)
	deadline := time.Now().Add(c.srv.cfg.LingerTimeout)
	_ = c.nc.SetReadDeadline(deadline)
	timer := time.NewTimer(c.srv.cfg.LingerTimeout)
	defer timer.Stop()
	select {
	case <-c.gotGoodbye:
	case <-c.readerDone:
	case <-timer.C:
		c.abort(OutcomeTimeout)
		return
	case <-c.ctx.Done():
		return
	}
	_ = c.tc.CloseWrite() // close_notify; the socket stays open for reading
	select {
	case <-c.readerDone:
	case <-timer.C:
		c.mu.Lock()
		exchanged := c.goodbyeSent && c.goodbyeRecv
		c.mu.Unlock()
		if exchanged {
			c.abort(OutcomeClean) // the Goodbyes were exchanged; only the EOF is late
		} else {
			c.abort(OutcomeTimeout)
		}
	case <-c.ctx.Done():
	}
}

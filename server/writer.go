package server

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// idleBatchCap is the most entries of batch array a writer keeps while its
// queue is empty (about 12 KiB); a burst of small packets grows it to
// ~1,000 entries, which an idle session should not hold on to.
const idleBatchCap = 256

// writeLoop is the connection's only writer. It takes up to a buffer's
// worth of queued packets at a time, writes them into the buffer and
// flushes, so a busy session costs one syscall per 64 KiB, not per packet,
// and Drain sees progress batch by batch. It never holds a lock while
// writing. It ends after this side's Goodbye and the close_notify, or when
// the connection is aborted.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	if c.resumable && !c.writeResumed() {
		return
	}
	var batch []entry // reused: taking allocates nothing in steady state
	for {
		var owned bool
		var wait <-chan struct{}
		batch, owned, wait = c.sess.q.take(c, batch[:0], WriteBufferSize)
		if c.overAcked { // set by this goroutine's take, just now
			c.overAcked = false
			c.startCloseIn(wire.GoodbyePayload{
				Code:      wire.GoodbyeSlowConsumer,
				Reason:    fmt.Sprintf("the client left over %d bytes of Data unacked (twice the resume buffer); a resumable client must ack what it processes", unackedCap*c.srv.cfg.ResumeBuffer),
				Reconnect: true,
			}, c.encoding(), 0)
		}
		if !owned {
			// Taken over: what is still queued belongs to the new
			// connection. Tell this one why it is closed.
			if c.writeTakeover() {
				c.linger()
			}
			return
		}
		if len(batch) == 0 {
			if cap(batch) > idleBatchCap {
				batch = nil // an idle connection does not keep a burst's array
			}
			if wait == nil {
				wait = c.wake
			}
			select {
			case <-wait:
				continue
			case <-c.ctx.Done():
				return
			}
		}
		goodbye, err := c.writeBatch(batch)
		if err != nil {
			c.stats.unwritten.Add(uint64(c.sess.q.handBack(c, batch)))
			c.writeFailed(err)
			return
		}
		c.sess.q.markWritten(c, &batch[len(batch)-1])
		clear(batch)
		if goodbye {
			c.mu.Lock()
			c.goodbyeSent = true
			c.mu.Unlock()
			c.linger()
			return
		}
	}
}

// writeBatch writes a taken batch in one write, from a pooled buffer: take
// takes at most WriteBufferSize bytes (or one frame), so the write is the
// only I/O and a failed batch was not written as a whole. (A writev of the
// payloads would save the copy on a plain socket, but over TLS each slice
// would be a record of its own.) It reports whether the
// batch ended with this side's Goodbye, which the queue seals behind.
func (c *conn) writeBatch(batch []entry) (goodbye bool, err error) {
	c.mu.Lock()
	peerGoodbye := c.goodbyeRecv
	c.mu.Unlock()
	var written [TypeSlots]struct{ packets, bytes uint64 }
	size := 0
	for i := range batch {
		size += batch[i].size()
	}
	bp := getWriteBuf(size)
	buf := (*bp)[:0]
	for i := range batch {
		e := &batch[i]
		switch {
		case e.only != nil && e.only != c:
			continue // a reply or barrier for the connection taken over
		case e.typ == wire.TypeFlush && peerGoodbye:
			continue // no Flush after the peer's Goodbye; its waiter has failed
		}
		h := wire.Header(e.typ, e.enc, len(e.payload))
		buf = append(append(buf, h[:]...), e.payload...)
		w := &written[typeSlot(e.typ)]
		w.packets++
		w.bytes += uint64(wire.HeaderLen + len(e.payload))
		if e.typ == wire.TypeGoodbye {
			goodbye = true
			break
		}
	}
	c.flushingSince.Store(time.Now().UnixNano())
	_, err = c.tc.Write(buf)
	c.flushingSince.Store(0)
	putWriteBuf(bp, buf)
	if err != nil {
		return false, err
	}
	for i, w := range written {
		if w.packets > 0 {
			c.out.add(wire.Type(i), w.packets, w.bytes)
		}
	}
	return goodbye, nil
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

// takenOver records that c lost its session to a takeover: its close is
// decided, with Goodbye session_taken_over, and no other close starts.
func (c *conn) takenOver() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.code, c.reason = wire.GoodbyeSessionTakenOver, wire.TakeoverMessage
	c.leaveActive(StateClosing)
}

// writeTakeover sends the taken-over connection its Error and Goodbye,
// in the encoding of the last frame it sent.
func (c *conn) writeTakeover() bool {
	c.takenOver()
	c.failFlushes(ErrClosed)
	enc := c.encoding()
	errPayload, _ := wire.Marshal(enc, wire.ErrorPayload{Error: wire.TakeoverMessage, PktType: 0, Code: wire.CodeSessionTakenOver})
	byePayload, _ := wire.Marshal(enc, wire.GoodbyePayload{Code: wire.GoodbyeSessionTakenOver, Reason: wire.TakeoverMessage})
	c.shortenDeadlines(time.Now().Add(c.srv.cfg.LingerTimeout))
	if _, err := c.writeBatch([]entry{
		{typ: wire.TypeError, enc: enc, payload: errPayload},
		{typ: wire.TypeGoodbye, enc: enc, payload: byePayload},
	}); err != nil {
		c.writeFailed(err)
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
// until EOF. The linger timeout is an inactivity bound: the reader extends
// it on every buffer of input, so that a peer still sending what it owed
// before its Goodbye is read to the end rather than reset, and the drain
// plus linger timeouts cap the whole.
func (c *conn) linger() {
	c.setState(StateClosing)
	now := time.Now()
	limit := c.srv.cfg.DrainTimeout + c.srv.cfg.LingerTimeout
	c.lingerCap.Store(now.Add(limit).UnixNano())
	c.shortenReadDeadline(now.Add(c.srv.cfg.LingerTimeout))
	// The timer only matters when the reader is not reading (a handler
	// holds it); otherwise the read deadline ends the linger.
	timer := time.NewTimer(limit)
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

// writeBufClasses are the sizes of the pooled write buffers: a batch takes
// the smallest that fits it, so that a connection holds a buffer only
// while it writes, and a small batch does not pin a large one.
var writeBufClasses = [...]int{4 << 10, 16 << 10, WriteBufferSize + wire.HeaderLen + wire.MaxPayload}

var writeBufs [len(writeBufClasses)]sync.Pool

// getWriteBuf returns a pooled buffer of at least n bytes (a fresh one
// beyond the largest class).
func getWriteBuf(n int) *[]byte {
	for i, size := range writeBufClasses {
		if n <= size {
			if bp, ok := writeBufs[i].Get().(*[]byte); ok {
				return bp
			}
			b := make([]byte, 0, size)
			return &b
		}
	}
	b := make([]byte, 0, n)
	return &b
}

// putWriteBuf returns a buffer from getWriteBuf, as buf grew it, to its
// pool.
func putWriteBuf(bp *[]byte, buf []byte) {
	for i, size := range writeBufClasses {
		if cap(buf) == size {
			*bp = buf[:0]
			writeBufs[i].Put(bp)
			return
		}
	}
}

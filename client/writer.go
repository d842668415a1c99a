package client

import (
	"bufio"
	"fmt"
)

// maxUnflushed bounds how many completed sends wait for a flush while the
// queue never empties, so their senders learn of progress.
const maxUnflushed = 1024

// writeLoop is the writer goroutine: the only one that writes to the conn.
// It takes the whole queue at once, writes it through a 64 KiB buffer and
// flushes when the queue is empty. No lock is held during I/O.
func (c *Conn) writeLoop() {
	defer close(c.writerDone)
	w := writer{c: c, bw: bufio.NewWriterSize(c.tc, bufSize)}
	var batch []outItem
	for {
		c.mu.Lock()
		batch, c.out = c.out, batch[:0]
		c.mu.Unlock()
		if len(batch) == 0 {
			if w.bw.Buffered() > 0 || len(w.pending) > 0 {
				if !w.flush() {
					return
				}
				continue // more may have been queued during the flush
			}
			if w.idle() {
				return
			}
			continue
		}
		for i := range batch {
			if _, err := w.bw.Write(batch[i].frame); err != nil {
				w.fail(err, batch[i:])
				return
			}
			if batch[i].done != nil {
				w.pending = append(w.pending, batch[i].done)
			}
			w.goodbyeWritten = w.goodbyeWritten || batch[i].goodbye
			batch[i] = outItem{}
		}
		if len(w.pending) >= maxUnflushed && !w.flush() {
			return
		}
	}
}

type writer struct {
	c              *Conn
	bw             *bufio.Writer
	pending        []chan<- error // written to bw, not yet flushed
	goodbyeWritten bool
	goodbyeFlushed bool
}

// flush flushes the buffer and completes the pending sends.
func (w *writer) flush() bool {
	if err := w.bw.Flush(); err != nil {
		w.fail(err, nil)
		return false
	}
	for i, ch := range w.pending {
		ch <- nil
		w.pending[i] = nil
	}
	w.pending = w.pending[:0]
	if w.goodbyeWritten && !w.goodbyeFlushed {
		w.goodbyeFlushed = true
		c := w.c
		c.mu.Lock()
		c.goodbyeSent = true
		await := !c.goodbyeRecv && c.brokenErr == nil
		c.mu.Unlock()
		if await {
			c.awaitGoodbye.Store(true)
			c.setReadLinger()
		}
	}
	return true
}

// idle runs with the queue empty and everything flushed. It sends
// close_notify once both Goodbyes are exchanged, and otherwise waits for
// work. It returns true when the writer must exit.
func (w *writer) idle() bool {
	c := w.c
	c.mu.Lock()
	exchanged := c.goodbyeSent && (c.goodbyeRecv || c.brokenErr != nil)
	stop := c.readerEnded || c.forced
	if exchanged || stop {
		c.writerGone = true
	}
	c.mu.Unlock()
	if exchanged {
		if err := c.tc.CloseWrite(); err != nil {
			c.log.Debug("close_notify", "err", err)
		}
		c.setReadLinger() // read until EOF or the linger timeout
		return true
	}
	if stop {
		return true
	}
	select {
	case <-c.wake:
	case <-c.forceCh:
	case <-c.readerDone:
	}
	return false
}

// fail records a write error, fails every unfinished send and closes the
// socket so the reader stops too.
func (w *writer) fail(err error, unwritten []outItem) {
	c := w.c
	c.log.Debug("write failed", "err", err)
	sendErr := fmt.Errorf("%w: write failed: %v", ErrClosed, err)
	for _, ch := range w.pending {
		ch <- sendErr
	}
	w.pending = nil
	c.mu.Lock()
	c.writeErr = err
	c.writerGone = true
	if c.sendErr == nil {
		c.sendErr = sendErr
	}
	rest := c.out
	c.out = nil
	c.mu.Unlock()
	for _, list := range [][]outItem{unwritten, rest} {
		for _, it := range list {
			if it.done != nil {
				it.done <- sendErr
			}
		}
	}
	_ = c.raw.Close()
}

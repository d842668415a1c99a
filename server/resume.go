package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// The resume extension (docs/protocol.md §15). A client opts in with the
// ALPN protocol wire.ALPNResume; its connection is then resumable: its first
// frame is Resume, the writer writes nothing before the Resumed that answers
// it, and the Data of both directions is numbered per session and epoch.
// Written Data stays in the session's replay buffer until the client acks
// it, so that a session whose connection is lost without a Goodbye is kept,
// detached, for the resume window, and a Resume on a new connection picks
// it up where the client left off.

// ErrNewEpoch: a resumable session's client came back in a new epoch
// (resumed=false) before it acked the packets waited for; it may not have
// them.
var ErrNewEpoch = errors.New("server: the session went on in a new epoch before the client acked")

// Errors of the resume extension.
var (
	errResumeNotFirst = errors.New("a resumable connection (ALPN " + wire.ALPNResume + ") must send Resume as its first frame")
	errResumeAgain    = errors.New("a Resume is only valid as the first frame of the connection")
)

// ackEvery is the most client Data the server processes before it acks,
// even while more input is buffered; otherwise it acks when its read
// buffer runs dry, and in answer to every Flush.
const ackEvery = 64

// replay is the outbound half of a resumable session: the epoch and the
// numbered Data written but not yet acked. It lives in the queue, under
// q.mu, because the writer numbers entries as it takes them.
type replay struct {
	epoch string
	sent  uint64 // delivery number of the last Data taken for writing
	acked uint64 // the client's last Ack (or implicit ack by Resume)
	// unacked holds Data acked+1 … sent, oldest first, from head.
	unacked []entry
	head    int
	bytes   int
	// overAcked: the client let more than unackedCap resume buffers of
	// written Data go unacked; its connection is being closed.
	overAcked bool
}

// unackedCap bounds, in resume buffers, the written Data a client may
// leave unacked. New sends stop at one resume buffer, but replies to the
// client's own packets cannot wait for its Acks (the reader that would
// read them is the one replying), so a client that never acks is closed
// with Goodbye slow_consumer at this many, rather than held without bound.
const unackedCap = 2

func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// pending returns the unacked entries.
func (rp *replay) pending() []entry { return rp.unacked[rp.head:] }

// dropThrough forgets the entries through seq, which the client has.
func (rp *replay) dropThrough(seq uint64) {
	if seq <= rp.acked {
		return
	}
	p := rp.pending()
	n := int(min(seq, rp.sent) - rp.acked)
	for i := range p[:n] {
		rp.bytes -= p[i].cost()
	}
	clear(p[:n])
	rp.head += n
	rp.acked = seq
	switch {
	case rp.head == len(rp.unacked) && cap(rp.unacked) > keptEntries:
		rp.unacked, rp.head = nil, 0 // empty after a burst: let the array go
	case rp.head == len(rp.unacked):
		rp.unacked, rp.head = rp.unacked[:0], 0
	case rp.head > len(rp.unacked)/2:
		rest := copy(rp.unacked, rp.unacked[rp.head:])
		clear(rp.unacked[rest:])
		rp.unacked, rp.head = rp.unacked[:rest], 0
	}
}

// numbered reports whether e is counted by the resume numbering: only
// Data is, server to client.
func numbered(e *entry) bool { return e.typ == wire.TypeData }

// takeResumable is take for the resumable connection c: first what c must
// replay (the unacked Data after the client's Resume), then the queue,
// numbering each Data as it is taken and keeping it until it is acked.
// Unlike take, it does not wait for a previous owner's batch: every Data in
// that batch is numbered and kept already, so the replay includes it.
// Call with q.mu held.
func (q *queue) takeResumable(c *conn, batch []entry, maxBytes int) []entry {
	rp := q.rp
	if c.replayNext <= rp.sent {
		c.replayNext = max(c.replayNext, rp.acked+1)
		p := rp.pending()[c.replayNext-rp.acked-1:]
		size := 0
		for _, e := range p {
			if len(batch) > 0 && (size+e.size() > maxBytes || len(batch) == MaxBatchEntries) {
				break
			}
			size += e.size()
			batch = append(batch, e)
		}
		if len(batch) > 0 {
			c.replayNext = batch[len(batch)-1].dseq + 1
			c.srv.counters.replayed.Add(uint64(len(batch)))
			q.hold(c, len(batch)*EntryOverhead) // the payloads are the replay buffer's
			return batch
		}
	}
	pending := q.items[q.head:]
	n, size := 0, 0
	for n < min(len(pending), MaxBatchEntries) && (n == 0 || size+pending[n].size() <= maxBytes) {
		e := &pending[n]
		if numbered(e) {
			rp.sent++
			e.dseq = rp.sent
			rp.unacked = append(rp.unacked, *e)
			rp.bytes += e.cost()
			if rp.bytes > unackedCap*q.rpLimit && !rp.overAcked {
				rp.overAcked = true // the writer closes the connection
				c.overAcked = true
			}
		}
		size += e.size()
		n++
	}
	c.replayNext = rp.sent + 1
	return q.removeTaken(c, batch, n)
}

// ack applies the client's Ack: the Data through seq is processed and
// leaves the replay buffer, making room for new sends.
func (q *queue) ack(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	rp := q.rp
	if rp == nil {
		return errors.New("an Ack on a session that is not resumable")
	}
	if seq > rp.sent {
		return fmt.Errorf("an Ack of %d, but the server has sent %d Data in this epoch", seq, rp.sent)
	}
	if seq > rp.acked {
		rp.dropThrough(seq)
		q.settle()
		q.notify()
	}
	return nil
}

// resumeOutbound applies a client's Resume to the outbound half and tells
// c where to start. It resumes the client's epoch when the server holds
// everything after the client's seq in it; otherwise it starts a new epoch,
// in which what was written but never acked is sent again, first, with new
// numbers: the client may see it twice, and resumed=false tells it so.
func (q *queue) resumeOutbound(c *conn, p wire.ResumePayload) (epoch string, resumed bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if rp := q.rp; rp != nil && p.Epoch != "" && p.Epoch == rp.epoch {
		if p.Seq > rp.sent {
			return "", false, fmt.Errorf("a Resume with seq %d, but the server has sent %d Data in epoch %s", p.Seq, rp.sent, rp.epoch)
		}
		if p.Seq < rp.acked {
			return "", false, fmt.Errorf("a Resume with seq %d, but the client has acked %d Data in epoch %s", p.Seq, rp.acked, rp.epoch)
		}
		rp.dropThrough(p.Seq) // the client has them: an implicit Ack
		q.settle()
		c.replayNext = max(p.Seq, rp.acked) + 1
		q.notify()
		return rp.epoch, true, nil
	}
	q.requeueUnacked()
	q.rp = &replay{epoch: newEpoch()}
	q.renumber()
	q.settle()
	c.replayNext = 1
	return q.rp.epoch, false, nil
}

// renumber gives the pending Data the packet numbers of a new epoch, from
// 1, in order: the numbers the client will count them by. Call with q.mu
// held.
func (q *queue) renumber() {
	q.num, q.writtenNum = 0, 0
	for i := range q.items[q.head:] {
		e := &q.items[q.head+i]
		if e.typ == wire.TypeData {
			q.num++
		}
		e.num = q.num
	}
}

// waitAcked waits until the client has acked the Data through packet
// number num of epoch, across reconnects. It fails with ErrNewEpoch if the
// session went on in another epoch first (the client may not have them),
// and with ErrClosed if it ended.
func (q *queue) waitAcked(ctx context.Context, epoch string, num uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		switch rp := q.rp; {
		case q.state == queueEnded:
			return ErrClosed
		case rp == nil || rp.epoch != epoch:
			return ErrNewEpoch
		case rp.acked >= num:
			return nil
		}
		ch := q.waitChan()
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			q.mu.Lock()
			return ctx.Err()
		}
		q.mu.Lock()
	}
}

// requeueUnacked puts the written but unacked Data back at the front of
// the queue, unnumbered, and ends the replay state: what the client may not
// have is sent again rather than lost. Call with q.mu held.
func (q *queue) requeueUnacked() {
	rp := q.rp
	if rp == nil {
		return
	}
	q.rp = nil
	back := rp.pending()
	if len(back) == 0 {
		return
	}
	items := make([]entry, 0, len(back)+q.len())
	for _, e := range back {
		e.dseq = 0
		items = append(items, e)
		q.bytes += e.cost()
	}
	q.items, q.head = append(items, q.items[q.head:]...), 0
}

// detach leaves the queue without an owner when c, its owner, was lost: it
// keeps everything, and a Resume on the next connection takes it up.
func (q *queue) detach(c *conn) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.owner != c {
		return
	}
	q.owner, q.inflight = nil, nil
	q.notify()
}

// handleResume answers the first frame of a resumable connection, Resume,
// with Resumed, and opens the writer's gate. The reader holds the
// session's inbound lock.
func (c *conn) handleResume(f wire.Frame) {
	p, err := wire.DecodeResume(f.Encoding, f.Payload)
	if err != nil {
		c.openGate(nil, 0)
		c.protocolError(wire.CodeBadPayload, err.Error(), f.Type, f.Encoding)
		return
	}
	s := c.sess
	epoch, resumed, err := s.q.resumeOutbound(c, p)
	if err != nil {
		c.openGate(nil, 0)
		c.protocolError(wire.CodeProtocolError, err.Error(), f.Type, f.Encoding)
		return
	}
	if !resumed {
		s.inEpoch.Store(0)
	}
	// Acks written to the lost connection may never have arrived: ack
	// again, from the next chance on, whatever was acked before.
	s.inAcked.Store(0)
	c.resumedOK.Store(true)
	inSeq := s.inEpoch.Load()
	payload, _ := wire.Marshal(f.Encoding, wire.ResumedPayload{Epoch: epoch, Seq: inSeq, Resumed: resumed})
	c.openGate(payload, f.Encoding)
	c.srv.counters.resume(resumed)
	c.log.Info("session resumed", "resumed", resumed, "epoch", epoch, "client_seq", p.Seq, "server_seq", inSeq, "client_epoch", p.Epoch)
	c.srv.emit(Event{Kind: EventResumed, SessionID: s.id, ConnID: c.id, Resumed: resumed, Session: s.Info()})
}

// openGate lets the writer of a resumable connection start: with the
// Resumed to write first, or with nil when the Resume failed (the writer
// then writes what the protocol error queued).
func (c *conn) openGate(resumed []byte, enc wire.Encoding) {
	c.resumedFrame = resumed
	c.resumedEnc = enc
	close(c.gate)
}

// writeResumed writes the Resumed frame, before anything else, once the
// reader has answered the Resume. It reports false if the connection ended
// first.
func (c *conn) writeResumed() bool {
	select {
	case <-c.gate:
	case <-c.ctx.Done():
		return false
	}
	if c.resumedFrame == nil {
		return true
	}
	if _, err := c.writeBatch([]entry{{typ: wire.TypeResumed, enc: c.resumedEnc, payload: c.resumedFrame}}); err != nil {
		c.writeFailed(err)
		return false
	}
	return true
}

// maybeAck acks the client's processed Data when the reader's buffer has
// run dry or ackEvery packets are unacked. With a Handler that processes
// packets elsewhere (a FlushWaiter), only what it reports processed is
// acked; the rest is acked in answer to the client's Flush. The reader
// holds the session's inbound lock.
func (c *conn) maybeAck(enc wire.Encoding, flush bool) {
	s := c.sess
	in, acked := s.inEpoch.Load(), s.inAcked.Load()
	if !c.resumedOK.Load() || in == acked {
		return
	}
	if !flush {
		if c.br.Buffered() > 0 && in-acked < ackEvery {
			return
		}
		if fw, ok := c.srv.cfg.Handler.(FlushWaiter); ok {
			pr, ok := fw.(ProcessedReporter)
			if !ok || !pr.ProcessedThrough(s, s.inSeq) {
				return
			}
		}
	}
	s.inAcked.Store(in)
	c.replyControl(wire.TypeAck, enc, wire.AckPayload{Seq: in})
}

// lost reports whether c ended as a lost resumable connection: no close
// started by either side, so its session is kept detached. That holds
// before the connection's Resume was read too: a session taken from its
// detached state by a connection that is lost at once is detached again,
// not ended with what it held.
func (c *conn) lost() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resumable && c.code == "" && !c.goodbyeRecv && !c.goodbyeSent
}

// detached is a session kept after its resumable connection was lost.
// Guarded by the server's mu.
type detached struct {
	since time.Time
	timer *time.Timer
}

// detach keeps sess, whose connection c was lost, for the resume window.
// Call with s.mu held.
func (s *Server) detach(sess *Session, c *conn) {
	sess.q.detach(c)
	d := &detached{since: time.Now()}
	d.timer = time.AfterFunc(s.cfg.ResumeWindow, func() { s.expire(sess, d, EndResumeWindow) })
	sess.detached = d
	sess.detachedSince.Store(d.since.UnixNano())
	s.counters.detached.Add(1)
}

// reattach ends sess's detached time: a connection took it. Call with s.mu
// held.
func (s *Server) reattach(sess *Session) {
	if d := sess.detached; d != nil {
		d.timer.Stop() // if it fired, expire finds sess.detached changed
		sess.detached = nil
		sess.detachedSince.Store(0)
		s.counters.detached.Add(-1)
	}
}

// expire ends a detached session whose resume window has passed, or that
// a Disconnect or a shutdown ends: what it held is dropped, and counted.
// It reports false if a connection took the session first.
func (s *Server) expire(sess *Session, d *detached, reason string) (Ended, bool) {
	s.mu.Lock()
	if d == nil || sess.detached != d {
		s.mu.Unlock()
		return Ended{}, false
	}
	s.reattach(sess)
	s.sessMu.Lock()
	delete(s.sessions, sess.id)
	s.sessMu.Unlock()
	packets, bytes := sess.q.endDetached()
	s.mu.Unlock()
	s.counters.expired.Add(1)
	s.counters.expiredBytes.Add(uint64(bytes))
	e := Ended{Reason: reason, Packets: packets, Bytes: bytes}
	s.log.Info("detached session expired", "session_id", sess.id, "reason", reason, "detached_for", time.Since(d.since), "dropped_packets", packets, "dropped_bytes", bytes)
	s.emit(Event{Kind: EventExpired, SessionID: sess.id, Ended: e})
	return e, true
}

// endDetached ends an ownerless queue, dropping what is queued and unacked.
func (q *queue) endDetached() (packets, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	packets, bytes = q.len(), q.bytes
	if q.rp != nil {
		packets += len(q.rp.pending())
		bytes += q.rp.bytes
		q.rp = nil
	}
	clear(q.items)
	q.items, q.head, q.bytes = nil, 0, 0
	q.state = queueEnded
	q.settle()
	q.notify()
	return packets, bytes
}

// expireNow ends a detached session at once, for reason; it reports false
// if the session is not detached.
func (s *Server) expireNow(sess *Session, reason string) (Ended, bool) {
	s.mu.Lock()
	d := sess.detached
	s.mu.Unlock()
	return s.expire(sess, d, reason)
}

// closeStarted reports whether either side has started to close c.
func (c *conn) closeStarted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state != StateActive || c.goodbyeRecv
}

// liftHandshakeDeadline clears the read deadline the handshake left on a
// resumable connection for its Resume, unless a close has set one since.
func (c *conn) liftHandshakeDeadline() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readDeadline.IsZero() {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
}

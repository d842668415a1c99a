package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// rconn is one connection of a Resumable: a reader and a writer
// goroutine. Its mutable state is guarded by the Resumable's mutex.
type rconn struct {
	s   *Resumable
	tc  *tls.Conn
	raw net.Conn
	br  *bufio.Reader
	fr  *wire.Reader
	gen uint64 // the epoch it was resumed in

	inNext       uint64 // reader only: the number of the next server Data
	lastEnc      atomic.Int32
	awaitGoodbye atomic.Bool // ours is flushed, the server's awaited
	goodbyeIn    atomic.Bool // the server's arrived

	wake       chan struct{} // cap 1: the writer has work
	readerDone chan struct{}
	writerDone chan struct{}
	done       chan struct{} // both goroutines have exited

	// Guarded by s.mu.
	out           []wItem
	ackDue        bool   // an Ack of ackSent is owed
	ackSent       uint64 // the last number acknowledged (or owed) to the server
	flushOut      uint64 // the Flush outstanding, 0 for none
	flushCovers   uint64 // the last packet it covers
	nonce         uint64
	goodbyeQueued bool
	goodbyeSent   bool
	goodbyeRecv   bool
	peerGoodbye   wire.GoodbyePayload
	writerGone    bool
	readErr       error
	writeErr      error
}

type wItem struct {
	frame   []byte
	goodbye bool
}

// permanentError marks a failure that reconnecting cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// goodbyeError is the server's Goodbye where a Resumed was due.
type goodbyeError struct{ gb wire.GoodbyePayload }

func (e *goodbyeError) Error() string {
	return fmt.Sprintf("client: the server said goodbye %q (%s) instead of resuming", e.gb.Code, e.gb.Reason)
}

// connect dials, authenticates and resumes; on success the connection is
// the live one, with the resends queued, and its goroutines not started.
func (s *Resumable) connect(ctx context.Context) (*rconn, []ResumeEvent, error) {
	d := tls.Dialer{Config: s.tlsCfg}
	nc, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		if errors.Is(err, ErrFingerprintMismatch) {
			err = &permanentError{err}
		}
		return nil, nil, fmt.Errorf("client: dial %s: %w", s.addr, err)
	}
	tc := nc.(*tls.Conn)
	c, evs, err := s.resume(ctx, tc)
	if err != nil {
		_ = tc.NetConn().Close()
		return nil, nil, err
	}
	return c, evs, nil
}

// resume runs the handshake and the Resume exchange on a TLS conn.
func (s *Resumable) resume(ctx context.Context, tc *tls.Conn) (*rconn, []ResumeEvent, error) {
	if tc.ConnectionState().NegotiatedProtocol != wire.ALPNResume {
		return nil, nil, &permanentError{ErrResumeUnsupported}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(dl)
	}
	// A deadline in the past unblocks any read or write when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = tc.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*rconn, []ResumeEvent, error) {
		stop()
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("client: resumable handshake: %w (%v)", ctx.Err(), err)
		}
		return nil, nil, fmt.Errorf("client: resumable handshake: %w", err)
	}
	id, br, leaf, err := authenticate(tc, s.key)
	if err != nil {
		return fail(err)
	}
	if s.id != 0 && id != s.id {
		return fail(&permanentError{fmt.Errorf("session id %d, want %d as before", id, s.id)})
	}
	s.mu.Lock()
	epoch, seq := s.epoch, s.inSeq
	s.mu.Unlock()
	enc := s.cfg.encoding
	payload, err := wire.Marshal(enc, wire.ResumePayload{Epoch: epoch, Seq: seq})
	if err != nil {
		return fail(err)
	}
	if _, err := tc.Write(wire.AppendFrame(nil, wire.TypeResume, enc, payload)); err != nil {
		return fail(fmt.Errorf("writing resume: %w", err))
	}
	fr := wire.NewReader(br, wire.MaxPayload)
	f, err := fr.ReadFrame()
	if err != nil {
		return fail(fmt.Errorf("reading resumed: %w", err))
	}
	var rp wire.ResumedPayload
	switch f.Type {
	case wire.TypeResumed:
		if rp, err = wire.DecodeResumed(f.Encoding, f.Payload); err != nil {
			return fail(&permanentError{fmt.Errorf("%w: %v", ErrResumeProtocol, err)})
		}
	case wire.TypeGoodbye:
		gb, _ := wire.DecodeGoodbye(f.Encoding, f.Payload)
		return fail(&permanentError{&goodbyeError{gb}})
	default:
		return fail(&permanentError{fmt.Errorf("%w: %s frame where resumed was due", ErrResumeProtocol, f.Type)})
	}
	if !stop() {
		return nil, nil, fmt.Errorf("client: resumable handshake: %w", ctx.Err())
	}
	if err := tc.SetDeadline(time.Time{}); err != nil {
		return nil, nil, fmt.Errorf("client: resumable handshake: %w", err)
	}
	if s.id == 0 {
		s.id, s.fingerprint = id, Fingerprint(leaf)
	}
	c := &rconn{
		s: s, tc: tc, raw: tc.NetConn(), br: br, fr: fr,
		wake:       make(chan struct{}, 1),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		done:       make(chan struct{}),
	}
	c.lastEnc.Store(int32(f.Encoding))
	evs, err := s.applyResumed(c, rp, epoch, seq)
	if err != nil {
		return nil, nil, err
	}
	return c, evs, nil
}

// applyResumed makes c the live connection according to the server's
// Resumed, given the Resume the client sent: it renumbers on a new epoch
// and queues the resends, then what Sync and Close are waiting for.
func (s *Resumable) applyResumed(c *rconn, rp wire.ResumedPayload, epoch string, seq uint64) ([]ResumeEvent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.forced {
		return nil, fmt.Errorf("client: forced close: %w", s.forceErr)
	}
	ev := ResumeEvent{Kind: EventResumed, Resumed: rp.Resumed, Epoch: rp.Epoch, PrevEpoch: epoch, PeerSeq: rp.Seq}
	evs := []ResumeEvent{}
	var resend []outPacket
	if rp.Resumed {
		switch {
		case epoch == "" || rp.Epoch != epoch:
			return nil, &permanentError{fmt.Errorf("%w: resumed epoch %q, asked for %q", ErrResumeProtocol, rp.Epoch, epoch)}
		case rp.Seq < s.out.acked || rp.Seq > s.out.last:
			return nil, &permanentError{fmt.Errorf("%w: resumed at %d, outside the acked %d to the sent %d", ErrResumeProtocol, rp.Seq, s.out.acked, s.out.last)}
		}
		resend = s.out.after(rp.Seq)
		c.inNext, c.ackSent = seq+1, seq
	} else {
		if rp.Epoch == "" {
			return nil, &permanentError{fmt.Errorf("%w: a new epoch with no name", ErrResumeProtocol)}
		}
		if rp.Seq != 0 {
			s.log.Warn("new epoch with a non-zero seq, ignored", "epoch", rp.Epoch, "seq", rp.Seq)
		}
		var gap *GapError
		if epoch != "" {
			gap = &GapError{PrevEpoch: epoch, Epoch: rp.Epoch}
		}
		// Sync waiters keep their packets: renumbered, they are the first
		// so many of the buffer.
		for _, w := range s.syncs {
			n := 0
			for n < len(s.out.pkts) && s.out.pkts[n].seq <= w.target {
				n++
			}
			w.target = uint64(n)
			if gap != nil {
				w.gap = gap
			}
		}
		dups := s.out.renumber()
		s.epoch = rp.Epoch
		s.inSeq, s.inRecv = 0, 0
		s.gen++
		resend = s.out.pkts
		c.inNext, c.ackSent = 1, 0
		if gap != nil {
			gap.Resent = dups
			s.lastGap = gap
			s.stats.Gaps++
			s.stats.GapResent += uint64(dups)
			evs = append(evs, ResumeEvent{Kind: EventGap, Epoch: rp.Epoch, PrevEpoch: epoch, Resent: len(resend), Duplicates: dups})
		} else {
			s.lastGap = nil
		}
	}
	c.gen = s.gen
	for i := range resend {
		resend[i].sent = true
		c.out = append(c.out, wItem{frame: resend[i].frame})
	}
	ev.Resent = len(resend)
	if s.last != nil {
		s.stats.Reconnects++
		s.stats.Resent += uint64(len(resend))
	}
	if len(s.out.pkts) > 0 && (len(s.syncs) > 0 || s.out.bytes > s.rc.buffer/2) {
		s.flushLocked(c)
	}
	if s.closeCalled {
		s.queueCloseLocked(c)
	}
	s.maybeAckLocked(c, len(s.recvQ) == 0)
	signal(c.wake)
	s.cur, s.last = c, c
	return append([]ResumeEvent{ev}, evs...), nil
}

// startEncoding is the encoding of control packets the client starts.
func (c *rconn) startEncoding() wire.Encoding { return wire.Encoding(c.lastEnc.Load()) }

func (c *rconn) queueLocked(it wItem) {
	c.out = append(c.out, it)
	signal(c.wake)
}

// controlLocked queues a control packet; after our Goodbye, or once the
// writer is gone, it is dropped.
func (c *rconn) controlLocked(typ wire.Type, enc wire.Encoding, v any) {
	if c.goodbyeQueued || c.writerGone {
		return
	}
	payload, err := wire.Marshal(enc, v)
	if err != nil {
		c.s.log.Error("marshal control payload", "type", typ, "err", err)
		return
	}
	c.queueLocked(wItem{frame: wire.AppendFrame(nil, typ, enc, payload)})
}

func (c *rconn) queueGoodbyeLocked(enc wire.Encoding) {
	if c.goodbyeQueued || c.writerGone {
		return
	}
	payload, err := wire.Marshal(enc, wire.GoodbyePayload{Code: wire.GoodbyeNormal})
	if err != nil {
		c.s.log.Error("marshal goodbye", "err", err)
		return
	}
	c.goodbyeQueued = true
	c.queueLocked(wItem{frame: wire.AppendFrame(nil, wire.TypeGoodbye, enc, payload), goodbye: true})
}

func (c *rconn) setReadLinger() {
	_ = c.tc.SetReadDeadline(time.Now().Add(c.s.cfg.linger))
}

// readLoop is the reader goroutine of c.
func (c *rconn) readLoop() {
	window := c.s.rc.keepalive + c.s.rc.keepTimeout
	var lastSet time.Time
	for {
		switch {
		case c.awaitGoodbye.Load():
			c.setReadLinger()
		case c.goodbyeIn.Load():
			// The writer sets the linger once it has answered.
		default:
			// Half-open detection: something must arrive within the
			// window; the writer's Pings ask for it.
			if now := time.Now(); now.Sub(lastSet) > window/16 {
				_ = c.tc.SetReadDeadline(now.Add(window))
				lastSet = now
			}
		}
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.endRead(err)
			return
		}
		c.lastEnc.Store(int32(f.Encoding))
		if err := c.dispatch(f); err != nil {
			c.endRead(err)
			return
		}
	}
}

var errAbandoned = errors.New("client: delivery abandoned: the connection is closing")

// dispatch handles one frame; an error ends the connection.
func (c *rconn) dispatch(f wire.Frame) error {
	s := c.s
	switch f.Type {
	case wire.TypeData:
		num := c.inNext
		c.inNext++
		s.mu.Lock()
		dup := num <= s.inRecv
		if dup {
			s.stats.DuplicatesDropped++
		}
		s.mu.Unlock()
		if dup {
			return nil
		}
		return c.deliver(rItem{pkt: Packet{Type: f.Type, Encoding: f.Encoding, Payload: f.Payload}, num: num, gen: c.gen})
	case wire.TypeError:
		return c.deliver(rItem{pkt: Packet{Type: f.Type, Encoding: f.Encoding, Payload: f.Payload}, gen: c.gen})
	case wire.TypeFlush:
		fp, err := wire.DecodeFlush(f.Encoding, f.Payload)
		if err != nil {
			c.replyError(f, wire.CodeBadPayload, err)
			return nil
		}
		s.mu.Lock()
		if s.cfg.handler != nil || len(s.recvQ) == 0 {
			s.answerFlushLocked(c, fp.Seq, f.Encoding)
		} else {
			s.recvQ = append(s.recvQ, rItem{marker: c, seq: fp.Seq, enc: f.Encoding})
		}
		s.mu.Unlock()
	case wire.TypeFlushAck:
		fp, err := wire.DecodeFlush(f.Encoding, f.Payload)
		if err != nil {
			s.log.Warn("undecodable flush ack", "err", err)
			return nil
		}
		s.mu.Lock()
		if fp.Seq == c.flushOut {
			c.flushOut = 0
			s.autoFlushLocked(c)
		}
		s.mu.Unlock()
	case wire.TypeAck:
		ap, err := wire.DecodeAck(f.Encoding, f.Payload)
		if err != nil {
			s.log.Warn("undecodable ack", "err", err)
			return nil
		}
		s.mu.Lock()
		err = s.onAckLocked(ap.Seq)
		if err != nil && s.fatal == nil {
			s.fatal = err
		}
		s.mu.Unlock()
		return err
	case wire.TypePing:
		pp, err := wire.DecodePing(f.Encoding, f.Payload)
		if err != nil {
			c.replyError(f, wire.CodeBadPayload, err)
			return nil
		}
		s.mu.Lock()
		c.controlLocked(wire.TypePong, f.Encoding, pp)
		s.mu.Unlock()
	case wire.TypePong:
		// Its arrival is what the keepalive waited for.
	case wire.TypeGoodbye:
		c.onGoodbye(f)
	case wire.TypeResume, wire.TypeResumed:
		s.log.Warn("unexpected packet from server, ignored", "type", f.Type)
	default:
		c.replyError(f, wire.CodeUnknownType, errors.New("unknown packet type "+f.Type.String()))
	}
	return nil
}

func (c *rconn) replyError(f wire.Frame, code string, err error) {
	c.s.log.Warn("bad packet from server", "type", f.Type, "code", code, "err", err)
	// The server numbers every Error it receives like Data (§15), so the
	// Error goes through the resume buffer, numbered, not as a control
	// frame. If the buffer is full it is only logged.
	payload, merr := wire.Marshal(f.Encoding, wire.ErrorPayload{Error: err.Error(), PktType: int(f.Type), Code: code})
	if merr == nil {
		merr = c.s.enqueue(context.Background(), Packet{Type: wire.TypeError, Encoding: f.Encoding, Payload: payload}, nil, false)
	}
	if merr != nil {
		c.s.log.Warn("error for the server not sent", "err", merr)
	}
}

// deliver hands a received packet to the handler or the receive queue,
// waiting for room. It fails if the connection is going away meanwhile:
// the packet was not received, as far as resuming is concerned, and the
// server will resend it.
func (c *rconn) deliver(it rItem) error {
	s := c.s
	if s.cfg.handler != nil {
		s.cfg.handler(it.pkt)
		s.mu.Lock()
		if it.num > 0 {
			s.inRecv, s.inSeq = it.num, it.num
			s.maybeAckLocked(c, c.br.Buffered() == 0)
		}
		s.mu.Unlock()
		return nil
	}
	s.mu.Lock()
	for len(s.recvQ) >= s.cfg.recvBuffer {
		s.mu.Unlock()
		select {
		case <-s.recvSpace:
		case <-s.forceCh:
			return errAbandoned
		case <-c.writerDone:
			return errAbandoned
		}
		s.mu.Lock()
	}
	s.recvQ = append(s.recvQ, it)
	if it.num > 0 {
		s.inRecv = it.num
	}
	s.mu.Unlock()
	signal(s.recvReady)
	return nil
}

// onGoodbye handles the server's Goodbye: the session is ending; ours
// follows what is already queued.
func (c *rconn) onGoodbye(f wire.Frame) {
	s := c.s
	gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
	if err != nil {
		s.log.Warn("undecodable goodbye, counted as a goodbye", "err", err)
	}
	c.goodbyeIn.Store(true)
	c.awaitGoodbye.Store(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.goodbyeRecv {
		s.log.Warn("duplicate goodbye from server")
		return
	}
	s.log.Debug("server goodbye", "code", gb.Code, "reason", gb.Reason, "reconnect", gb.Reconnect)
	c.goodbyeRecv, c.peerGoodbye = true, gb
	if s.sendErr == nil {
		s.sendErr = ErrGoodbyeReceived
	}
	c.queueGoodbyeLocked(f.Encoding)
	signal(c.wake)
}

// endRead runs when reading has ended: after a clean EOF it lets the
// writer finish (bounded by the linger timeout), else closes the socket.
func (c *rconn) endRead(err error) {
	s := c.s
	s.mu.Lock()
	c.readErr = err
	graceful := errors.Is(err, io.EOF) && c.goodbyeRecv
	s.mu.Unlock()
	close(c.readerDone)
	if graceful {
		_ = c.tc.SetWriteDeadline(time.Now().Add(s.cfg.linger))
	} else {
		_ = c.raw.Close()
	}
	<-c.writerDone
	_ = c.raw.Close()
	close(c.done)
}

// writeLoop is the writer goroutine of c: the only one that writes to it.
// It takes the whole queue at once, writes it through a 64 KiB buffer and
// flushes when the queue is empty; it sends a Ping every keepalive
// interval. No lock is held during I/O.
func (c *rconn) writeLoop() {
	defer close(c.writerDone)
	s := c.s
	bw := bufio.NewWriterSize(c.tc, bufSize)
	tick := time.NewTicker(s.rc.keepalive)
	defer tick.Stop()
	ping := func() {
		s.mu.Lock()
		c.nonce++
		c.controlLocked(wire.TypePing, c.startEncoding(), wire.PingPayload{Nonce: c.nonce})
		s.mu.Unlock()
	}
	var batch []wItem
	goodbyeWritten, goodbyeFlushed := false, false
	for {
		s.mu.Lock()
		batch, c.out = c.out, batch[:0]
		ack, sendAck := c.ackSent, c.ackDue
		c.ackDue = false
		s.mu.Unlock()
		if sendAck && !goodbyeWritten {
			payload, _ := wire.Marshal(c.startEncoding(), wire.AckPayload{Seq: ack})
			if _, err := bw.Write(wire.AppendFrame(nil, wire.TypeAck, c.startEncoding(), payload)); err != nil {
				c.failWrite(err)
				return
			}
		}
		for i := range batch {
			if !goodbyeWritten {
				if _, err := bw.Write(batch[i].frame); err != nil {
					c.failWrite(err)
					return
				}
				goodbyeWritten = batch[i].goodbye
			}
			batch[i] = wItem{}
		}
		if len(batch) > 0 || sendAck {
			select {
			case <-tick.C:
				ping()
			default:
			}
			continue
		}
		if bw.Buffered() > 0 {
			if err := bw.Flush(); err != nil {
				c.failWrite(err)
				return
			}
			if goodbyeWritten && !goodbyeFlushed {
				goodbyeFlushed = true
				s.mu.Lock()
				c.goodbyeSent = true
				await := !c.goodbyeRecv
				s.mu.Unlock()
				if await {
					c.awaitGoodbye.Store(true)
					c.setReadLinger()
				}
			}
			continue
		}
		s.mu.Lock()
		exchanged := c.goodbyeSent && c.goodbyeRecv
		if exchanged {
			c.writerGone = true
		}
		s.mu.Unlock()
		if exchanged {
			if err := c.tc.CloseWrite(); err != nil {
				s.log.Debug("close_notify", "err", err)
			}
			c.setReadLinger() // read until EOF or the linger timeout
			return
		}
		select {
		case <-c.wake:
		case <-tick.C:
			ping()
		case <-c.readerDone:
			return
		}
	}
}

// failWrite records a write error and closes the socket so the reader
// stops too. Nothing is lost: unacknowledged packets stay in the resume
// buffer.
func (c *rconn) failWrite(err error) {
	c.s.log.Debug("write failed", "err", err)
	c.s.mu.Lock()
	c.writeErr, c.writerGone = err, true
	c.s.mu.Unlock()
	_ = c.raw.Close()
}

package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/tlsgate/tlsgate/wire"
)

// Errors of the resumable mode.
var (
	// ErrResumeUnsupported: the server did not select the ALPN protocol
	// wire.ALPNResume, so it cannot resume sessions.
	ErrResumeUnsupported = errors.New("client: the server does not support resume (ALPN " + wire.ALPNResume + " not selected)")
	// ErrResumeBufferFull: with WithFailWhenFull, the packet did not fit
	// the resume buffer; SendAsync always fails this way rather than wait.
	ErrResumeBufferFull = errors.New("client: resume buffer full")
	// ErrGap is wrapped by a *GapError.
	ErrGap = errors.New("client: resume gap")
	// ErrResumeProtocol: the server broke the resume extension's rules
	// (an Ack or Resumed beyond what was sent, a foreign epoch...). The
	// session ends: resuming it could not be trusted.
	ErrResumeProtocol = errors.New("client: resume protocol violation")
	// ErrUnacknowledged: Close exchanged Goodbyes but some packets were
	// never acknowledged.
	ErrUnacknowledged = errors.New("client: packets left unacknowledged")
)

// GapError reports that the server could not resume the session: it
// started a new epoch, so server Data not yet received by the client may
// be lost, and the client resent, renumbered, packets the server may
// already have processed. It is returned by Sync and by the SendAsync
// channels of those packets, once the new epoch has acknowledged them.
type GapError struct {
	PrevEpoch string // the epoch the client asked to resume
	Epoch     string // the server's new epoch
	Resent    int    // packets resent that the server may already have had
}

func (e *GapError) Error() string {
	return fmt.Sprintf("client: resume gap: the server started epoch %q instead of resuming %q; %d packets resent may be duplicates, and server data may be lost", e.Epoch, e.PrevEpoch, e.Resent)
}

// Unwrap returns ErrGap.
func (e *GapError) Unwrap() error { return ErrGap }

// ResumeEventKind tells what a ResumeEvent reports.
type ResumeEventKind int

// Kinds of ResumeEvent.
const (
	// EventLost: the connection ended without a Goodbye (Cause says how);
	// the Resumable reconnects.
	EventLost ResumeEventKind = iota + 1
	// EventReconnectFailed: reconnect attempt Attempt failed with Cause;
	// another follows after the backoff.
	EventReconnectFailed
	// EventResumed: a connection is up (Attempt 0 for the first one) and
	// the server answered Resumed: Resumed, Epoch, PeerSeq, Resent.
	EventResumed
	// EventGap: the server could not resume PrevEpoch and started Epoch;
	// Duplicates of the packets resent may have been processed already,
	// and server data may be lost. It follows the EventResumed.
	EventGap
)

func (k ResumeEventKind) String() string {
	switch k {
	case EventLost:
		return "lost"
	case EventReconnectFailed:
		return "reconnect_failed"
	case EventResumed:
		return "resumed"
	case EventGap:
		return "gap"
	default:
		return fmt.Sprintf("ResumeEventKind(%d)", int(k))
	}
}

// ResumeEvent is a change of a Resumable's connection, see
// WithResumeEvents.
type ResumeEvent struct {
	Kind    ResumeEventKind
	Attempt int   // reconnect attempt, from 1 after each loss; 0 for the first connection
	Cause   error // EventLost, EventReconnectFailed
	// EventResumed and EventGap:
	Resumed    bool   // the server resumed the epoch with nothing missing
	Epoch      string // the epoch now in force
	PrevEpoch  string // the epoch the client asked for ("" at first)
	PeerSeq    uint64 // the last client Data the server had accepted
	Resent     int    // client packets resent on the new connection
	Duplicates int    // EventGap: resent packets the server may already have had
}

// ResumeStats are a Resumable's counters.
type ResumeStats struct {
	Reconnects        uint64 // connections after the first
	Resent            uint64 // client packets resent after a reconnect
	DuplicatesDropped uint64 // server Data received again after a resume, dropped
	GapResent         uint64 // packets resent into a new epoch after being sent
	Gaps              uint64
	Unacked           int // packets in the resume buffer
	UnackedBytes      int
}

// Resumable is a session with a gateway that survives lost connections:
// it reconnects with backoff and resumes, so that every packet is
// processed exactly once and in order in both directions, across
// connections, for as long as the server keeps the detached session (its
// resume window, 2 minutes by default). It is safe for concurrent use.
//
// Data and application Error packets given to Send or SendAsync are kept
// in the resume buffer, with their numbers, until the server acknowledges
// them (its backend processed them); after a reconnect the ones the server
// had not accepted are resent in order. Received Data packets are
// acknowledged once the application has consumed them (returned by Recv,
// or the handler returned), and ones received again after a resume are
// dropped.
//
// The session ends with a Goodbye from either side (Close, or the
// server's, for example session_taken_over: it is never resumed), a forced
// Close, or a permanent failure (ErrResumeUnsupported, a fingerprint
// mismatch, ErrResumeProtocol). A connection that ends otherwise (EOF,
// reset, read or write error, or the keepalive timing out) is lost, and
// the Resumable reconnects, forever until Close.
//
// If the server cannot resume (its window expired, it restarted), it
// starts a new epoch: the client resends every unacknowledged packet,
// renumbered, and reports the gap (EventGap, and a *GapError from Sync and
// SendAsync), never as success.
type Resumable struct {
	cfg    config
	rc     resumeConfig
	log    *slog.Logger
	addr   string
	key    ed25519.PrivateKey
	tlsCfg *tls.Config

	ctx    context.Context // canceled by force: bounds reconnects
	cancel context.CancelFunc

	recvReady chan struct{} // cap 1: the receive queue has items
	recvSpace chan struct{} // cap 1: the receive queue has room
	room      chan struct{} // cap 1: the resume buffer has room
	forceCh   chan struct{} // closed by force
	done      chan struct{} // closed when the session is over

	id          uint64
	fingerprint string

	mu          sync.Mutex
	epoch       string
	out         outBuffer
	inSeq       uint64 // last server Data consumed by the application, this epoch
	inRecv      uint64 // last server Data received (queued), this epoch
	gen         uint64 // counts epochs, to tell queued packets of an old one
	recvQ       []rItem
	cur         *rconn // the live connection, nil while reconnecting
	last        *rconn // the last connection, for the final outcome
	syncs       []*syncWaiter
	flushSeq    uint64
	closeCalled bool
	sendErr     error // non-nil once sends are refused
	forced      bool
	forceErr    error
	fatal       error // a permanent failure: the session ends
	ended       bool
	err         *CloseError
	unackedEnd  int       // packets left unacknowledged at the end
	lastGap     *GapError // the gap that started the epoch in force, if any
	stats       ResumeStats
}

type rItem struct {
	pkt    Packet
	num    uint64 // Data's number, 0 for a server Error
	gen    uint64
	marker *rconn // a server Flush received on that connection
	seq    uint64 // the Flush's seq
	enc    wire.Encoding
}

type syncWaiter struct {
	target uint64
	ch     chan error
	gap    *GapError
}

// DialResumable connects to the gateway at addr in resumable mode and
// starts a session: the TLS handshake offers wire.ALPNResume (a server
// that does not select it fails with ErrResumeUnsupported), then the v1
// handshake, then the Resume exchange. ctx bounds this first connection
// only; reconnects are bounded by WithReconnectTimeout.
//
// Every Dial option applies, plus WithResumeBuffer, WithFailWhenFull,
// WithBackoff, WithKeepalive, WithReconnectTimeout and WithResumeEvents.
func DialResumable(ctx context.Context, addr string, key ed25519.PrivateKey, opts ...Option) (*Resumable, error) {
	cfg, tlsCfg, err := prepareDial(key, opts)
	if err != nil {
		return nil, err
	}
	if err := cfg.resume.validate(); err != nil {
		return nil, err
	}
	tlsCfg.NextProtos = append([]string{wire.ALPNResume}, tlsCfg.NextProtos...)
	s := &Resumable{
		cfg:       cfg,
		rc:        cfg.resume,
		log:       cfg.logger,
		addr:      addr,
		key:       key,
		tlsCfg:    tlsCfg,
		recvReady: make(chan struct{}, 1),
		recvSpace: make(chan struct{}, 1),
		room:      make(chan struct{}, 1),
		forceCh:   make(chan struct{}),
		done:      make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	c, ev, err := s.connect(ctx)
	if err != nil {
		s.cancel()
		return nil, err
	}
	s.log = s.log.With("session", s.id)
	go s.run(c, ev)
	return s, nil
}

// ID returns the session ID.
func (s *Resumable) ID() uint64 { return s.id }

// ServerFingerprint returns the hex SHA-256 of the server's leaf
// certificate seen on the first connection.
func (s *Resumable) ServerFingerprint() string { return s.fingerprint }

// Epoch returns the epoch in force.
func (s *Resumable) Epoch() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// Stats returns the counters.
func (s *Resumable) Stats() ResumeStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Unacked, st.UnackedBytes = len(s.out.pkts), s.out.bytes
	return st
}

// Done is closed when the session is over.
func (s *Resumable) Done() <-chan struct{} { return s.done }

// Err returns nil before Done is closed, then a *CloseError telling why
// the session ended (Outcome lost, with the cause, for a permanent
// failure).
func (s *Resumable) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Send puts p in the resume buffer, to be sent now or after the next
// reconnect, and returns: nil means the packet will reach the server
// unless the session ends first (see SendAsync to learn when it was
// processed, Sync to wait for it). When the buffer is full, Send waits for
// acknowledgements to free room, or fails with ErrResumeBufferFull under
// WithFailWhenFull. It fails once Close was called, the server said
// Goodbye or the session is over. The payload is copied.
func (s *Resumable) Send(ctx context.Context, p Packet) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.enqueue(ctx, p, nil, true)
}

// SendAsync puts p in the resume buffer without waiting, and returns a
// channel that receives nil once the server has acknowledged p (processed
// it end to end), a *GapError if it was acknowledged after a gap (it may
// have been processed twice), or the error that prevented it: the session
// ended first, or ErrResumeBufferFull at once if p did not fit. The server
// may acknowledge only when asked: Sync does, and so does the client on
// its own past half the buffer.
func (s *Resumable) SendAsync(p Packet) <-chan error {
	ch := make(chan error, 1)
	if err := s.enqueue(context.Background(), p, ch, false); err != nil {
		ch <- err
	}
	return ch
}

func (s *Resumable) enqueue(ctx context.Context, p Packet, done chan<- error, wait bool) error {
	if err := p.validate(); err != nil {
		return err
	}
	frame := p.frame()
	s.mu.Lock()
	for {
		if err := s.refusedLocked(); err != nil {
			s.mu.Unlock()
			return err
		}
		if s.out.fits(len(frame), s.rc.buffer) {
			break
		}
		if !wait || s.rc.failWhenFull {
			s.mu.Unlock()
			return fmt.Errorf("%w: %d of %d bytes unacknowledged", ErrResumeBufferFull, s.out.bytes, s.rc.buffer)
		}
		if c := s.cur; c != nil {
			s.autoFlushLocked(c)
		}
		s.mu.Unlock()
		select {
		case <-s.room:
		case <-s.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		s.mu.Lock()
	}
	s.out.push(frame, done)
	if c := s.cur; c != nil {
		pk := &s.out.pkts[len(s.out.pkts)-1]
		pk.sent = true
		c.queueLocked(wItem{frame: frame})
		s.autoFlushLocked(c)
	}
	more := s.out.fits(0, s.rc.buffer) && s.out.bytes < s.rc.buffer
	s.mu.Unlock()
	if more {
		signal(s.room) // for another waiting Send
	}
	return nil
}

func (s *Resumable) refusedLocked() error {
	if s.ended {
		return fmt.Errorf("%w: %w", ErrClosed, s.err)
	}
	return s.sendErr
}

// autoFlushLocked asks the server for acknowledgements once more than half
// the buffer is unacknowledged, with one Flush outstanding at a time.
func (s *Resumable) autoFlushLocked(c *rconn) {
	if s.out.bytes > s.rc.buffer/2 && c.flushOut == 0 {
		s.flushLocked(c)
	}
}

// flushLocked queues a Flush on c.
func (s *Resumable) flushLocked(c *rconn) {
	if c.goodbyeQueued {
		return
	}
	s.flushSeq++
	c.flushOut, c.flushCovers = s.flushSeq, s.out.last
	c.controlLocked(wire.TypeFlush, c.startEncoding(), wire.FlushPayload{Seq: s.flushSeq})
}

// Sync waits until the server has acknowledged every packet sent before
// the call (processed them end to end), asking it with a Flush, across
// reconnects. It returns a *GapError if a gap happened meanwhile: the
// packets were then acknowledged in the new epoch, possibly processed
// twice, and server data may be lost. It fails if the session ends first.
func (s *Resumable) Sync(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return fmt.Errorf("%w: %w", ErrClosed, s.err)
	}
	if s.out.acked >= s.out.last {
		s.mu.Unlock()
		return nil
	}
	w := &syncWaiter{target: s.out.last, ch: make(chan error, 1)}
	s.syncs = append(s.syncs, w)
	if c := s.cur; c != nil && (c.flushOut == 0 || c.flushCovers < w.target) {
		s.flushLocked(c)
	}
	s.mu.Unlock()
	select {
	case err := <-w.ch:
		return err
	case <-ctx.Done():
		s.mu.Lock()
		for i, x := range s.syncs {
			if x == w {
				s.syncs = append(s.syncs[:i], s.syncs[i+1:]...)
				break
			}
		}
		s.mu.Unlock()
		return ctx.Err()
	}
}

// onAckLocked drops the packets the server acknowledged and completes what
// waited for them.
func (s *Resumable) onAckLocked(seq uint64) error {
	freed, ok := s.out.ack(seq)
	if !ok {
		return fmt.Errorf("%w: ack %d beyond the last packet sent, %d", ErrResumeProtocol, seq, s.out.last)
	}
	for _, p := range freed {
		if p.done != nil {
			if p.dup {
				p.done <- s.gapErrLocked()
			} else {
				p.done <- nil
			}
		}
	}
	if len(freed) > 0 {
		signal(s.room)
	}
	kept := s.syncs[:0]
	for _, w := range s.syncs {
		if w.target > s.out.acked {
			kept = append(kept, w)
			continue
		}
		if w.gap != nil {
			w.ch <- w.gap
		} else {
			w.ch <- nil
		}
	}
	clear(s.syncs[len(kept):])
	s.syncs = kept
	return nil
}

// gapErrLocked is the gap that started the epoch in force, for the
// possible duplicates acknowledged in it.
func (s *Resumable) gapErrLocked() error {
	if s.lastGap == nil {
		return ErrGap
	}
	g := *s.lastGap
	return &g
}

// Recv returns the next received Data or Error packet, in order, exactly
// once across reconnects (Error packets from the server are not numbered:
// one written on a lost connection is not resent). Returning a Data packet
// counts it as processed: it is acknowledged to the server, which then
// forgets it. Once the session is over and every buffered packet is
// consumed, it returns an error wrapping ErrClosed and the *CloseError.
func (s *Resumable) Recv(ctx context.Context) (Packet, error) {
	if s.cfg.handler != nil {
		return Packet{}, ErrHandlerSet
	}
	for {
		s.mu.Lock()
		p, got, popped := s.popLocked()
		more := len(s.recvQ) > 0
		ended := s.ended
		s.mu.Unlock()
		if popped {
			signal(s.recvSpace)
		}
		if got {
			if more {
				signal(s.recvReady)
			}
			return p, nil
		}
		if ended && !more {
			return Packet{}, fmt.Errorf("%w: %w", ErrClosed, s.err)
		}
		select {
		case <-s.recvReady:
		case <-s.done:
		case <-ctx.Done():
			return Packet{}, ctx.Err()
		}
	}
}

// popLocked pops the next packet and the Flush markers that follow it.
func (s *Resumable) popLocked() (p Packet, got, popped bool) {
	for len(s.recvQ) > 0 {
		it := s.recvQ[0]
		if it.marker == nil && got {
			break
		}
		s.recvQ[0] = rItem{}
		s.recvQ = s.recvQ[1:]
		popped = true
		if it.marker != nil {
			if it.marker == s.cur {
				s.answerFlushLocked(it.marker, it.seq, it.enc)
			}
			continue
		}
		p, got = it.pkt, true
		if it.num > 0 && it.gen == s.gen {
			s.inSeq = it.num
		}
	}
	if got && s.cur != nil {
		s.maybeAckLocked(s.cur, len(s.recvQ) == 0)
	}
	if len(s.recvQ) == 0 {
		s.recvQ = nil
	}
	return p, got, popped
}

// maybeAckLocked acknowledges the server's Data consumed so far when the
// receive side is drained, or every ackEvery packets.
func (s *Resumable) maybeAckLocked(c *rconn, drained bool) {
	if s.inSeq <= c.ackSent || c.gen != s.gen {
		return
	}
	if drained || s.inSeq-c.ackSent >= ackEvery {
		c.ackSent = s.inSeq
		c.ackDue = true
		signal(c.wake)
	}
}

// ackEvery bounds how many consumed packets wait for an Ack.
const ackEvery = 64

// answerFlushLocked answers a server Flush once everything before it is
// consumed: Ack first, then FlushAck.
func (s *Resumable) answerFlushLocked(c *rconn, seq uint64, enc wire.Encoding) {
	if c.gen == s.gen {
		c.ackSent = s.inSeq
		c.ackDue = false
		c.controlLocked(wire.TypeAck, enc, wire.AckPayload{Seq: s.inSeq})
	}
	c.controlLocked(wire.TypeFlushAck, enc, wire.FlushPayload{Seq: seq})
}

// Close ends the session losslessly: it refuses new sends, has every
// packet in the resume buffer written (reconnecting if need be), asks for
// their acknowledgement, sends Goodbye, keeps delivering received packets
// until the server's Goodbye, then closes the connection. Keep calling
// Recv meanwhile.
//
// It returns nil only if the Goodbyes were exchanged and every packet was
// acknowledged; else the *CloseError, or an error wrapping
// ErrUnacknowledged. If ctx ends first, the connection is closed at once
// and the error wraps ctx's error. A later call returns the same result.
func (s *Resumable) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.closeCalled {
		s.closeCalled = true
		if s.sendErr == nil {
			s.sendErr = ErrClosing
		}
		if c := s.cur; c != nil {
			s.queueCloseLocked(c)
		}
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-ctx.Done():
		s.force(ctx.Err())
		<-s.done
	}
	if s.err.Outcome != OutcomeClean {
		return s.err
	}
	if s.unackedEnd > 0 {
		return fmt.Errorf("%w: %d packets after a clean Goodbye exchange", ErrUnacknowledged, s.unackedEnd)
	}
	return nil
}

// queueCloseLocked queues a Flush, if anything is unacknowledged, then
// Goodbye on c.
func (s *Resumable) queueCloseLocked(c *rconn) {
	if c.goodbyeQueued {
		return
	}
	if len(s.out.pkts) > 0 {
		s.flushLocked(c)
	}
	c.queueGoodbyeLocked(c.startEncoding())
}

// force closes the live connection at once and stops reconnecting.
func (s *Resumable) force(err error) {
	s.mu.Lock()
	if s.forced || s.ended {
		s.mu.Unlock()
		return
	}
	s.forced, s.forceErr = true, err
	c := s.cur
	s.mu.Unlock()
	close(s.forceCh)
	s.cancel()
	if c != nil {
		_ = c.raw.Close()
	}
}

// Unacked returns the packets in the resume buffer, in order: sent or
// not, the server has not acknowledged them. After a session ended by a
// Goodbye (a takeover, a shutdown) they are the ones it may not have
// processed, for the application to send again on a new session if it
// wants to.
func (s *Resumable) Unacked() []Packet {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := make([]Packet, 0, len(s.out.pkts))
	for _, p := range s.out.pkts {
		f := p.frame
		ps = append(ps, Packet{Type: wire.Type(f[1] & 0x3f), Encoding: wire.Encoding(f[1] >> 6), Payload: bytes.Clone(f[wire.HeaderLen:])})
	}
	return ps
}

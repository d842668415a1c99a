package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// Errors of Session's methods.
var (
	ErrPayloadTooLarge = errors.New("server: payload over the frame maximum")
	ErrBadEncoding     = errors.New("server: encoding is reserved")
	// errReplyAfterGoodbye: a reply produced after this side's Goodbye was
	// queued; it is dropped and counted.
	errReplyAfterGoodbye = errors.New("server: reply after goodbye")
)

// Session is one client identity. It outlives a connection when another
// connection with the same key takes it over, and its outbound queue moves
// with it.
type Session struct {
	srv *Server
	id  uint64
	pub ed25519.PublicKey
	q   queue

	// cur is the connection whose packets are processed; it changes at a
	// takeover. inbound serialises processing across the old and the new
	// connection so that the old one's packets are handled first.
	cur       atomic.Pointer[conn]
	inbound   sync.Mutex
	inSeq     uint64 // last inbound sequence number; guarded by inbound
	takeovers atomic.Uint64
	// Resumable sessions, written under inbound (atomic for Info): the
	// last client Data processed in the epoch, and the last the server
	// acked.
	inEpoch, inAcked atomic.Uint64
	// detached is set while the session waits for a Resume; guarded by
	// the server's mu. detachedSince mirrors it for Info (unix ns, 0: no).
	detached      *detached
	detachedSince atomic.Int64
	// handlerHeld is what Handlers hold for the session (ChargeMemory).
	handlerHeld atomic.Int64
}

// ID returns the session ID derived from the public key.
func (s *Session) ID() uint64 { return s.id }

// Connected reports whether the session still has a connection. A session
// ends with its last connection; a takeover moves it to the next one.
func (s *Session) Connected() bool { return s.cur.Load() != nil }

// PublicKey returns the client's Ed25519 public key.
func (s *Session) PublicKey() ed25519.PublicKey { return s.pub }

func (s *Session) checkPacket(typ wire.Type, enc wire.Encoding, payload []byte) error {
	if !enc.Valid() {
		return fmt.Errorf("%w: %d", ErrBadEncoding, enc)
	}
	if len(payload) > s.srv.cfg.MaxPayload {
		return fmt.Errorf("%w: %d bytes, maximum %d", ErrPayloadTooLarge, len(payload), s.srv.cfg.MaxPayload)
	}
	if typ != wire.TypeData && typ != wire.TypeError {
		return fmt.Errorf("server: only Data and Error packets can be sent, not %s", typ)
	}
	return nil
}

// Enqueued describes a packet accepted by SendAsync.
type Enqueued struct {
	// Seq is the packet's number among the session's outbound Data, from 1;
	// replies count, Flush barriers and other control frames do not. For
	// a resumable session it is the number the client counts the packet by
	// in the epoch (docs/protocol.md §15), and a new epoch renumbers what
	// is still queued.
	Seq uint64
	// Depth is the queue length right after the enqueue.
	Depth int
}

// SendAsync queues one Data packet and returns at once. It queues payload
// itself, not a copy: the payload must not be modified afterwards, so a
// Handler forwarding a Packet's borrowed Payload copies it first
// (bytes.Clone). Errors: ErrQueueFull, ErrClosing, ErrClosed,
// ErrPayloadTooLarge, ErrBadEncoding.
func (s *Session) SendAsync(enc wire.Encoding, payload []byte) (Enqueued, error) {
	if err := s.checkPacket(wire.TypeData, enc, payload); err != nil {
		return Enqueued{}, err
	}
	seq, depth, err := s.q.enqueue(entry{typ: wire.TypeData, enc: enc, payload: payload})
	if errors.Is(err, ErrQueueFull) {
		s.srv.counters.sendRejected.Add(1)
	}
	return Enqueued{Seq: seq, Depth: depth}, err
}

// SendWait is SendAsync that, when the queue is full, waits for room
// while ctx allows instead of failing with ErrQueueFull, so that a
// producer is slowed to the pace of the client's reads. Its errors are
// SendAsync's, except ErrQueueFull, and ctx's error.
func (s *Session) SendWait(ctx context.Context, enc wire.Encoding, payload []byte) (Enqueued, error) {
	if err := s.checkPacket(wire.TypeData, enc, payload); err != nil {
		return Enqueued{}, err
	}
	seq, depth, err := s.q.enqueueWait(ctx, entry{typ: wire.TypeData, enc: enc, payload: payload})
	return Enqueued{Seq: seq, Depth: depth}, err
}

// Reply queues a packet answering the peer from within a Handler, waiting
// for queue space while ctx allows. It queues a copy of payload, so a
// handler may reply with (part of) the packet's borrowed payload. A reply
// produced after the server's Goodbye is dropped and counted, as the
// protocol requires.
func (s *Session) Reply(ctx context.Context, typ wire.Type, enc wire.Encoding, payload []byte) error {
	if err := s.checkPacket(typ, enc, payload); err != nil {
		return err
	}
	err := s.q.enqueueReply(ctx, entry{typ: typ, enc: enc, payload: bytes.Clone(payload)})
	if errors.Is(err, errReplyAfterGoodbye) {
		if c := s.cur.Load(); c != nil {
			c.stats.repliesDropped.Add(1)
		}
		return nil
	}
	return err
}

// DrainResult reports a completed (or interrupted) Drain. Its numbers are
// packet numbers, as Enqueued.Seq.
type DrainResult struct {
	// Target is the number Drain waited for: the last Data accepted before
	// the call.
	Target uint64
	// Seq: every Data through this number is written and flushed.
	Seq uint64
	// Acked: with ack, the client acknowledged the barrier, proving it
	// processed everything through Target.
	Acked   bool
	Elapsed time.Duration
}

// Drain returns once every packet queued before the call is written to the
// connection and flushed. With ack it then waits for the client's proof
// that it processed them: for a resumable session, its Ack of the last
// one (Drain sends a Flush to ask for it, and waits across reconnects;
// ErrNewEpoch if the client comes back in a new epoch first), otherwise
// its FlushAck of a Flush barrier. On ctx's end it returns how far it got
// with ctx's error.
func (s *Session) Drain(ctx context.Context, ack bool) (DrainResult, error) {
	start := time.Now()
	pos, num, epoch := s.q.last()
	res := DrainResult{Target: num}
	var err error
	res.Seq, err = s.q.waitWritten(ctx, pos)
	switch {
	case err != nil || !ack:
	case epoch != "":
		if c := s.cur.Load(); c != nil {
			c.askAck(ctx)
		}
		if err = s.q.waitAcked(ctx, epoch, num); err == nil {
			res.Acked = true
		}
	default:
		if c := s.cur.Load(); c == nil {
			err = ErrClosed
		} else if err = c.barrier(ctx); err == nil {
			res.Acked = true
		}
	}
	res.Elapsed = time.Since(start)
	if o := s.srv.cfg.Observer; o != nil {
		o.Drain(res.Elapsed, ack, err)
	}
	return res, err
}

// Close closes the session's connection and returns its final state once
// it has ended. By default the close is graceful: new sends are refused,
// what is queued is written, then Goodbye is exchanged with the client,
// bounded by the drain and linger timeouts. With o.Force, or when ctx ends
// first, it closes at once.
//
// A detached session (resumable, its connection lost) has no connection to
// close: Close ends it at once, and CloseInfo.Ended counts what it dropped.
//
// The session's own Handler must not call Close: the connection cannot end
// while its handler runs. It calls StartClose.
func (s *Session) Close(ctx context.Context, o CloseOptions) (CloseInfo, error) {
	start := time.Now()
	c, err := s.startClose(o)
	if errors.Is(err, ErrClosed) {
		if e, ok := s.srv.expireNow(s, EndDisconnect); ok {
			return CloseInfo{SessionID: s.id, Outcome: OutcomeForced, Ended: &e}, nil
		}
		c, err = s.startClose(o) // a Resume may have taken it meanwhile
	}
	if err != nil {
		return CloseInfo{}, err
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		c.abort(OutcomeForced)
		<-c.done
	}
	info := c.closeInfo()
	if obs := s.srv.cfg.Observer; obs != nil {
		obs.Close(time.Since(start), info.Outcome)
	}
	return info, nil
}

// StartClose starts closing the session's connection as Close does, and
// returns at once without waiting for the connection to end. It is how a
// Handler closes its own session: the Goodbye is queued at once, behind the
// replies already queued, and the connection ends after Handle returns
// (the Handler's ctx ends with it). It returns ErrClosed if the session
// has no connection.
func (s *Session) StartClose(o CloseOptions) error {
	_, err := s.startClose(o)
	return err
}

// startClose starts the close of the current connection and returns it.
func (s *Session) startClose(o CloseOptions) (*conn, error) {
	c := s.cur.Load()
	if c == nil {
		return nil, ErrClosed
	}
	if o.Force {
		c.abort(OutcomeForced)
	} else {
		c.startClose(o)
	}
	return c, nil
}

// Info returns a snapshot of the session and its current connection.
func (s *Session) Info() SessionInfo {
	info := SessionInfo{ID: s.id, PublicKey: s.pub, Takeovers: s.takeovers.Load()}
	info.QueueLen, info.QueueBytes = s.q.depth()
	info.QueueLimit = s.q.limit
	s.q.mu.Lock()
	info.MemoryBytes = s.q.bytes + s.q.held + int(s.handlerHeld.Load())
	if rp := s.q.rp; rp != nil {
		info.MemoryBytes += rp.bytes
		info.Epoch, info.SentSeq, info.AckedSeq, info.UnackedBytes = rp.epoch, rp.sent, rp.acked, rp.bytes
		info.ReceivedSeq, info.ServerAckedSeq = s.inEpoch.Load(), s.inAcked.Load()
	}
	s.q.mu.Unlock()
	if c := s.cur.Load(); c != nil {
		c.fillInfo(&info)
	} else if ns := s.detachedSince.Load(); ns != 0 {
		info.State, info.DetachedSince = StateDetached, time.Unix(0, ns)
		info.ExpiresAt = info.DetachedSince.Add(s.srv.cfg.ResumeWindow)
	}
	return info
}

// QueueDepth returns what the session's outbound queue holds: packets, and
// the bytes its bound counts (see Config.QueueBytes). It is Info's QueueLen and QueueBytes without the rest, for
// callers that sum it over every session (a metrics scrape).
func (s *Session) QueueDepth() (packets, bytes int) { return s.q.depth() }

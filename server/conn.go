package server

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// conn is one authenticated connection of a session. It has exactly two
// goroutines: the reader (the goroutine that accepted it), which reads and
// processes inbound packets in order, and the writer, which owns every
// write. Producers only enqueue on the session's queue.
type conn struct {
	srv  *Server
	id   uint64
	sess *Session
	nc   net.Conn
	tc   *tls.Conn
	// br is the reader's buffer, which follows the traffic (small while
	// idle); the writer has none of its own between batches (writer.go).
	br     *wire.ReadBuffer
	log    *slog.Logger
	remote string

	connectedAt time.Time
	tlsVersion  uint16
	cipher      uint16

	// ctx ends when the connection is aborted or has ended; handlers and
	// blocked replies watch it.
	ctx    context.Context
	cancel context.CancelFunc

	wake       chan struct{} // writer wake-up, capacity 1
	gotGoodbye chan struct{} // closed when the peer's Goodbye arrives
	closing    chan struct{} // closed when a close starts (state leaves active)
	readerDone chan struct{} // closed when the reader has stopped reading
	writerDone chan struct{}
	done       chan struct{} // closed once the connection has fully ended

	lastEnc      atomic.Uint32 // encoding of the last frame received
	lastActivity atomic.Int64  // unix nanoseconds of the last frame received
	// processing is set while the reader is processing a packet (in the
	// Handler, say): it reads nothing then, so the client is not idle.
	processing atomic.Bool
	// The resume extension (resume.go). resumable: the client negotiated
	// ALPN wire.ALPNResume. gate is closed once the reader has answered
	// the first frame, with resumedFrame (the Resumed payload, nil if the
	// Resume failed) for the writer to write first. resumedOK, set by the
	// reader, means the Resume succeeded. replayNext, under the queue's
	// mu, is the next delivery number this connection's writer writes.
	resumable    bool
	gate         chan struct{}
	resumedFrame []byte
	resumedEnc   wire.Encoding
	resumedOK    atomic.Bool
	replayNext   uint64

	// held is the cost of the batch this connection's writer has taken
	// from the queue and not yet written; under the queue's mu. overAcked
	// tells the writer that its client leaves too much unacked (resume.go's
	// unackedCap); only the writer's own take sets it, so it needs no lock.
	held      int
	overAcked bool

	// slipLogged: a peer's protocol slip was logged at warn; the reader,
	// which alone logs them, logs the rest at debug (see peerSlip).
	slipLogged bool

	// Watchdog state: see watchdog.go.
	watchdog      *time.Timer
	flushingSince atomic.Int64 // unix nanoseconds; 0 when no flush is under way
	pingSentAt    atomic.Int64 // unix nanoseconds of the last Ping; 0 before any
	pingNonce     uint64       // owned by the watchdog
	// lingerCap, once this side's Goodbye is written, is the latest the
	// reader may extend its linger deadline to (unix nanoseconds).
	lingerCap atomic.Int64
	stats     stats
	in, out   traffic // by packet type

	mu sync.Mutex
	// state is the connection's stage; a close has started once it is
	// past StateActive. See State for the transitions.
	state                       State
	code, reason                string // of the Goodbye this side sends
	goodbyeSent                 bool
	goodbyeRecv                 bool
	peerCode                    string
	outcome                     Outcome // set when aborted or timed out; else derived at the end
	truncated                   bool
	readDeadline, writeDeadline time.Time
	flushSeq                    uint64
	flushWaiters                map[uint64]chan error
	lastFlushAck                uint64
	final                       CloseInfo
}

// stats are updated by the reader and the writer, read by anyone.
type stats struct {
	discarded, repliesDropped, badControl atomic.Uint64
	unwritten                             atomic.Uint64
}

// counters returns the connection's counters.
func (c *conn) counters() Counters {
	st := Counters{
		Discarded: c.stats.discarded.Load(), RepliesDropped: c.stats.repliesDropped.Load(),
		Unwritten: c.stats.unwritten.Load(),
	}
	st.PacketsIn, st.BytesIn = c.in.totals()
	st.PacketsOut, st.BytesOut = c.out.totals()
	return st
}

func (c *conn) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// leaveActive moves the connection to s, a closing state, and tells the
// handler (Packet.Closing) if it was active. Call with c.mu held.
func (c *conn) leaveActive(s State) {
	if c.state == StateActive {
		close(c.closing)
	}
	c.state = s
}

func (c *conn) setState(s State) {
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
}

// encoding returns the encoding for packets this side starts: that of the
// last frame received, JSON before any.
func (c *conn) encoding() wire.Encoding { return wire.Encoding(c.lastEnc.Load()) }

// CloseOptions say how to close a session.
type CloseOptions struct {
	// Code is the Goodbye code. Default "admin".
	Code string
	// Reason is the Goodbye reason, free text.
	Reason string
	// Reconnect is the Goodbye's reconnect advice. Default: the code's own
	// (wire.GoodbyeReconnect).
	Reconnect *bool
	// DrainTimeout bounds how long the queue may take to be written before
	// the close is forced. Default Config.DrainTimeout.
	DrainTimeout time.Duration
	// Force closes at once, without draining or Goodbye.
	Force bool
}

// goodbye is this side's Goodbye for a close.
func (o CloseOptions) goodbye() wire.GoodbyePayload {
	code := o.Code
	if code == "" {
		code = wire.GoodbyeAdmin
	}
	reconnect := wire.GoodbyeReconnect(code)
	if o.Reconnect != nil {
		reconnect = *o.Reconnect
	}
	return wire.GoodbyePayload{Code: code, Reason: o.Reason, Reconnect: reconnect}
}

// startClose begins a graceful close: new sends are refused, and a Goodbye
// is queued behind everything already queued, in the encoding of the last
// frame received. The writer's progress is bounded by the drain timeout.
// It does nothing if a close has started, or if c has lost its session to
// a takeover (its writer then says goodbye).
func (c *conn) startClose(o CloseOptions) {
	c.startCloseIn(o.goodbye(), c.encoding(), o.DrainTimeout)
}

func (c *conn) startCloseIn(gb wire.GoodbyePayload, enc wire.Encoding, drain time.Duration) {
	c.mu.Lock()
	if c.state != StateActive || c.ctx.Err() != nil { // started, or aborted
		c.mu.Unlock()
		return
	}
	c.leaveActive(StateDraining)
	c.code, c.reason = gb.Code, gb.Reason
	c.mu.Unlock()
	payload, _ := wire.Marshal(enc, gb)
	if drain <= 0 {
		drain = c.srv.cfg.DrainTimeout
	}
	// Bound the drain first: a takeover racing the seal may only shorten it.
	c.shortenWriteDeadline(time.Now().Add(drain))
	if !c.sess.q.seal(c, entry{typ: wire.TypeGoodbye, enc: enc, payload: payload, only: c}) {
		return
	}
	c.log.Debug("closing", "code", gb.Code, "reason", gb.Reason)
}

// shortenReadDeadline, shortenWriteDeadline and shortenDeadlines set a
// socket deadline unless an earlier one is already set: every bound on a
// closing connection only ever tightens.
func (c *conn) shortenReadDeadline(t time.Time) {
	c.shorten(&c.readDeadline, t, c.nc.SetReadDeadline)
}

func (c *conn) shortenWriteDeadline(t time.Time) {
	c.shorten(&c.writeDeadline, t, c.nc.SetWriteDeadline)
}

func (c *conn) shortenDeadlines(t time.Time) {
	c.shortenReadDeadline(t)
	c.shortenWriteDeadline(t)
}

// shorten moves *cur, and the socket with set, to t if t is earlier.
func (c *conn) shorten(cur *time.Time, t time.Time, set func(time.Time) error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur.IsZero() || t.Before(*cur) {
		*cur = t
		_ = set(t)
	}
}

// abort ends the connection at once: handlers and blocked replies are
// cancelled and the socket is closed, which ends both goroutines. The first
// recorded outcome wins.
func (c *conn) abort(o Outcome) {
	c.mu.Lock()
	if c.outcome == "" {
		c.outcome = o
	}
	c.mu.Unlock()
	c.cancel()
	_ = c.nc.Close()
}

// serve runs the connection after its handshake: it starts the writer,
// reads until the connection ends, then tears it down.
func (c *conn) serve() {
	go c.writeLoop()
	c.startWatchdog()
	c.readLoop()
	close(c.readerDone)
	<-c.writerDone
	c.teardown()
}

func (c *conn) teardown() {
	_ = c.nc.Close()
	c.cancel()
	c.watchdog.Stop()
	unwritten, detached := c.srv.release(c)
	c.stats.unwritten.Add(uint64(unwritten))
	c.failFlushes(ErrClosed)

	c.mu.Lock()
	if c.outcome == "" {
		if c.goodbyeSent && c.goodbyeRecv {
			c.outcome = OutcomeClean
		} else {
			c.outcome = OutcomePeerClosed
		}
	}
	c.state = StateClosed
	c.final = CloseInfo{
		SessionID: c.sess.id, ConnID: c.id,
		Code: c.code, Reason: c.reason, GoodbyeSent: c.goodbyeSent, PeerCode: c.peerCode,
		Outcome: c.outcome, TruncatedFrame: c.truncated,
		Counters: c.counters(),
	}
	info := c.final
	c.mu.Unlock()

	c.log.Info("connection closed", "outcome", info.Outcome, "code", info.Code, "reason", info.Reason, "goodbye_sent", info.GoodbyeSent, "peer_code", info.PeerCode,
		"packets_in", info.PacketsIn, "packets_out", info.PacketsOut, "unwritten", info.Unwritten,
		"truncated_frame", info.TruncatedFrame)
	c.srv.emit(Event{Kind: EventClosed, SessionID: info.SessionID, ConnID: info.ConnID, Close: info})
	if detached {
		c.log.Info("session detached: kept for a Resume", "resume_window", c.srv.cfg.ResumeWindow)
		c.srv.emit(Event{Kind: EventDetached, SessionID: info.SessionID, ConnID: info.ConnID, Session: c.sess.Info()})
	}
	close(c.done)
}

func (c *conn) closeInfo() CloseInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.final
}

func (c *conn) fillInfo(info *SessionInfo) {
	c.mu.Lock()
	info.State = c.state
	info.LastFlushAck = c.lastFlushAck
	c.mu.Unlock()
	info.ConnID = c.id
	info.RemoteAddr = c.remote
	info.TLSVersion, info.Cipher = c.tlsVersion, c.cipher
	info.ConnectedAt = c.connectedAt
	info.LastActivity = time.Unix(0, c.lastActivity.Load())
	info.Counters = c.counters()
}

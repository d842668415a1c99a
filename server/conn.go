package server

import (
	"bufio"
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
	srv    *Server
	id     uint64
	sess   *Session
	nc     net.Conn
	tc     *tls.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
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
	readerDone chan struct{} // closed when the reader has stopped reading
	writerDone chan struct{}
	done       chan struct{} // closed once the connection has fully ended

	lastEnc      atomic.Uint32 // encoding of the last frame received
	lastActivity atomic.Int64  // unix nanoseconds
	stats        stats

	mu           sync.Mutex
	state        State
	closeStarted bool
	code, reason string // of the Goodbye this side sends
	goodbyeSent  bool
	goodbyeRecv  bool
	peerCode     string
	outcome      Outcome // set when aborted or timed out; else derived at the end
	truncated    bool
	flushSeq     uint64
	flushWaiters map[uint64]chan error
	lastFlushAck uint64
	final        CloseInfo
}

// stats are updated by the reader and the writer, read by anyone.
type stats struct {
	packetsIn, bytesIn, packetsOut, bytesOut atomic.Uint64
	discarded, repliesDropped, badControl    atomic.Uint64
}

func (st *stats) snapshot() Counters {
	return Counters{
		PacketsIn: st.packetsIn.Load(), BytesIn: st.bytesIn.Load(),
		PacketsOut: st.packetsOut.Load(), BytesOut: st.bytesOut.Load(),
		Discarded: st.discarded.Load(), RepliesDropped: st.repliesDropped.Load(),
	}
}

func (c *conn) wakeWriter() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) setState(s State) {
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
}

// encoding returns the encoding for packets this side starts: that of the
// last frame received, JSON before any.
func (c *conn) encoding() wire.Encoding { return wire.Encoding(c.lastEnc.Load()) }

// startClose begins a graceful close: new sends are refused, and a Goodbye
// is queued behind everything already queued. The writer's progress is
// bounded by the drain timeout. It does nothing if a close has started, or
// if c has lost its session to a takeover (its writer then says goodbye).
func (c *conn) startClose(code, reason string) { c.startCloseIn(code, reason, c.encoding()) }

func (c *conn) startCloseIn(code, reason string, enc wire.Encoding) {
	c.mu.Lock()
	if c.closeStarted {
		c.mu.Unlock()
		return
	}
	c.closeStarted = true
	c.code, c.reason = code, reason
	if c.state == StateActive {
		c.state = StateDraining
	}
	c.mu.Unlock()
	payload, _ := wire.Marshal(enc, wire.GoodbyePayload{Code: code, Reason: reason, Reconnect: wire.GoodbyeReconnect(code)})
	if !c.sess.q.seal(c, entry{typ: wire.TypeGoodbye, enc: enc, payload: payload, only: c}) {
		return
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.DrainTimeout))
	c.log.Debug("closing", "code", code, "reason", reason)
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

// forceClose closes at once, without draining or Goodbye.
func (c *conn) forceClose(o Outcome) { c.abort(o) }

// serve runs the connection after its handshake: it starts the writer,
// reads until the connection ends, then tears it down.
func (c *conn) serve() {
	go c.writeLoop()
	c.readLoop()
	close(c.readerDone)
	<-c.writerDone
	c.teardown()
}

func (c *conn) teardown() {
	_ = c.nc.Close()
	c.cancel()
	unwritten := c.srv.release(c)
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
		Code: c.code, Reason: c.reason, PeerCode: c.peerCode,
		Outcome: c.outcome, TruncatedFrame: c.truncated,
		Counters: c.stats.snapshot(),
	}
	c.final.Unwritten = uint64(unwritten)
	info := c.final
	c.mu.Unlock()

	c.log.Info("connection closed", "outcome", info.Outcome, "code", info.Code, "peer_code", info.PeerCode,
		"packets_in", info.PacketsIn, "packets_out", info.PacketsOut, "unwritten", info.Unwritten,
		"truncated_frame", info.TruncatedFrame)
	c.srv.emit(Event{Kind: EventClosed, SessionID: info.SessionID, ConnID: info.ConnID, Close: info})
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
	info.Counters = c.stats.snapshot()
}

package client

import (
	"bufio"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// Conn is an authenticated connection to a gateway. It is safe for
// concurrent use.
type Conn struct {
	cfg         config
	log         *slog.Logger
	tc          *tls.Conn
	raw         net.Conn
	br          *bufio.Reader
	fr          *wire.Reader
	id          uint64
	fingerprint string

	wake       chan struct{} // cap 1: the writer has work or state changed
	recvReady  chan struct{} // cap 1: the receive queue has items
	recvSpace  chan struct{} // cap 1: the receive queue has room
	forceCh    chan struct{} // closed by force
	readerDone chan struct{} // closed when the reader stops reading
	writerDone chan struct{} // closed when the writer has exited
	done       chan struct{} // closed when the connection is finished

	// awaitGoodbye is set while our Goodbye is written and the server's is
	// awaited: the reader then restarts the linger timer on every frame.
	awaitGoodbye atomic.Bool
	// lastEnc is the encoding of the last frame received, -1 before any.
	lastEnc atomic.Int32

	mu            sync.Mutex
	out           []outItem // ordered outbound queue
	sendErr       error     // non-nil once application sends are refused
	closeCalled   bool
	goodbyeQueued bool // ours: nothing may be queued after it
	goodbyeSent   bool // ours, flushed to the conn
	goodbyeRecv   bool // the server's
	peerGoodbye   wire.GoodbyePayload
	initiator     Initiator
	readerEnded   bool
	writerGone    bool
	forced        bool
	finished      bool
	readErr       error
	writeErr      error
	brokenErr     error // a framing error: input can no longer be parsed
	forceErr      error
	flushSeq      uint64
	flushWaiters  map[uint64]chan error
	recvQ         []recvItem
	droppedReply  uint64
	err           *CloseError
}

type outItem struct {
	frame   []byte
	done    chan<- error // nil for protocol replies
	goodbye bool
}

type recvItem struct {
	pkt    Packet
	marker bool // a server Flush: acknowledge once everything before it is consumed
	seq    uint64
	enc    wire.Encoding
}

func newConn(tc *tls.Conn, br *bufio.Reader, id uint64, fingerprint string, cfg config) *Conn {
	c := &Conn{
		cfg:          cfg,
		log:          cfg.logger.With("session", id),
		tc:           tc,
		raw:          tc.NetConn(),
		br:           br,
		fr:           wire.NewReader(br, wire.MaxPayload),
		id:           id,
		fingerprint:  fingerprint,
		wake:         make(chan struct{}, 1),
		recvReady:    make(chan struct{}, 1),
		recvSpace:    make(chan struct{}, 1),
		forceCh:      make(chan struct{}),
		readerDone:   make(chan struct{}),
		writerDone:   make(chan struct{}),
		done:         make(chan struct{}),
		flushWaiters: make(map[uint64]chan error),
	}
	c.lastEnc.Store(-1)
	return c
}

// startEncoding is the encoding of packets the client starts (Flush,
// Goodbye): that of the last frame received, or the configured one before any.
func (c *Conn) startEncoding() wire.Encoding {
	if e := c.lastEnc.Load(); e >= 0 {
		return wire.Encoding(e)
	}
	return c.cfg.encoding
}

// ID returns the session ID the server assigned.
func (c *Conn) ID() uint64 { return c.id }

// ServerFingerprint returns the hex SHA-256 of the server's leaf
// certificate, as seen in the TLS handshake.
func (c *Conn) ServerFingerprint() string { return c.fingerprint }

// Done is closed when the connection is fully finished.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns nil before Done is closed, then a *CloseError telling why the
// connection ended.
func (c *Conn) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// signal does a non-blocking send on a cap-1 channel.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// queueLocked appends a frame to the outbound queue and wakes the writer.
func (c *Conn) queueLocked(it outItem) {
	c.out = append(c.out, it)
	signal(c.wake)
}

// replyLocked queues a protocol packet the client owes (a reply or a
// Flush). After our Goodbye, or once the writer is gone, it is dropped.
func (c *Conn) replyLocked(typ wire.Type, enc wire.Encoding, v any) {
	if c.goodbyeQueued || c.writerGone {
		c.droppedReply++
		c.log.Debug("reply dropped after goodbye", "type", typ, "dropped", c.droppedReply)
		return
	}
	payload, err := wire.Marshal(enc, v)
	if err != nil {
		c.log.Error("marshal control payload", "type", typ, "err", err)
		return
	}
	c.queueLocked(outItem{frame: wire.AppendFrame(nil, typ, enc, payload)})
}

// queueGoodbyeLocked queues our Goodbye, after which nothing is queued.
func (c *Conn) queueGoodbyeLocked(enc wire.Encoding) {
	if c.goodbyeQueued || c.writerGone {
		return
	}
	gb := wire.GoodbyePayload{Code: wire.GoodbyeNormal}
	payload, err := wire.Marshal(enc, gb)
	if err != nil {
		c.log.Error("marshal goodbye", "err", err)
		return
	}
	c.goodbyeQueued = true
	c.queueLocked(outItem{frame: wire.AppendFrame(nil, wire.TypeGoodbye, enc, payload), goodbye: true})
}

// failFlushesLocked fails every pending Flush.
func (c *Conn) failFlushesLocked(err error) {
	for seq, ch := range c.flushWaiters {
		ch <- err
		delete(c.flushWaiters, seq)
	}
}

// force closes the socket at once.
func (c *Conn) force(err error) {
	c.mu.Lock()
	if c.forced || c.finished {
		c.mu.Unlock()
		return
	}
	c.forced, c.forceErr = true, err
	c.mu.Unlock()
	close(c.forceCh)
	_ = c.raw.Close()
}

// setReadLinger restarts the linger timer on reads.
func (c *Conn) setReadLinger() {
	_ = c.tc.SetReadDeadline(time.Now().Add(c.cfg.linger))
}

package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

var errShuttingDown = errors.New("server shutting down")

// errIDCollision refuses a key whose session ID is that of a live session
// of another key.
var errIDCollision = errors.New("the session ID belongs to a live session of another key")

// errMemoryFull refuses a new session while the sessions hold MaxMemory.
var errMemoryFull = errors.New("the sessions hold the gateway's memory bound (MaxMemory)")

// handshake runs the TLS handshake and the tlsgate handshake, all within
// the handshake timeout counted from accept, then registers the session.
// On any failure it sends nothing more, closes (close_notify when a TLS
// session exists), logs why and returns the error.
func (s *Server) handshake(nc net.Conn) (*conn, error) {
	start := time.Now()
	remote := nc.RemoteAddr().String()
	log := s.log.With("remote_addr", remote)
	_ = nc.SetDeadline(start.Add(s.cfg.HandshakeTimeout))
	tc := tls.Server(nc, s.cfg.TLSConfig)

	fail := func(stage string, err error) (*conn, error) {
		reason := failureReason(err)
		s.counters.handshakeFailure(reason)
		log.Info("handshake failed", "stage", stage, "reason", string(reason), "err", err, "elapsed", time.Since(start))
		_ = tc.Close() // close_notify if the TLS handshake completed, then the socket
		return nil, err
	}

	ctx, cancel := context.WithDeadline(s.ctx, start.Add(s.cfg.HandshakeTimeout))
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		reason := HandshakeFailureTLS
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
			reason = HandshakeFailureTimeout
		}
		s.counters.handshakeFailure(reason)
		log.Debug("TLS handshake failed", "reason", string(reason), "err", err)
		_ = nc.Close()
		return nil, err
	}

	var hello wire.ServerHello
	_, _ = rand.Read(hello.Nonce[:])
	if _, err := tc.Write(hello.Append(make([]byte, 0, wire.ServerHelloLen))); err != nil {
		return fail("hello", err)
	}
	// Read straight from the TLS connection, not through the 64 KiB
	// buffer: a session that stays idle then never touches the buffer's
	// pages, and they cost no RSS. Anything the client pipelined behind
	// its answer waits in crypto/tls's own buffer.
	auth, err := wire.ReadClientAuth(tc)
	if err != nil {
		return fail("auth", err)
	}
	if err := auth.Verify(hello.Nonce, s.certHash); err != nil {
		return fail("verify", err)
	}
	if a := s.cfg.Authorizer; a != nil {
		if err := a.Authorize(ctx, auth.PublicKey, nc.RemoteAddr()); err != nil {
			return fail("authorize", &unauthorizedError{err})
		}
	}
	id := s.sessionID(auth.PublicKey)
	st := tc.ConnectionState()
	resumable := st.NegotiatedProtocol == wire.ALPNResume
	if resumable {
		// The Resume is part of the handshake: it must come within the
		// same bound. The reader lifts the deadline once it has it.
		_ = nc.SetWriteDeadline(time.Time{})
	} else {
		_ = nc.SetDeadline(time.Time{})
	}

	c := &conn{
		srv:         s,
		id:          s.nextConnID.Add(1),
		nc:          nc,
		tc:          tc,
		br:          wire.NewReadBuffer(tc, wire.MinReadBuffer, wire.HeaderLen+s.cfg.MaxPayload),
		remote:      remote,
		connectedAt: time.Now(),
		tlsVersion:  st.Version,
		cipher:      st.CipherSuite,
		state:       StateActive,
		resumable:   resumable,
		gate:        make(chan struct{}),
		wake:        make(chan struct{}, 1),
		gotGoodbye:  make(chan struct{}),
		closing:     make(chan struct{}),
		readerDone:  make(chan struct{}),
		writerDone:  make(chan struct{}),
		done:        make(chan struct{}),
	}
	c.lastActivity.Store(c.connectedAt.UnixNano())
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.log = log.With("session_id", id, "conn_id", c.id)
	if _, err := s.register(c, &Session{srv: s, id: id, pub: auth.PublicKey, q: queue{limit: s.cfg.QueueBytes, rpLimit: s.cfg.ResumeBuffer, highWater: &s.counters.queueHighWater, mem: &s.mem}}); err != nil {
		c.cancel()
		if errors.Is(err, errMemoryFull) { // a refusal, like max_conns: not a failed handshake
			s.counters.refusedMemory.Add(1)
			s.refusals.refused(refusedMaxMemory, "new session refused: the sessions hold the gateway's memory bound", "remote_addr", remote, "session_id", id, "held", s.mem.used.Load(), "max_memory", s.cfg.MaxMemory)
			_ = tc.Close()
			return nil, err
		}
		if errors.Is(err, errIDCollision) {
			log.Warn("handshake refused: another key has the session ID of a live session", "session_id", id)
		}
		return fail("register", err)
	}
	// Registered first, so that a client holding its ID finds its session.
	// The send buffer of a new connection is empty: this write cannot block.
	if _, err := tc.Write(wire.AppendSessionID(nil, id)); err != nil {
		c.log.Info("handshake failed", "stage", "session_id", "err", err)
		c.abort(OutcomePeerClosed) // serve then ends at once and releases the session
	}
	elapsed := time.Since(start)
	if o := s.cfg.Observer; o != nil {
		o.Handshake(elapsed)
	}
	c.log.Info("session connected", "tls_version", tls.VersionName(st.Version), "elapsed", elapsed)
	return c, nil
}

// unauthorizedError marks the Authorizer's refusal.
type unauthorizedError struct{ error }

func (e *unauthorizedError) Unwrap() error { return e.error }

// failureReason classifies a handshake that failed after TLS.
func failureReason(err error) HandshakeFailure {
	var ua *unauthorizedError
	switch {
	case errors.As(err, &ua):
		return HandshakeFailureUnauthorized
	case errors.Is(err, wire.ErrHandshakeVersion):
		return HandshakeFailureVersion
	case errors.Is(err, wire.ErrHandshakeSignature):
		return HandshakeFailureSignature
	case errors.Is(err, os.ErrDeadlineExceeded):
		return HandshakeFailureTimeout
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return HandshakeFailureShortRead
	case errors.Is(err, errShuttingDown):
		return HandshakeFailureShutdown
	case errors.Is(err, errIDCollision):
		return HandshakeFailureIDCollision
	}
	return HandshakeFailureIO
}

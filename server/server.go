// Package server is tlsgate's data plane: a TLS listener speaking wire
// protocol v1, with one session per client identity, takeover, and a close
// that loses nothing. See docs/protocol.md.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("server: closed")

// Server is the data-plane server. Create it with New.
type Server struct {
	cfg      Config
	log      *slog.Logger
	certHash [sha256.Size]byte
	// sessionID derives a key's session ID: wire.SessionID, or a
	// colliding one in the tests (SetSessionIDFunc).
	sessionID func(ed25519.PublicKey) uint64

	ctx    context.Context // ends at a forced shutdown; handshakes watch it
	cancel context.CancelFunc

	// mu guards the fields below it. sessions is written under both mu
	// and sessMu (in that order), so a holder of either may read it:
	// lookups (every control-plane send) take only sessMu's read lock,
	// which no accept takes.
	mu         sync.Mutex
	sessMu     sync.RWMutex
	sessions   map[uint64]*Session
	listeners  map[net.Listener]struct{}
	handshakes map[net.Conn]struct{}
	conns      map[*conn]struct{} // every connection past its handshake
	open       int                // connections admitted and not yet ended
	perIP      map[string]int     // open, by remote IP
	shutting   bool
	shutdown   chan struct{} // closed when shutdown begins
	wg         sync.WaitGroup

	refusals *refusalLog // paces the log lines of refused connections
	mem      memoryBound // Config.MaxMemory over every session's queue

	nextConnID atomic.Uint64
	counters   counters
	// trafficIn and trafficOut total the ended connections' traffic.
	trafficIn, trafficOut traffic
}

// New validates cfg, fills in its defaults and returns a Server. Its
// errors are *ConfigError.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.TLSConfig = cfg.tlsConfig()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		certHash:   sha256.Sum256(cfg.TLSConfig.Certificates[0].Certificate[0]),
		sessionID:  wire.SessionID,
		ctx:        ctx,
		cancel:     cancel,
		sessions:   make(map[uint64]*Session),
		listeners:  make(map[net.Listener]struct{}),
		handshakes: make(map[net.Conn]struct{}),
		conns:      make(map[*conn]struct{}),
		perIP:      make(map[string]int),
		shutdown:   make(chan struct{}),
		refusals:   newRefusalLog(cfg.Logger, RefusalLogInterval),
		mem:        memoryBound{limit: max(cfg.MaxMemory, 0)},
	}
	return s, nil
}

// Config returns the effective configuration, defaults filled in.
func (s *Server) Config() Config { return s.cfg }

// Serve accepts connections on ln until Shutdown, then returns
// ErrServerClosed. It closes ln.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutting {
		s.mu.Unlock()
		_ = ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	s.log.Info("data plane listening", "addr", ln.Addr().String())

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			select {
			case <-s.shutdown:
				return ErrServerClosed
			default:
			}
			// Out of file descriptors and the like: back off and retry,
			// as net/http does, rather than drop every session.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "backoff", backoff)
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.shutdown:
				t.Stop()
			}
			continue
		}
		backoff = 0
		if !s.admit(nc) {
			_ = nc.Close()
			continue
		}
		go s.handle(nc)
	}
}

// handle runs one accepted connection: handshake, then the session.
func (s *Server) handle(nc net.Conn) {
	defer s.wg.Done()
	defer s.forget(nc)
	c, err := s.handshake(nc)
	if err != nil {
		return
	}
	c.serve()
}

// register attaches c to its session, creating it or taking it over. This
// is the takeover point. A live session is taken over only by its own key:
// another key whose ID collides with it is refused (errIDCollision). A new
// session is refused while the sessions hold MaxMemory (errMemoryFull); a
// returning client is not: reading or acking is how it gives memory back.
func (s *Server) register(c *conn, sess *Session) (*Session, error) {
	s.mu.Lock()
	delete(s.handshakes, c.nc) // a session now: Shutdown closes it gracefully
	if s.shutting {
		s.mu.Unlock()
		return nil, errShuttingDown
	}
	if cur, ok := s.sessions[sess.id]; ok && !cur.pub.Equal(sess.pub) {
		s.mu.Unlock()
		return nil, errIDCollision
	}
	if _, ok := s.sessions[sess.id]; !ok && s.mem.full() {
		s.mu.Unlock()
		return nil, errMemoryFull
	}
	s.conns[c] = struct{}{}
	if cur, ok := s.sessions[sess.id]; ok {
		sess = cur
	} else {
		s.sessMu.Lock()
		s.sessions[sess.id] = sess
		s.sessMu.Unlock()
	}
	c.sess = sess
	s.reattach(sess)
	old := sess.cur.Swap(c)
	sess.q.attach(c)
	if old != nil {
		sess.takeovers.Add(1)
	}
	s.mu.Unlock()
	if old != nil {
		// Decided now, whatever the old connection's writer and reader are
		// doing: a reader that sees its peer go away before a stuck writer
		// gets to the takeover must not record a close of its own.
		old.takenOver()
		// The old connection finds the queue gone and says goodbye. Its
		// input is discarded until EOF or the linger timeout, and a writer
		// stuck on a client that stopped reading gives up by then, handing
		// its batch back to the queue.
		old.shortenDeadlines(time.Now().Add(s.cfg.LingerTimeout))
		old.wakeWriter()
		c.log.Info("session taken over", "old_conn_id", old.id)
		s.emit(Event{Kind: EventTakenOver, SessionID: sess.id, ConnID: c.id, OldConnID: old.id, Session: sess.Info()})
	} else {
		s.emit(Event{Kind: EventConnected, SessionID: sess.id, ConnID: c.id, Session: sess.Info()})
	}
	return sess, nil
}

// release detaches an ended connection. If it still owned its session, the
// session ends and what was never written is dropped (it returns how
// much), unless the connection was a lost resumable one: the session is
// then kept, detached, for a Resume.
func (s *Server) release(c *conn) (unwritten int, detached bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	c.in.mergeInto(&s.trafficIn)
	c.out.mergeInto(&s.trafficOut)
	sess := c.sess
	if sess.cur.Load() != c {
		return 0, false
	}
	sess.cur.Store(nil)
	if !s.shutting && c.lost() {
		s.detach(sess, c)
		return 0, true
	}
	s.sessMu.Lock()
	delete(s.sessions, sess.id)
	s.sessMu.Unlock()
	return sess.q.end(c), false
}

// Session returns the live session with the given ID.
func (s *Server) Session(id uint64) (*Session, bool) {
	s.sessMu.RLock()
	defer s.sessMu.RUnlock()
	sess, ok := s.sessions[id]
	return sess, ok
}

// Sessions returns the live sessions, ordered by ID.
func (s *Server) Sessions() []*Session {
	s.sessMu.RLock()
	out := make([]*Session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		out = append(out, sess)
	}
	s.sessMu.RUnlock()
	slices.SortFunc(out, func(a, b *Session) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	return out
}

// Shutdown stops accepting, then closes every session in parallel with
// Goodbye server_shutdown after its queue drains. When ctx ends first (or
// Config.ShutdownTimeout, if ctx has no deadline), the remaining
// connections are closed at once and ctx's error is returned. It returns
// once every connection has ended.
func (s *Server) Shutdown(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.ShutdownTimeout)
		defer cancel()
	}
	s.mu.Lock()
	if !s.shutting {
		s.shutting = true
		close(s.shutdown)
	}
	for ln := range s.listeners {
		_ = ln.Close()
	}
	clear(s.listeners)
	for nc := range s.handshakes {
		_ = nc.Close() // handshakes are not sessions yet; nothing is owed
	}
	sessions := make([]*Session, 0, len(s.sessions))
	var detached []*Session
	for _, sess := range s.sessions {
		if sess.detached != nil {
			detached = append(detached, sess)
		} else {
			sessions = append(sessions, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range detached {
		s.expireNow(sess, EndServerShutdown) // no Resume can reach a server that is stopping
	}
	s.refusals.stop() // accepting has stopped: log what is counted
	s.log.Info("shutting down", "sessions", len(sessions))

	var wg sync.WaitGroup
	for _, sess := range sessions {
		wg.Go(func() {
			_, _ = sess.Close(ctx, CloseOptions{Code: wire.GoodbyeServerShutdown, Reason: "server shutting down"})
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		// Connections that lost their session to a takeover close on their
		// own within the linger timeout; past the deadline, force them too.
		s.mu.Lock()
		for c := range s.conns {
			c.abort(OutcomeForced)
		}
		s.mu.Unlock()
	}
	s.cancel()
	s.wg.Wait()
	return ctx.Err()
}

package server

import (
	"net"
	"sync/atomic"
	"time"
)

// raiseTo raises v to at least n.
func raiseTo(v *atomic.Uint64, n uint64) {
	for {
		cur := v.Load()
		if n <= cur || v.CompareAndSwap(cur, n) {
			return
		}
	}
}

// Stats are the data plane's counters since start.
type Stats struct {
	// Accepted counts TCP connections accepted and admitted.
	Accepted uint64
	// RefusedTotal and RefusedPerIP count connections refused at accept by
	// Config.MaxConns and Config.MaxConnsPerIP.
	RefusedTotal, RefusedPerIP uint64
	// RefusedMemory counts new sessions refused after their handshake
	// because the sessions held MaxMemory; MemoryHeld is what they hold
	// now, MemoryHighWater the most they have held, MemoryLimit the bound
	// (0: none).
	RefusedMemory                            uint64
	MemoryHeld, MemoryHighWater, MemoryLimit int64
	// HandshakeFailed counts failed handshakes by reason: it has a key for
	// every HandshakeFailure (see HandshakeFailures), zero or not.
	HandshakeFailed map[string]uint64
	// SlowConsumers counts sessions closed with Goodbye slow_consumer.
	SlowConsumers uint64
	// IdleTimeouts counts sessions closed with Goodbye idle_timeout.
	IdleTimeouts uint64
	// SendRejected counts SendAsync calls refused because the session's
	// queue was full.
	SendRejected uint64
	// QueueHighWater is the most bytes any session's queue has held.
	QueueHighWater uint64
	// Detached is the number of sessions detached now, kept for a Resume.
	Detached int64
	// Resumes counts Resume requests answered with resumed true and false.
	ResumesResumed, ResumesFresh uint64
	// Replayed counts Data packets written again after a Resume.
	Replayed uint64
	// Expired counts detached sessions that ended without a Resume, and
	// ExpiredBytes the bytes they held, as the bounds count them.
	Expired, ExpiredBytes uint64
}

// Observer receives the durations the data plane measures. Its methods
// are called on connection and caller goroutines and must not block.
type Observer interface {
	// Handshake: a successful handshake, TLS included, from accept.
	Handshake(d time.Duration)
	// Drain: a Session.Drain, however it ended.
	Drain(d time.Duration, ack bool, err error)
	// Close: a Session.Close (a disconnect), until the connection ended.
	Close(d time.Duration, o Outcome)
}

// HandshakeFailure is why a handshake failed: a key of
// Stats.HandshakeFailed and the reason label of the
// tlsgate_handshakes_failed_total metric. The handshake fails without a
// word to the client; this is what the server logs and counts.
type HandshakeFailure string

// The reasons a handshake fails.
const (
	// HandshakeFailureTLS: the TLS handshake failed.
	HandshakeFailureTLS HandshakeFailure = "tls"
	// HandshakeFailureVersion: the client's ClientAuth has another version.
	HandshakeFailureVersion HandshakeFailure = "version"
	// HandshakeFailureSignature: the client's signature does not verify.
	HandshakeFailureSignature HandshakeFailure = "signature"
	// HandshakeFailureShortRead: the client closed before the end of its
	// ClientAuth.
	HandshakeFailureShortRead HandshakeFailure = "short_read"
	// HandshakeFailureTimeout: the handshake, TLS included, did not finish
	// within the handshake timeout.
	HandshakeFailureTimeout HandshakeFailure = "timeout"
	// HandshakeFailureUnauthorized: the Authorizer refused the key (the
	// allow list).
	HandshakeFailureUnauthorized HandshakeFailure = "unauthorized"
	// HandshakeFailureShutdown: the server began shutting down before the
	// session was registered.
	HandshakeFailureShutdown HandshakeFailure = "shutdown"
	// HandshakeFailureIDCollision: the client's key is not the key of the
	// live session with the same session ID (the IDs of two keys
	// collided, or someone tried); the session is left alone.
	HandshakeFailureIDCollision HandshakeFailure = "id_collision"
	// HandshakeFailureIO: any other error reading or writing the handshake.
	HandshakeFailureIO HandshakeFailure = "io"
)

// handshakeFailures is every HandshakeFailure, in the order they are
// documented; the counters are indexed alike.
var handshakeFailures = [...]HandshakeFailure{
	HandshakeFailureTLS, HandshakeFailureVersion, HandshakeFailureSignature, HandshakeFailureShortRead,
	HandshakeFailureTimeout, HandshakeFailureUnauthorized, HandshakeFailureShutdown, HandshakeFailureIDCollision,
	HandshakeFailureIO,
}

// HandshakeFailures returns every HandshakeFailure, in a fixed order.
func HandshakeFailures() []HandshakeFailure {
	l := handshakeFailures // a copy: the caller cannot change the list
	return l[:]
}

// counters back Stats.
type counters struct {
	accepted, refusedTotal, refusedPerIP atomic.Uint64
	refusedMemory                        atomic.Uint64
	slowConsumers, idleTimeouts          atomic.Uint64
	sendRejected, queueHighWater         atomic.Uint64
	handshakeFailed                      [len(handshakeFailures)]atomic.Uint64
	// The resume extension's.
	detached                            atomic.Int64 // sessions detached now
	resumedTrue, resumedFalse, replayed atomic.Uint64
	expired, expiredBytes               atomic.Uint64
}

func (c *counters) resume(resumed bool) {
	if resumed {
		c.resumedTrue.Add(1)
	} else {
		c.resumedFalse.Add(1)
	}
}

func (c *counters) handshakeFailure(reason HandshakeFailure) {
	for i, r := range handshakeFailures {
		if r == reason {
			c.handshakeFailed[i].Add(1)
			return
		}
	}
}

// Stats returns the data plane's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Accepted:        s.counters.accepted.Load(),
		RefusedTotal:    s.counters.refusedTotal.Load(),
		RefusedPerIP:    s.counters.refusedPerIP.Load(),
		RefusedMemory:   s.counters.refusedMemory.Load(),
		MemoryHeld:      s.mem.used.Load(),
		MemoryHighWater: s.mem.peak.Load(),
		MemoryLimit:     max(s.mem.limit, 0),
		SlowConsumers:   s.counters.slowConsumers.Load(),
		IdleTimeouts:    s.counters.idleTimeouts.Load(),
		SendRejected:    s.counters.sendRejected.Load(),
		QueueHighWater:  s.counters.queueHighWater.Load(),
		Detached:        s.counters.detached.Load(),
		ResumesResumed:  s.counters.resumedTrue.Load(),
		ResumesFresh:    s.counters.resumedFalse.Load(),
		Replayed:        s.counters.replayed.Load(),
		Expired:         s.counters.expired.Load(),
		ExpiredBytes:    s.counters.expiredBytes.Load(),
		HandshakeFailed: make(map[string]uint64, len(handshakeFailures)),
	}
	for i, r := range handshakeFailures {
		st.HandshakeFailed[string(r)] = s.counters.handshakeFailed[i].Load()
	}
	return st
}

// hostOf is the IP a connection is counted under.
func hostOf(addr net.Addr) string {
	if ta, ok := addr.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

// admit registers an accepted connection, in its handshake, unless the
// server is shutting down or a connection limit is reached.
func (s *Server) admit(nc net.Conn) bool {
	ip := hostOf(nc.RemoteAddr())
	s.mu.Lock()
	if s.shutting {
		s.mu.Unlock()
		return false
	}
	open, fromIP := s.open, s.perIP[ip]
	switch {
	case s.cfg.MaxConns > 0 && open >= s.cfg.MaxConns:
		s.mu.Unlock() // log outside the lock every accept takes
		s.counters.refusedTotal.Add(1)
		s.refusals.refused(refusedMaxConns, "connection refused: too many connections", "remote_addr", nc.RemoteAddr().String(), "open", open, "max_conns", s.cfg.MaxConns)
		return false
	case s.cfg.MaxConnsPerIP > 0 && fromIP >= s.cfg.MaxConnsPerIP:
		s.mu.Unlock()
		s.counters.refusedPerIP.Add(1)
		s.refusals.refused(refusedMaxConnsPerIP, "connection refused: too many connections from one IP", "remote_addr", nc.RemoteAddr().String(), "open_from_ip", fromIP, "max_conns_per_ip", s.cfg.MaxConnsPerIP)
		return false
	}
	s.open++
	s.perIP[ip]++
	s.handshakes[nc] = struct{}{}
	s.counters.accepted.Add(1)
	s.wg.Add(1)
	s.mu.Unlock()
	return true
}

// forget is admit's counterpart, once the connection has ended.
func (s *Server) forget(nc net.Conn) {
	ip := hostOf(nc.RemoteAddr())
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.handshakes, nc)
	s.open--
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
}

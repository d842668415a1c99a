package server

import (
	"context"
	"crypto/ed25519"
	"time"
)

// WaitWritten exposes the queue's progress to the black-box tests: it
// waits until everything through seq is written and flushed.
func (s *Session) WaitWritten(ctx context.Context, seq uint64) (uint64, error) {
	return s.q.waitWritten(ctx, seq)
}

// SetSessionIDFunc makes s derive session IDs with f, so that a test can
// make two keys collide. Call it before the first handshake.
func (s *Server) SetSessionIDFunc(f func(ed25519.PublicKey) uint64) { s.sessionID = f }

// SetRefusalLogInterval shortens the interval of the refusal summaries;
// call it before the first refusal.
func SetRefusalLogInterval(s *Server, d time.Duration) {
	s.refusals.mu.Lock()
	defer s.refusals.mu.Unlock()
	s.refusals.interval = d
}

package server

import (
	"context"
	"time"
)

// WaitWritten exposes the queue's progress to the black-box tests: it
// waits until everything through seq is written and flushed.
func (s *Session) WaitWritten(ctx context.Context, seq uint64) (uint64, error) {
	return s.q.waitWritten(ctx, seq)
}

// SetRefusalLogInterval shortens the interval of the refusal summaries;
// call it before the first refusal.
func SetRefusalLogInterval(s *Server, d time.Duration) {
	s.refusals.mu.Lock()
	defer s.refusals.mu.Unlock()
	s.refusals.interval = d
}

package server

import "context"

// WaitWritten exposes the queue's progress to the black-box tests: it
// waits until everything through seq is written and flushed.
func (s *Session) WaitWritten(ctx context.Context, seq uint64) (uint64, error) {
	return s.q.waitWritten(ctx, seq)
}

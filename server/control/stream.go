package control

import (
	"sync"
	"sync/atomic"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// stream is one subscriber: a bounded buffer and a cut-off signal.
type stream[T any] struct {
	sessions map[uint64]bool // nil: every session
	cutOff   *atomic.Uint64  // the hub's count of streams cut off
	items    chan T
	// size is what an item costs the buffer; bytes is what the items
	// waiting cost, bounded by maxBytes.
	size     func(T) int
	bytes    atomic.Int64
	maxBytes int64
	cut      chan struct{} // closed when the subscriber fell behind
	ended    chan struct{} // closed when the hub shuts down
	// ending is set before the stream's handler returns early (cut off,
	// or the client gone): a send that completes after it may have been
	// dropped by gRPC (a message queued behind the stream's trailers), so
	// it does not count as sent (see Service.Receive).
	ending atomic.Bool

	// sending is the item the sender has taken and not yet sent (busy);
	// overflow, what came after the stream was cut off, until the hub
	// removes it: it is never sent, but it keeps its place (see unsent).
	mu       sync.Mutex
	sending  T
	busy     bool
	isCut    bool
	overflow []T
}

// itemOverhead is what a buffered item costs beyond its payload: the
// response and packet messages, the pointer in the channel (an estimate,
// on the high side).
const itemOverhead = 256

func watchItemSize(*tlsgatev1.WatchSessionsResponse) int { return 2 * itemOverhead }

// took accounts for an item the sender took from the buffer.
func (s *stream[T]) took(item T) { s.bytes.Add(-int64(s.size(item))) }

func (s *stream[T]) selects(id uint64) bool { return s.sessions == nil || s.sessions[id] }

// offer hands over an item without blocking; a full buffer cuts the
// subscriber off, and what comes after waits, unsent, for the hub to
// remove the stream. It reports whether the stream took the item. Call
// with the hub's lock held (read or write).
func (s *stream[T]) offer(item T) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.isCut {
		n := int64(s.size(item))
		if s.bytes.Add(n) <= s.maxBytes {
			select {
			case s.items <- item:
				return true
			default:
			}
		}
		s.bytes.Add(-n)
		s.isCut = true
		close(s.cut)
		s.cutOff.Add(1)
	}
	s.overflow = append(s.overflow, item)
	return true
}

// send sends one item taken from the buffer, noting it as the one being
// sent meanwhile, and still after a failed send, which ends the stream
// (see unsent).
func (s *stream[T]) send(item T, send func(T) error) error {
	s.took(item)
	s.mu.Lock()
	s.sending, s.busy = item, true
	s.mu.Unlock()
	err := send(item)
	if err != nil {
		return err
	}
	s.mu.Lock()
	var zero T
	s.sending, s.busy = zero, false
	s.mu.Unlock()
	return nil
}

// unsent returns the items the stream never sent: the one being sent,
// if any, then those still buffered. Call once the stream is removed from
// the hub, under the hub's write lock, so that nothing more comes.
func (s *stream[T]) unsent() []T {
	var out []T
	s.mu.Lock()
	if s.busy {
		out = append(out, s.sending)
	}
	s.mu.Unlock()
	for {
		select {
		case item := <-s.items:
			out = append(out, item)
		default:
			s.mu.Lock()
			out = append(out, s.overflow...)
			s.overflow = nil
			s.mu.Unlock()
			return out
		}
	}
}

func newStream[T any](buffer int, maxBytes int, size func(T) int, ids []uint64, cutOff *atomic.Uint64) *stream[T] {
	s := &stream[T]{
		items: make(chan T, buffer), size: size, maxBytes: int64(maxBytes),
		cut: make(chan struct{}), ended: make(chan struct{}), cutOff: cutOff,
	}
	if len(ids) > 0 {
		s.sessions = make(map[uint64]bool, len(ids))
		for _, id := range ids {
			s.sessions[id] = true
		}
	}
	return s
}

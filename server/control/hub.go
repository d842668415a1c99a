package control

import (
	"context"
	"sync"
	"sync/atomic"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
)

// DefaultStreamBuffer is how many items a Receive or WatchSessions stream
// may have waiting before it is cut off with RESOURCE_EXHAUSTED.
const DefaultStreamBuffer = 16384

// Hub connects the data plane to the control plane's streams. It is the
// gateway's Handler: while at least one Receive stream selects a session,
// that session's packets go to the streams; otherwise to the fallback
// handler (echo or discard). Its Publish method is the gateway's OnEvent.
//
// Packets are handed to a stream's bounded buffer without blocking, so a
// slow stream never stalls a session: when its buffer is full it is cut off.
// A connection's closed event is published after every packet it delivered,
// so each stream sees them in that order.
type Hub struct {
	fallback server.Handler
	buffer   int

	receiving atomic.Int32 // len(receivers), read without the lock
	delivered atomic.Uint64
	cutOff    atomic.Uint64
	mu        sync.RWMutex
	receivers map[*stream[*tlsgatev1.ReceiveResponse]]struct{}
	watchers  map[*stream[*tlsgatev1.WatchSessionsResponse]]struct{}
	closed    bool
}

// NewHub returns a Hub delivering to fallback when no stream selects a
// session. buffer is the per-stream buffer (DefaultStreamBuffer if 0).
func NewHub(fallback server.Handler, buffer int) *Hub {
	if buffer <= 0 {
		buffer = DefaultStreamBuffer
	}
	return &Hub{
		fallback:  fallback,
		buffer:    buffer,
		receivers: make(map[*stream[*tlsgatev1.ReceiveResponse]]struct{}),
		watchers:  make(map[*stream[*tlsgatev1.WatchSessionsResponse]]struct{}),
	}
}

// HubStats are the hub's counters, for metrics.
type HubStats struct {
	// Receivers and Watchers are the open Receive and WatchSessions streams.
	Receivers, Watchers int
	// Delivered counts packets handed to Receive streams (once per stream).
	Delivered uint64
	// CutOff counts streams ended because they fell behind.
	CutOff uint64
}

// Stats returns the hub's counters.
func (h *Hub) Stats() HubStats {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return HubStats{Receivers: len(h.receivers), Watchers: len(h.watchers), Delivered: h.delivered.Load(), CutOff: h.cutOff.Load()}
}

// stream is one subscriber: a bounded buffer and a cut-off signal.
type stream[T any] struct {
	sessions map[uint64]bool // nil: every session
	cutOff   *atomic.Uint64  // the hub's count of streams cut off
	items    chan T
	cut      chan struct{} // closed when the subscriber fell behind
	ended    chan struct{} // closed when the hub shuts down
	once     sync.Once
}

func (s *stream[T]) selects(id uint64) bool { return s.sessions == nil || s.sessions[id] }

// offer hands over an item without blocking; a full buffer cuts the
// subscriber off. Call with the hub's lock held (read or write).
func (s *stream[T]) offer(item T) {
	select {
	case s.items <- item:
	default:
		s.once.Do(func() {
			close(s.cut)
			s.cutOff.Add(1)
		})
	}
}

// Handle delivers one inbound packet: to every Receive stream that selects
// its session, or to the fallback handler if none does.
func (h *Hub) Handle(ctx context.Context, s *server.Session, p server.Packet) {
	if h.receiving.Load() > 0 && h.deliver(s, p) {
		return
	}
	h.fallback.Handle(ctx, s, p)
}

func (h *Hub) deliver(s *server.Session, p server.Packet) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var item *tlsgatev1.ReceiveResponse
	for r := range h.receivers {
		if !r.selects(s.ID()) {
			continue
		}
		if item == nil {
			item = &tlsgatev1.ReceiveResponse{Item: &tlsgatev1.ReceiveResponse_Packet{Packet: inboundPacket(s, p)}}
		}
		r.offer(item)
		h.delivered.Add(1)
	}
	return item != nil
}

// Publish delivers a lifecycle event to the watchers, and a connection's
// end to the Receive streams that select its session.
func (h *Hub) Publish(e server.Event) {
	ev := watchEvent(e)
	h.mu.RLock()
	defer h.mu.RUnlock()
	for w := range h.watchers {
		w.offer(ev)
	}
	if e.Kind != server.EventClosed {
		return
	}
	closed := &tlsgatev1.ReceiveResponse{Item: &tlsgatev1.ReceiveResponse_Closed{Closed: closedConnection(e.Close)}}
	for r := range h.receivers {
		if r.selects(e.SessionID) {
			r.offer(closed)
		}
	}
}

func newStream[T any](buffer int, ids []uint64, cutOff *atomic.Uint64) *stream[T] {
	s := &stream[T]{items: make(chan T, buffer), cut: make(chan struct{}), ended: make(chan struct{}), cutOff: cutOff}
	if len(ids) > 0 {
		s.sessions = make(map[uint64]bool, len(ids))
		for _, id := range ids {
			s.sessions[id] = true
		}
	}
	return s
}

// subscribeReceiver adds a Receive stream; remove it with the returned func.
func (h *Hub) subscribeReceiver(ids []uint64) (*stream[*tlsgatev1.ReceiveResponse], func()) {
	r := newStream[*tlsgatev1.ReceiveResponse](h.buffer, ids, &h.cutOff)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(r.ended)
		return r, func() {}
	}
	h.receivers[r] = struct{}{}
	h.receiving.Add(1)
	return r, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if _, ok := h.receivers[r]; ok {
			delete(h.receivers, r)
			h.receiving.Add(-1)
		}
	}
}

// subscribeWatcher adds a WatchSessions stream. snapshot, when non-nil,
// runs under the hub's lock, so no event is published between the
// snapshot and the live events.
func (h *Hub) subscribeWatcher(snapshot func(*stream[*tlsgatev1.WatchSessionsResponse])) (*stream[*tlsgatev1.WatchSessionsResponse], func()) {
	w := newStream[*tlsgatev1.WatchSessionsResponse](h.buffer, nil, &h.cutOff)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(w.ended)
		return w, func() {}
	}
	if snapshot != nil {
		snapshot(w)
	}
	h.watchers[w] = struct{}{}
	return w, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.watchers, w)
	}
}

// Close ends every stream (they return UNAVAILABLE) and refuses new ones,
// so that the gRPC server's graceful stop does not wait on them. Call it
// after the data plane has shut down, so that the closed events are out.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for r := range h.receivers {
		close(r.ended)
	}
	for w := range h.watchers {
		close(w.ended)
	}
	clear(h.receivers)
	clear(h.watchers)
	h.receiving.Store(0)
}

package control

import (
	"cmp"
	"context"
	"sync"
	"sync/atomic"
	"time"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
)

// DefaultStreamBuffer is how many items a Receive or WatchSessions stream
// may have waiting before it is cut off with RESOURCE_EXHAUSTED.
const DefaultStreamBuffer = 16384

// DefaultStreamBufferBytes bounds the same buffer in bytes: a stream of
// 64 KiB packets is cut off at 256 of them, not 16,384 (1 GiB).
const DefaultStreamBufferBytes = 16 << 20

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
	fallback    server.Handler
	buffer      int
	bufferBytes int
	hold        bool // NoConsumerHold
	pause       pauses

	receiving atomic.Int32 // len(receivers), read without the lock
	delivered atomic.Uint64
	cutOff    atomic.Uint64
	// groupList is the consumer groups, copied on write under mu: Handle
	// reads it without a lock.
	groupList  atomic.Pointer[[]*group]
	nextMember atomic.Uint64
	mu         sync.RWMutex
	receivers  map[*stream[*receiveItem]]struct{}
	watchers   map[*stream[*tlsgatev1.WatchSessionsResponse]]struct{}
	groups     map[string]*group
	members    map[*member]struct{}
	closed     bool
	orphans    receiveOrphans
}

// NoConsumer says what happens to a session's packets that no consumer
// group takes.
type NoConsumer string

const (
	// NoConsumerHandler: the fallback handler takes them (the default).
	// So do the packets a group still held when its last member left, on
	// the session's next packet, Flush or end.
	NoConsumerHandler NoConsumer = "handler"
	// NoConsumerHold: the default group keeps them, within the default
	// limits per session (then the client's reads pause), until a member
	// joins it; a group whose last member left keeps what it held.
	NoConsumerHold NoConsumer = "hold"
)

// HubConfig configures a Hub.
type HubConfig struct {
	// Fallback takes the packets no consumer group and no Receive stream
	// takes. Required.
	Fallback server.Handler
	// StreamBuffer is the per-stream buffer of Receive and WatchSessions,
	// in items (DefaultStreamBuffer if 0).
	StreamBuffer int
	// StreamBufferBytes bounds the same buffers in bytes, payloads and
	// per-item overhead (DefaultStreamBufferBytes if 0).
	StreamBufferBytes int
	// NoConsumer is the policy for packets no group takes (default
	// NoConsumerHandler).
	NoConsumer NoConsumer
	// PauseTimeout, when positive, closes with Goodbye backend_stalled a
	// session whose reads a consumer group has paused this long.
	PauseTimeout time.Duration
}

// NewHub returns a Hub.
func NewHub(c HubConfig) *Hub {
	h := &Hub{
		fallback:    c.Fallback,
		buffer:      cmp.Or(c.StreamBuffer, DefaultStreamBuffer),
		bufferBytes: cmp.Or(c.StreamBufferBytes, DefaultStreamBufferBytes),
		hold:        c.NoConsumer == NoConsumerHold,
		receivers:   make(map[*stream[*receiveItem]]struct{}),
		watchers:    make(map[*stream[*tlsgatev1.WatchSessionsResponse]]struct{}),
		groups:      make(map[string]*group),
		members:     make(map[*member]struct{}),
	}
	h.pause.timeout = c.PauseTimeout
	if h.hold {
		// The default group is there from the start, and holds what no
		// member takes.
		h.groups[DefaultGroup] = h.newGroup(DefaultGroup)
		h.publishGroups()
	}
	return h
}

// newGroup returns an empty group with the hub's policy.
func (h *Hub) newGroup(name string) *group {
	g := &group{name: name, pause: &h.pause, members: make(map[*member]struct{}), sessions: make(map[uint64]*groupSession)}
	switch {
	case h.hold && name == DefaultGroup:
		g.holdAll = true
	case !h.hold:
		g.handOff = h.fallback
	}
	return g
}

// HubStats are the hub's counters, for metrics.
type HubStats struct {
	// Receivers and Watchers are the open Receive and WatchSessions streams.
	Receivers, Watchers int
	// Delivered counts packets handed to Receive streams (once per stream).
	Delivered uint64
	// CutOff counts streams ended because they fell behind.
	CutOff uint64
	// Groups and Members are the consumer groups and their Consume streams.
	Groups, Members int
	// UnackedPackets and UnackedBytes (payload) are what the groups hold
	// for their members: delivered or waiting to be, and not yet acked.
	UnackedPackets, UnackedBytes int
	// Paused counts the readers a group holds back now (at its limits);
	// Stalled, the sessions closed with Goodbye backend_stalled.
	Paused  int
	Stalled uint64
}

// Stats returns the hub's counters.
func (h *Hub) Stats() HubStats {
	h.mu.RLock()
	defer h.mu.RUnlock()
	st := HubStats{
		Receivers: len(h.receivers), Watchers: len(h.watchers), Delivered: h.delivered.Load(), CutOff: h.cutOff.Load(),
		Groups: len(h.groups), Members: len(h.members),
		Paused: int(h.pause.now.Load()), Stalled: h.pause.stalled.Load(),
	}
	for _, g := range h.groups {
		g.mu.Lock()
		for _, gs := range g.sessions {
			st.UnackedPackets += gs.packets
			st.UnackedBytes += gs.bytes
		}
		g.mu.Unlock()
	}
	return st
}

// Handle delivers one inbound packet: to every consumer group that holds
// or takes its session (waiting, on the connection's reader, while the
// session's unacked packets in a group are at its limit), and to every
// Receive stream that selects the session; to the fallback handler if
// none of them takes it.
func (h *Hub) Handle(ctx context.Context, s *server.Session, p server.Packet) {
	var pkt *tlsgatev1.InboundPacket // built once, shared: never modified
	consumed := false
	if groups := h.groupList.Load(); groups != nil && len(*groups) > 0 {
		pkt = inboundPacket(s, p)
		for _, g := range *groups {
			if g.offer(ctx, s, pkt, p.Closing) {
				consumed = true
			}
		}
	}
	tapped := h.receiving.Load() > 0 && h.deliver(s, p, pkt, consumed)
	if !consumed && !tapped {
		// No stream took the packet, so none that ends later holds an
		// older one: what streams that ended left goes first.
		h.handOffReceiveOrphans(ctx, s.ID())
		h.fallback.Handle(ctx, s, p)
	}
}

// WaitProcessed returns once every consumer group holding s has acked its
// packets through seq, or ctx ends: the server answers the client's Flush
// after it (server.FlushWaiter).
func (h *Hub) WaitProcessed(ctx context.Context, s *server.Session, seq uint64) {
	h.handOffReceiveOrphans(ctx, s.ID())
	groups := h.groupList.Load()
	if groups == nil {
		return
	}
	var since time.Time // when the Flush started to wait
	for _, g := range *groups {
		for {
			g.mu.Lock()
			done, handOff, changed := g.ackedThrough(s, seq)
			g.mu.Unlock()
			if done {
				break
			}
			if handOff {
				g.handOffOrphans(ctx, s) // on the reader: in order
				continue
			}
			if since.IsZero() {
				since = time.Now()
			}
			if !h.pause.wait(ctx, changed, nil, since) {
				if ctx.Err() == nil {
					g.stalled(s) // the close ends ctx: the Flush goes unanswered
				}
				return
			}
		}
	}
}

// ProcessedThrough reports, without waiting, whether every consumer group
// holding s has acked its packets through seq (server.ProcessedReporter):
// the server then acks them to a resumable client.
func (h *Hub) ProcessedThrough(s *server.Session, seq uint64) bool {
	groups := h.groupList.Load()
	if groups == nil {
		return true
	}
	for _, g := range *groups {
		g.mu.Lock()
		done, _, _ := g.ackedThrough(s, seq)
		g.mu.Unlock()
		if !done {
			return false
		}
	}
	return true
}

// Publish delivers a lifecycle event to the watchers, and a connection's
// end to the Receive streams that select its session.
func (h *Hub) Publish(e server.Event) {
	ev := watchEvent(e)
	if e.Kind == server.EventClosed {
		defer h.handOffEnded(e.SessionID)
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	for w := range h.watchers {
		w.offer(ev)
	}
	if e.Kind != server.EventClosed {
		return
	}
	cc := closedConnection(e.Close)
	for _, g := range h.groups {
		g.closed(e.SessionID, cc)
	}
	closed := &receiveItem{resp: &tlsgatev1.ReceiveResponse{Item: &tlsgatev1.ReceiveResponse_Closed{Closed: cc}}}
	for r := range h.receivers {
		if r.selects(e.SessionID) {
			r.offer(closed)
		}
	}
}

// subscribeWatcher adds a WatchSessions stream. snapshot, when non-nil,
// runs under the hub's lock, so no event is published between the
// snapshot and the live events.
func (h *Hub) subscribeWatcher(snapshot func(*stream[*tlsgatev1.WatchSessionsResponse])) (*stream[*tlsgatev1.WatchSessionsResponse], func()) {
	w := newStream(h.buffer, h.bufferBytes, watchItemSize, nil, &h.cutOff)
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
	for m := range h.members {
		close(m.ended)
	}
	// What the groups hold unacked is given up: no member will ack it.
	for _, g := range h.groups {
		g.mu.Lock()
		for _, gs := range g.sessions {
			gs.uncharge()
		}
		clear(g.sessions)
		g.mu.Unlock()
	}
	clear(h.receivers)
	clear(h.watchers)
	clear(h.members)
	h.receiving.Store(0)
}

// join adds a Consume stream to its group, creating the group if needed;
// remove it with the returned func. It fails once the hub is closed.
func (h *Hub) join(name string, ids []uint64, l limits) (*member, func(), bool) {
	m := &member{id: h.nextMember.Add(1), limits: l, wake: make(chan struct{}, 1), ended: make(chan struct{})}
	if len(ids) > 0 {
		m.sessions = make(map[uint64]bool, len(ids))
		for _, id := range ids {
			m.sessions[id] = true
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, nil, false
	}
	g := h.groups[name]
	if g == nil {
		g = h.newGroup(name)
		h.groups[name] = g
		h.publishGroups()
	}
	m.group = g
	g.mu.Lock()
	g.join(m)
	g.mu.Unlock()
	h.members[m] = struct{}{}
	return m, func() {
		g.leave(m)
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(h.members, m)
		g.mu.Lock()
		empty := len(g.members) == 0 && len(g.sessions) == 0 && !g.holdAll
		g.mu.Unlock()
		if empty && h.groups[name] == g {
			delete(h.groups, name)
			h.publishGroups()
		}
	}, true
}

// publishGroups stores a copy of the groups for Handle. Call with mu held.
func (h *Hub) publishGroups() {
	list := make([]*group, 0, len(h.groups))
	for _, g := range h.groups {
		list = append(list, g)
	}
	h.groupList.Store(&list)
}

// handOffEnded hands the packets that groups without members still hold
// for an ended session to the fallback handler (NoConsumerHandler).
func (h *Hub) handOffEnded(id uint64) {
	h.handOffEndedReceiveOrphans(id)
	groups := h.groupList.Load()
	if groups == nil {
		return
	}
	for _, g := range *groups {
		g.handOffEndedSession(id)
	}
}

package control

import (
	"context"
	"sync"
	"sync/atomic"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
)

// A receiveItem is one item of the Receive streams, shared by every
// stream that selects its session.
type receiveItem struct {
	resp *tlsgatev1.ReceiveResponse
	sess *server.Session // nil for a closed marker
	// handler: no consumer group took the packet, so the Receive streams
	// stood in for the handler. If none of them sends it, the handler
	// gets it after all (see receiveOrphans).
	handler bool
	holders atomic.Int32 // streams that took it and have not sent it
	sent    atomic.Bool  // a stream sent it
}

func receiveItemSize(it *receiveItem) int {
	return itemOverhead + len(it.resp.GetPacket().GetPayload())
}

// receiveOrphans are the packets that Receive streams took in place of
// the handler and ended without sending, by session, oldest first. The
// session's reader hands them to the handler before its next packet, or
// its Flush; the end of the session does if no packet comes.
type receiveOrphans struct {
	n  atomic.Int32 // sessions with orphans, read without the lock
	mu sync.Mutex
	by map[uint64][]*receiveItem
}

func (o *receiveOrphans) add(it *receiveItem) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.by == nil {
		o.by = make(map[uint64][]*receiveItem)
	}
	id := it.sess.ID()
	if len(o.by[id]) == 0 {
		o.n.Add(1)
	}
	o.by[id] = append(o.by[id], it)
}

// take removes and returns the session's orphans; ended: only if the
// session has ended (no reader will come for them).
func (o *receiveOrphans) take(id uint64, ended bool) []*receiveItem {
	if o.n.Load() == 0 {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	its := o.by[id]
	if len(its) == 0 || ended && its[0].sess.Connected() {
		return nil
	}
	delete(o.by, id)
	o.n.Add(-1)
	return its
}

// handOffReceiveOrphans gives the handler a session's orphans, in order,
// on the session's reader.
func (h *Hub) handOffReceiveOrphans(ctx context.Context, id uint64) {
	for _, it := range h.orphans.take(id, false) {
		h.fallback.Handle(ctx, it.sess, packetOf(it.resp.GetPacket()))
	}
}

// handOffEndedReceiveOrphans gives the handler the orphans of a session
// that has ended; a session a takeover moved on keeps them for its reader.
func (h *Hub) handOffEndedReceiveOrphans(id uint64) {
	for _, it := range h.orphans.take(id, true) {
		h.fallback.Handle(context.Background(), it.sess, packetOf(it.resp.GetPacket()))
	}
}

// deliver offers one packet to every Receive stream that selects its
// session, and reports whether one took it. consumed: a consumer group
// took it too, so the streams are only a tap.
func (h *Hub) deliver(s *server.Session, p server.Packet, pkt *tlsgatev1.InboundPacket, consumed bool) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var item *receiveItem
	taken := false
	for r := range h.receivers {
		if !r.selects(s.ID()) {
			continue
		}
		if item == nil {
			if pkt == nil {
				pkt = inboundPacket(s, p)
			}
			item = &receiveItem{
				resp: &tlsgatev1.ReceiveResponse{Item: &tlsgatev1.ReceiveResponse_Packet{Packet: pkt}},
				sess: s, handler: !consumed,
			}
		}
		item.holders.Add(1)
		if r.offer(item) {
			taken = true
			h.delivered.Add(1)
		} else {
			item.holders.Add(-1)
		}
	}
	return taken
}

// subscribeReceiver adds a Receive stream; remove it with the returned
// func, which hands what the stream took in place of the handler and did
// not send to the handler (through the session's reader).
func (h *Hub) subscribeReceiver(ids []uint64) (*stream[*receiveItem], func()) {
	r := newStream(h.buffer, h.bufferBytes, receiveItemSize, ids, &h.cutOff)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(r.ended)
		return r, func() {}
	}
	h.receivers[r] = struct{}{}
	h.receiving.Add(1)
	return r, func() {
		ended := h.unsubscribeReceiver(r)
		// Sessions that ended before their orphans were known: no reader
		// and no end will hand them off.
		for id := range ended {
			h.handOffEndedReceiveOrphans(id)
		}
	}
}

// unsubscribeReceiver removes a Receive stream and keeps what it took in
// place of the handler and did not send as orphans. It returns the
// sessions they belong to.
func (h *Hub) unsubscribeReceiver(r *stream[*receiveItem]) map[uint64]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.receivers[r]
	if !ok {
		return nil
	}
	// Under the write lock, and before the count of streams drops (which
	// Handle reads without the lock): no packet reaches the handler
	// meanwhile, so the orphans go ahead of every later packet.
	var ids map[uint64]bool
	for _, it := range r.unsent() {
		if it.holders.Add(-1) == 0 && it.handler && !it.sent.Load() {
			h.orphans.add(it)
			if ids == nil {
				ids = make(map[uint64]bool)
			}
			ids[it.sess.ID()] = true
		}
	}
	delete(h.receivers, r)
	h.receiving.Add(-1)
	return ids
}

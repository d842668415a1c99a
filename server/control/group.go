package control

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// Defaults and bounds of a Consume member's limits (ConsumeOpen).
const (
	DefaultGroup             = "default"
	DefaultMaxUnackedPackets = 1024
	DefaultMaxUnackedBytes   = 1 << 20
	maxUnackedPacketsLimit   = 1 << 16
	minUnackedBytesLimit     = 1 << 16
	maxUnackedBytesLimit     = 64 << 20
)

// pauses counts the readers held back by groups, and closes a session
// held back longer than timeout (0: never).
type pauses struct {
	timeout time.Duration
	now     atomic.Int64  // readers waiting
	stalled atomic.Uint64 // sessions closed with Goodbye backend_stalled
}

// limits bound what one session may have unacked in a group.
type limits struct {
	packets int
	bytes   int
}

// defaultLimits apply to what a group holds for no member.
var defaultLimits = limits{packets: DefaultMaxUnackedPackets, bytes: DefaultMaxUnackedBytes}

// A group is a consumer group: its members are open Consume streams; each
// session it holds is assigned to one member at a time. Every field below
// mu is guarded by it.
type group struct {
	name  string
	pause *pauses // the hub's
	// holdAll (NoConsumerHold's default group): hold the packets of
	// sessions no member selects, until one joins.
	holdAll bool
	// handOff (NoConsumerHandler): where the packets held for a session
	// no member owns go, in order, on the session's reader.
	handOff server.Handler

	mu       sync.Mutex
	members  map[*member]struct{}
	sessions map[uint64]*groupSession
}

// A groupSession is what a group holds of one session: the deliveries not
// yet acked, oldest first (sent or still pending in the owner's outbox).
type groupSession struct {
	sess    *server.Session // the incarnation whose packets are held
	owner   *member         // nil while the group has no member for it
	limits  limits          // the owner's, or the last owner's
	unacked []*delivery
	bytes   int    // payload bytes of unacked packets
	packets int    // unacked packets (markers excluded)
	acked   uint64 // every packet through this seq is acked
	charged int    // what sess's share of the memory bound counts of them
	// space, when non-nil, is closed when acks free room or the owner
	// changes; a reader waiting for room makes it.
	space chan struct{}
}

// A delivery is one item for a member: a packet or a connection's end.
type delivery struct {
	seq    uint64 // the packet's seq; for a marker, the last packet's before it
	packet *tlsgatev1.InboundPacket
	closed *tlsgatev1.ClosedConnection
	sent   bool // handed to a member's stream: a later delivery is a redelivery
}

func (d *delivery) size() int { return len(d.packet.GetPayload()) }

// A member is one Consume stream of a group.
type member struct {
	id       uint64
	group    *group
	sessions map[uint64]bool // nil: every session
	limits   limits

	// outbox holds deliveries to send, in order per session; guarded by
	// group.mu. wake has room for one signal: outbox is not empty.
	outbox []*delivery
	wake   chan struct{}
	ended  chan struct{} // closed when the hub shuts down
}

func (m *member) selects(id uint64) bool { return m.sessions == nil || m.sessions[id] }

// notify wakes the member's sender. Call with group.mu held.
func (m *member) notify() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (gs *groupSession) full() bool {
	return gs.packets >= gs.limits.packets || gs.bytes >= gs.limits.bytes
}

// InboundEntryOverhead is what the memory bound (--max-memory) charges
// for an unacked inbound packet beside its payload: the delivery, the
// InboundPacket message with its timestamp, and their slots in the
// session's and the member's lists (measured: 226 bytes a 0-byte packet,
// the lists' growth slack included).
const InboundEntryOverhead = 224

// count adds d's packet to what gs holds (n 1) or removes it (n -1), and
// charges the session's share of the memory bound with its allocation.
// Call with group.mu held.
func (gs *groupSession) count(n int, d *delivery) {
	gs.bytes += n * d.size()
	gs.packets += n
	c := n * (cap(d.packet.GetPayload()) + InboundEntryOverhead)
	gs.charged += c
	gs.sess.ChargeMemory(c)
}

// uncharge gives up gs's charge of the memory bound: its packets are no
// longer the group's. Call with group.mu held.
func (gs *groupSession) uncharge() {
	gs.sess.ChargeMemory(-gs.charged)
	gs.charged = 0
}

// wakeWaiters wakes readers waiting for room. Call with group.mu held.
func (gs *groupSession) wakeWaiters() {
	if gs.space != nil {
		close(gs.space)
		gs.space = nil
	}
}

// assign picks the member for session id among those that select it, by
// rendezvous hashing (the highest score of id and the member's ID), or
// nil. Call with g.mu held.
func (g *group) assign(id uint64) *member {
	var best *member
	var bestScore uint64
	for m := range g.members {
		if !m.selects(id) {
			continue
		}
		if s := mix64(id ^ mix64(m.id)); best == nil || s > bestScore {
			best, bestScore = m, s
		}
	}
	return best
}

// mix64 is splitmix64's finalizer: a cheap, well-spread hash.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// offer delivers one packet of sess to the group, waiting while the
// session's unacked packets are at the limit (which stops the client's
// reads: this runs on its connection's reader). It reports whether the
// group took the packet: false when no member selects the session and the
// group holds nothing of it. When the connection starts to close (closing)
// or ends (ctx), it stops waiting and takes the packet past the limit: it
// was received, it is not dropped, and the close must read on.
func (g *group) offer(ctx context.Context, sess *server.Session, pkt *tlsgatev1.InboundPacket, closing <-chan struct{}) bool {
	id := sess.ID()
	hold := func() bool { // false once the reader must not be held back
		select {
		case <-ctx.Done():
			return false
		case <-closing:
			return false
		default:
			return true
		}
	}
	var since time.Time // when this packet started to wait
	wait := func(gs *groupSession) {
		if since.IsZero() {
			since = time.Now()
		}
		if g.waitForRoom(ctx, gs, closing, since) {
			g.stalled(sess)
		}
	}
	// Each pass looks at the session afresh: waiting releases the lock,
	// and the owner, the limits or the group's members may change.
	for {
		g.handOffOrphans(ctx, sess)
		g.mu.Lock()
		gs := g.sessions[id]
		switch {
		case gs != nil && gs.owner == nil && g.handOff != nil:
			// Its last member left while this waited: hand off first.
			g.mu.Unlock()
			continue
		case gs != nil && gs.sess != sess && gs.packets > 0:
			// The held packets are an earlier incarnation's, whose seqs
			// the new one restarts: its packets wait until those are
			// acked. A closing connection's go behind them, not over them.
			if hold() {
				wait(gs)
				g.mu.Unlock()
				continue
			}
		case gs == nil || gs.sess != sess:
			m := g.assign(id)
			if m == nil && !g.holdAll {
				g.mu.Unlock()
				return false
			}
			gs = &groupSession{sess: sess, owner: m, limits: defaultLimits}
			if m != nil {
				gs.limits = m.limits
			}
			g.sessions[id] = gs
		case (gs.full() || gs.packets > 0 && sess.MemoryFull()) && hold():
			// At its own limits, or past the gateway's memory bound
			// while it holds something: its acks make room.
			wait(gs)
			g.mu.Unlock()
			continue
		}
		g.hold(gs, &delivery{seq: pkt.GetSeq(), packet: pkt})
		g.mu.Unlock()
		return true
	}
}

// handOffOrphans hands what the group holds of sess, when no member owns
// it, to the fallback handler, in order (NoConsumerHandler). It runs on
// the session's reader, which is what keeps the order with the packets
// that follow.
func (g *group) handOffOrphans(ctx context.Context, sess *server.Session) {
	if g.handOff == nil {
		return
	}
	g.mu.Lock()
	held := g.takeOrphans(sess.ID(), true)
	g.mu.Unlock()
	for _, d := range held {
		g.handOff.Handle(ctx, d.sess, packetOf(d.pkt))
	}
}

// handOffEndedSession is handOffOrphans for a session that has ended: no
// reader will come, and none competes.
func (g *group) handOffEndedSession(id uint64) {
	if g.handOff == nil {
		return
	}
	g.mu.Lock()
	held := g.takeOrphans(id, false)
	g.mu.Unlock()
	for _, d := range held {
		g.handOff.Handle(context.Background(), d.sess, packetOf(d.pkt))
	}
}

// orphan is a held packet on its way to the fallback handler.
type orphan struct {
	sess *server.Session
	pkt  *tlsgatev1.InboundPacket
}

// takeOrphans removes and returns the packets held for session id when
// no member owns it; with live, also when the session is connected. Call
// with g.mu held.
func (g *group) takeOrphans(id uint64, live bool) []orphan {
	gs := g.sessions[id]
	if gs == nil || gs.owner != nil || (!live && gs.sess.Connected()) {
		return nil
	}
	var held []orphan
	for _, d := range gs.unacked {
		if d.packet != nil {
			held = append(held, orphan{gs.sess, d.packet})
		}
	}
	gs.uncharge() // the fallback's now
	delete(g.sessions, id)
	gs.wakeWaiters()
	return held
}

// waitForRoom releases g.mu until gs's room changes, ctx ends or the
// connection starts to close, and counts the reader as paused meanwhile.
// It reports whether the pause, which began at since, reached the pause
// timeout. Call with g.mu held; it returns with g.mu held.
func (g *group) waitForRoom(ctx context.Context, gs *groupSession, closing <-chan struct{}, since time.Time) (stalled bool) {
	if gs.space == nil {
		gs.space = make(chan struct{})
	}
	ch := gs.space
	g.mu.Unlock()
	stalled = !g.pause.wait(ctx, ch, closing, since) && ctx.Err() == nil && !isClosed(closing)
	g.mu.Lock()
	return stalled
}

// wait waits for changed, counted as a paused reader, until ctx ends,
// closing (which may be nil) is closed, or the pause that began at since
// reaches the timeout. It reports whether changed was closed.
func (p *pauses) wait(ctx context.Context, changed, closing <-chan struct{}, since time.Time) bool {
	p.now.Add(1)
	defer p.now.Add(-1)
	var timeout <-chan time.Time
	if p.timeout > 0 {
		t := time.NewTimer(time.Until(since.Add(p.timeout)))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-changed:
		return true
	case <-ctx.Done():
	case <-closing:
	case <-timeout:
	}
	return false
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// stalled closes a session whose backend has held it back for the pause
// timeout. Its reader then reads on: the close delivers what the client
// sent before its Goodbye past the limits, and nothing is dropped.
func (g *group) stalled(sess *server.Session) {
	if err := sess.StartClose(server.CloseOptions{
		Code:   wire.GoodbyeBackendStalled,
		Reason: fmt.Sprintf("the backend did not consume for %s", g.pause.timeout),
	}); err == nil {
		g.pause.stalled.Add(1)
	}
}

// hold appends d to gs's unacked deliveries and to its owner's outbox.
// Call with g.mu held.
func (g *group) hold(gs *groupSession, d *delivery) {
	gs.unacked = append(gs.unacked, d)
	if d.packet != nil {
		gs.count(1, d)
	}
	if gs.owner != nil {
		gs.owner.outbox = append(gs.owner.outbox, d)
		gs.owner.notify()
	}
}

// closed queues the end marker of one of sess's connections behind its
// last packet, if the group holds the session.
func (g *group) closed(id uint64, c *tlsgatev1.ClosedConnection) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gs := g.sessions[id]
	if gs == nil {
		return
	}
	var seq uint64
	if n := len(gs.unacked); n > 0 {
		seq = gs.unacked[n-1].seq
	} else {
		seq = gs.acked
	}
	g.hold(gs, &delivery{seq: seq, closed: c})
	g.forgetIfDone(id, gs)
}

// ack removes the session's deliveries through seq, if m owns the session;
// an ack from a member that no longer owns it is stale and ignored.
func (g *group) ack(m *member, id, through uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gs := g.sessions[id]
	if gs == nil || gs.owner != m {
		return
	}
	n := 0
	for _, d := range gs.unacked {
		if d.seq > through || !d.sent {
			break
		}
		if d.packet != nil {
			gs.count(-1, d)
			gs.acked = d.seq
		}
		n++
	}
	if n == 0 {
		return
	}
	clear(gs.unacked[:n])
	gs.unacked = gs.unacked[n:]
	gs.wakeWaiters()
	g.forgetIfDone(id, gs)
}

// forgetIfDone drops gs once every packet it held is acked and its
// session has ended. An end marker still in the owner's outbox is sent
// all the same; markers are not redelivered. Call with g.mu held.
func (g *group) forgetIfDone(id uint64, gs *groupSession) {
	if gs.packets == 0 && !gs.sess.Connected() {
		delete(g.sessions, id)
		gs.wakeWaiters()
	}
}

// join adds m to the group and gives it the sessions no member owns, with
// what they hold. Call with g.mu held.
func (g *group) join(m *member) {
	g.members[m] = struct{}{}
	for id, gs := range g.sessions {
		if gs.owner == nil && m.selects(id) {
			g.reassign(gs, m)
		}
	}
}

// leave removes m and moves each of its sessions, with its unacked
// deliveries in order, to the member that now wins it (or to none: the
// group holds them until a member joins).
func (g *group) leave(m *member) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.members, m)
	m.outbox = nil
	for id, gs := range g.sessions {
		if gs.owner == m {
			gs.owner = nil
			if next := g.assign(id); next != nil {
				g.reassign(gs, next)
			} else {
				gs.wakeWaiters() // a waiting reader hands off (NoConsumerHandler) or holds on
			}
		}
	}
}

// reassign gives gs to m: its unacked deliveries go to m's outbox, in
// order. Call with g.mu held.
func (g *group) reassign(gs *groupSession, m *member) {
	gs.owner, gs.limits = m, m.limits
	if len(gs.unacked) > 0 {
		m.outbox = append(m.outbox, gs.unacked...)
		m.notify()
	}
	gs.wakeWaiters() // the limits may have changed
}

// take moves up to maxItems deliveries, about maxBytes of payload, from
// m's outbox into a response, marking them sent.
func (g *group) take(m *member, maxItems, maxBytes int) *tlsgatev1.ConsumeResponse {
	g.mu.Lock()
	defer g.mu.Unlock()
	n, bytes := 0, 0
	for n < len(m.outbox) && n < maxItems && (n == 0 || bytes+m.outbox[n].size() <= maxBytes) {
		bytes += m.outbox[n].size()
		n++
	}
	if n == 0 {
		return nil
	}
	resp := &tlsgatev1.ConsumeResponse{Deliveries: make([]*tlsgatev1.Delivery, n)}
	for i, d := range m.outbox[:n] {
		out := &tlsgatev1.Delivery{Redelivered: d.sent}
		if d.packet != nil {
			out.Item = &tlsgatev1.Delivery_Packet{Packet: d.packet}
		} else {
			out.Item = &tlsgatev1.Delivery_Closed{Closed: d.closed}
		}
		d.sent = true
		resp.Deliveries[i] = out
	}
	clear(m.outbox[:n])
	m.outbox = m.outbox[n:]
	if len(m.outbox) > 0 {
		m.notify()
	}
	return resp
}

// ackedThrough reports whether every packet of sess through seq is acked;
// when not, whether what is held is to be handed off (no member owns it),
// or else a channel closed when that may have changed. Call with g.mu
// held.
func (g *group) ackedThrough(sess *server.Session, seq uint64) (done, handOff bool, changed <-chan struct{}) {
	gs := g.sessions[sess.ID()]
	if gs == nil || gs.sess != sess || gs.acked >= seq || gs.packets == 0 {
		return true, false, nil
	}
	if gs.owner == nil && g.handOff != nil {
		return false, true, nil
	}
	if gs.space == nil {
		gs.space = make(chan struct{})
	}
	return false, false, gs.space
}

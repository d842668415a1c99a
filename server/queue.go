package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/tlsgate/tlsgate/wire"
)

// Errors of the session's outbound queue.
var (
	// ErrQueueFull: the queue's byte bound is hit; the packet was not queued.
	ErrQueueFull = errors.New("server: session queue full")
	// ErrClosing: the session is closing and refuses new outbound packets.
	ErrClosing = errors.New("server: session is closing")
	// ErrClosed: the session has ended.
	ErrClosed = errors.New("server: session closed")
)

// entry is one queued outbound packet.
type entry struct {
	// seq is the entry's position among everything queued in the session,
	// control frames included: what Drain waits on.
	seq uint64
	// num is the packet number of a Data entry: its place among the
	// session's outbound Data (in the epoch, for a resumable session),
	// what SendAsync returns and what a resumable client counts. A
	// control entry carries the number of the last Data before it.
	num uint64
	// dseq is a resumable session's delivery number of a Data entry,
	// assigned when it is taken for writing; 0 otherwise.
	dseq    uint64
	typ     wire.Type
	enc     wire.Encoding
	payload []byte
	// only, when set, restricts the entry to one connection: a reply or
	// barrier that means nothing to the connection that takes the session
	// over. Another connection's writer drops it.
	only *conn
}

// size is the entry's frame on the wire: what a write batch is made of.
func (e *entry) size() int { return wire.HeaderLen + len(e.payload) }

// EntryOverhead is what a queue charges a packet beyond its payload's
// allocation: the entry itself, in the queue's array (64 bytes on 64-bit
// platforms). Every bound and figure of queued or retained bytes counts a
// packet as EntryOverhead plus its payload's capacity, so that no mix of
// frame sizes (a flood of empty frames, say) holds more memory than the
// bound says.
const EntryOverhead = int(unsafe.Sizeof(entry{}))

// cost is what the entry holds in memory, as the queue's bounds count it.
func (e *entry) cost() int { return EntryOverhead + cap(e.payload) }

// queue is a session's ordered, byte-bounded outbound queue. It belongs to
// the session, not to a socket: on takeover, what is not yet taken moves to
// the new connection. Only the owner connection's writer takes.
type queue struct {
	mu    sync.Mutex
	items []entry // pending entries are items[head:]
	head  int
	bytes int
	limit int
	// highWater, shared by every session of a server, is raised to the
	// most bytes a queue has held.
	highWater *atomic.Uint64
	seq       uint64 // last position assigned
	num       uint64 // last packet number assigned to a Data entry
	// written is the position through which every entry was written to the
	// connection and flushed (or dropped as not its own), and writtenNum
	// the packet number of the last Data among them.
	written, writtenNum uint64
	owner               *conn
	// held is the cost of the batches writers have taken and not yet
	// written (each conn's share in its held field): what leaves the queue
	// stays charged to it until it is written, so that a writer blocked on
	// a full socket cannot double what the session holds.
	held int
	// inflight is the connection whose writer holds a taken batch not yet
	// written. After a takeover the new owner waits for it: the batch is
	// either written to the old connection or handed back to the front.
	inflight *conn
	state    queueState // what the queue refuses; see queueState
	// progress, when non-nil, is closed the next time written advances or
	// bytes are freed. Waiters make it; the writer closes it.
	progress chan struct{}
	// rp is a resumable session's replay state (resume.go), nil for a v1
	// one; rpLimit bounds its unacked plus queued bytes for new work.
	rp      *replay
	rpLimit int
	// mem is the server's memory bound, charged with what the queue holds
	// (charged is the share last settled; memory.go).
	mem     *memoryBound
	charged int64
}

// queueState is the stage of a queue's life, which says what it refuses
// (see refusal).
//
//	open ──seal──▶ sealed ──attach──▶ open      (a takeover reopens it)
//	open, sealed ──end──▶ ended                 (final)
//
// seal is the owner connection's close queueing its Goodbye; attach is a
// connection taking the session (over); end is the owner connection ending
// with the session. attach leaves an ended queue ended, and seal and end do
// nothing unless their connection owns the queue.
type queueState uint8

const (
	// queueOpen takes every packet, within the byte bound.
	queueOpen queueState = iota
	// queueSealed: the owner's Goodbye is queued, behind everything queued
	// before it. New work is refused (ErrClosing), and so is anything owed
	// to the peer (errReplyAfterGoodbye): it would follow the Goodbye. The
	// writer still writes everything up to the Goodbye.
	queueSealed
	// queueEnded: the session is over. The queue is empty and refuses
	// everything (ErrClosed); Drain's waiters stop waiting.
	queueEnded
)

func (s queueState) String() string {
	switch s {
	case queueOpen:
		return "open"
	case queueSealed:
		return "sealed"
	case queueEnded:
		return "ended"
	}
	return fmt.Sprintf("queueState(%d)", uint8(s))
}

// len is the number of pending entries. Call with q.mu held.
func (q *queue) len() int { return len(q.items) - q.head }

// waitChan returns the channel closed on the next progress. Call with q.mu held.
func (q *queue) waitChan() chan struct{} {
	if q.progress == nil {
		q.progress = make(chan struct{})
	}
	return q.progress
}

// notify wakes the waiters. Call with q.mu held.
func (q *queue) notify() {
	if q.progress != nil {
		close(q.progress)
		q.progress = nil
	}
}

// A queue's producers come in two kinds, and what a queue refuses depends
// on the kind: see refusal.
type producer uint8

const (
	// newWork is a packet the API starts (SendAsync, a Flush barrier). It
	// is refused once the owner's close has queued its Goodbye.
	newWork producer = iota
	// owed is a packet the peer is owed or the connection itself needs (a
	// Handler's Reply, FlushAck, Pong, Error, Ping). It is refused too once
	// the Goodbye is queued, since it would follow the Goodbye, but as a
	// reply after Goodbye, which the caller counts as dropped.
	owed
)

// enqueue queues e, new work from the API, without waiting: a full queue
// is ErrQueueFull. It is refused once the queue is sealed for a close
// (ErrClosing) and when the session has ended (ErrClosed). It returns e's
// sequence number and the queue's length right after.
func (q *queue) enqueue(e entry) (seq uint64, depth int, err error) {
	return q.tryPut(e, newWork)
}

// enqueueWait queues e, new work from the API (a Flush barrier, a send
// that waits for room), waiting for room while ctx allows. It is refused
// as enqueue is, and returns what enqueue returns.
func (q *queue) enqueueWait(ctx context.Context, e entry) (seq uint64, depth int, err error) {
	return q.putWait(ctx, e, newWork)
}

// enqueueReply queues e, a reply owed to the peer, waiting for room while
// ctx allows. It is refused once the queue is sealed for a close
// (errReplyAfterGoodbye) and when the session has ended (ErrClosed).
func (q *queue) enqueueReply(ctx context.Context, e entry) error {
	_, _, err := q.putWait(ctx, e, owed)
	return err
}

// enqueuePing queues e, the watchdog's Ping, without waiting: a full queue
// is ErrQueueFull (a client that does not read is the slow-consumer
// check's business). It is refused as enqueueReply is.
func (q *queue) enqueuePing(e entry) error {
	_, _, err := q.tryPut(e, owed)
	return err
}

// refusal returns why q refuses a packet from p now, or nil. Call with
// q.mu held.
func (q *queue) refusal(p producer) error {
	switch q.state {
	case queueEnded:
		return ErrClosed
	case queueSealed:
		if p == newWork {
			return ErrClosing
		}
		return errReplyAfterGoodbye
	}
	return nil
}

// fits reports whether n more bytes from p fit the byte bound. An empty
// queue takes an entry of any size, so that no packet waits forever. In a
// resumable session new work also counts the unacked bytes against the
// resume buffer and the memory bound; what is owed does not, because only
// the reader frees them (by reading Acks), and the reader may be the one
// waiting to queue a reply. Call with q.mu held.
func (q *queue) fits(n int, p producer) error {
	if q.bytes+q.held+n > q.limit && q.len() > 0 {
		return ErrQueueFull
	}
	if p != newWork {
		// Past the memory bound, a reply waits for what its queue holds
		// to be written: the writer frees that whatever the reader does,
		// and the waiting reader stops reading from the client meanwhile.
		if q.mem != nil && q.bytes+q.held != 0 && !q.mem.fits(n+q.growth()) {
			return ErrMemoryFull
		}
		return nil
	}
	held := q.bytes + q.held
	if rp := q.rp; rp != nil {
		held += rp.bytes
		if held+n > q.rpLimit && held != 0 {
			return ErrQueueFull
		}
	}
	if q.mem != nil && held != 0 && !q.mem.fits(n+q.growth()) {
		return ErrMemoryFull
	}
	return nil
}

// tryPut appends e unless q refuses it or it does not fit.
func (q *queue) tryPut(e entry, p producer) (seq uint64, depth int, err error) {
	q.mu.Lock()
	if err := q.refusal(p); err != nil {
		q.mu.Unlock()
		return 0, 0, err
	}
	if err := q.fits(e.cost(), p); err != nil {
		q.mu.Unlock()
		return 0, 0, err
	}
	seq, depth = q.appendUnlock(e)
	return seq, depth, nil
}

// putWait appends e unless q refuses it, waiting for room while ctx
// allows. It waits without the lock, and looks at the refusal again after
// every wake-up: a seal or the end wakes it.
func (q *queue) putWait(ctx context.Context, e entry, p producer) (seq uint64, depth int, err error) {
	n := e.cost()
	q.mu.Lock()
	for {
		if err := q.refusal(p); err != nil {
			q.mu.Unlock()
			return 0, 0, err
		}
		err := q.fits(n, p)
		if err == nil {
			break
		}
		ch := q.waitChan()
		var freed <-chan struct{} // memory freed elsewhere
		if errors.Is(err, ErrMemoryFull) {
			freed = q.mem.waitChan()
			// A free between the check and the wait would not have
			// closed freed: look again now that it is registered.
			if q.fits(n, p) == nil {
				break
			}
		}
		q.mu.Unlock()
		select {
		case <-ch:
		case <-freed:
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		}
		q.mu.Lock()
	}
	seq, depth = q.appendUnlock(e)
	return seq, depth, nil
}

// number assigns e the next position and, if it is Data, the next packet
// number. Call with q.mu held.
func (q *queue) number(e *entry) {
	q.seq++
	e.seq = q.seq
	if e.typ == wire.TypeData {
		q.num++
	}
	e.num = q.num
}

// appendUnlock numbers e, appends it and raises the high-water mark, then
// unlocks q.mu and, outside the lock, wakes the owner's writer if e is the
// only pending entry (otherwise the writer is busy or already woken). It
// returns e's packet number. Call with q.mu held.
func (q *queue) appendUnlock(e entry) (num uint64, depth int) {
	q.number(&e)
	q.items = append(q.items, e)
	q.bytes += e.cost()
	if b := uint64(q.bytes + q.held); q.highWater != nil && b > q.highWater.Load() {
		raiseTo(q.highWater, b)
	}
	num, depth = e.num, q.len()
	owner := q.owner
	q.settle()
	q.mu.Unlock()
	if depth == 1 && owner != nil {
		owner.wakeWriter()
	}
	return num, depth
}

// seal queues c's Goodbye behind everything already queued, whatever the
// byte bound, and refuses everything after it. It reports false if c does
// not own the queue or a Goodbye is already queued.
func (q *queue) seal(c *conn, e entry) bool {
	q.mu.Lock()
	if q.owner != c || q.state != queueOpen {
		q.mu.Unlock()
		return false
	}
	q.state = queueSealed
	q.number(&e)
	q.items = append(q.items, e)
	q.bytes += e.cost()
	wake := q.len() == 1
	q.settle()
	q.notify() // blocked replies now fail fast
	q.mu.Unlock()
	if wake {
		c.wakeWriter()
	}
	return true
}

// MaxBatchEntries bounds the entries a writer takes at once, beside its
// buffer's bytes: a batch's array of them is the writer's, kept between
// batches, and a flood of empty frames would otherwise make it 16,384
// entries (1 MiB). 1,024 entries is 64 KiB.
const MaxBatchEntries = 1024

// take moves queued entries into batch, oldest first, up to about maxBytes
// and MaxBatchEntries (at least one entry), if c owns the queue. It reports whether c still
// owns it and, when it took nothing, a channel to wait on if the previous
// owner still holds a batch (nil means: wait for new entries). Taking a
// buffer's worth at a time bounds what a taken-over connection can hold.
func (q *queue) take(c *conn, batch []entry, maxBytes int) (_ []entry, owned bool, wait <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.owner != c {
		return batch, false, nil
	}
	// A resumable connection whose Resume failed (the writer's gate is
	// open, resumedOK false) is closing with a protocol error: it writes
	// the queue as a v1 connection would, and replays nothing.
	if q.rp != nil && c.resumable && c.resumedOK.Load() {
		return q.takeResumable(c, batch, maxBytes), true, nil
	}
	if q.inflight != nil && q.inflight != c {
		return batch, true, q.waitChan()
	}
	pending := q.items[q.head:]
	n, size := 0, 0
	for n < min(len(pending), MaxBatchEntries) && (n == 0 || size+pending[n].size() <= maxBytes) {
		size += pending[n].size()
		n++
	}
	return q.removeTaken(c, batch, n), true, nil
}

// removeTaken moves the first n pending entries into batch for c's
// writer. Call with q.mu held.
func (q *queue) removeTaken(c *conn, batch []entry, n int) []entry {
	if n == 0 {
		return batch
	}
	pending := q.items[q.head:]
	for i := range pending[:n] {
		e := &pending[i]
		q.bytes -= e.cost()
		// Numbered Data stays in the replay buffer, charged there: the
		// batch holds only its entry.
		h := EntryOverhead
		if e.dseq == 0 {
			h = e.cost()
		}
		q.hold(c, h)
	}
	batch = append(batch, pending[:n]...)
	clear(pending[:n])
	q.head += n
	switch {
	case q.head == len(q.items) && cap(q.items) > keptEntries:
		// empty after a burst: the large array goes (see memory.go)
		q.items, q.head = nil, 0
	case q.head == len(q.items): // empty: reuse the array from the start
		q.items, q.head = q.items[:0], 0
	case q.head > len(q.items)/2: // compact, amortised O(1) per entry
		rest := copy(q.items, q.items[q.head:])
		clear(q.items[rest:])
		q.items, q.head = q.items[:rest], 0
	}
	q.inflight = c
	q.settle()
	q.notify()
	return batch
}

// hold charges cost to the batch c's writer has taken. Call with q.mu
// held.
func (q *queue) hold(c *conn, cost int) {
	c.held += cost
	q.held += cost
	q.settle()
}

// release ends the charge of c's taken batch: written or handed back.
// Call with q.mu held.
func (q *queue) release(c *conn) {
	q.held -= c.held
	c.held = 0
	q.settle()
}

// markWritten records that c's batch, through last, is on the wire.
func (q *queue) markWritten(c *conn, last *entry) {
	q.mu.Lock()
	q.release(c)
	q.written = max(q.written, last.seq)
	q.writtenNum = max(q.writtenNum, last.num)
	if q.inflight == c {
		q.inflight = nil
	}
	q.notify()
	q.mu.Unlock()
}

// handBack returns a batch c failed to write. If the session has moved to
// another connection, the batch goes back to the front of the queue, in
// order, so that nothing queued for the session is lost with the old socket
// (its last frames may have reached the old client too). Otherwise the
// batch is lost with the connection; handBack returns how many entries.
func (q *queue) handBack(c *conn, batch []entry) (lost int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.release(c)
	if q.inflight == c {
		q.inflight = nil
	}
	q.notify()
	if q.owner == c || q.owner == nil || q.state == queueEnded {
		for _, e := range batch {
			if e.dseq == 0 { // numbered Data is kept for a replay
				lost++
			}
		}
		return lost
	}
	keep := make([]entry, 0, len(batch)+q.len())
	for _, e := range batch {
		if e.only == nil && e.dseq == 0 { // numbered Data is in the replay buffer
			keep = append(keep, e)
			q.bytes += e.cost()
		}
	}
	keep = append(keep, q.items[q.head:]...)
	q.items, q.head = keep, 0
	q.settle()
	if len(keep) > 0 {
		q.owner.wakeWriter()
	}
	return 0
}

// attach makes c the owner: the queued entries will go to c. It reopens the
// queue if a close of the previous connection had sealed it.
func (q *queue) attach(c *conn) (old *conn) {
	q.mu.Lock()
	old, q.owner = q.owner, c
	if q.state == queueSealed {
		q.state = queueOpen
	}
	if !c.resumable {
		// A v1 connection takes a resumable session: what its client may
		// not have is written again, unnumbered.
		q.requeueUnacked()
	}
	q.settle()
	// The previous owner's sealed Goodbye, if queued, is only for it.
	pending := q.len() > 0
	q.notify()
	q.mu.Unlock()
	if pending {
		c.wakeWriter()
	}
	return old
}

// end marks the session over and drops what was never written. It reports
// how many entries were dropped.
func (q *queue) end(c *conn) (dropped int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.owner != c {
		return 0
	}
	dropped = q.len()
	q.rp = nil // written, and the session is over
	clear(q.items)
	q.items, q.head = nil, 0
	q.bytes = 0
	q.state = queueEnded
	q.settle()
	q.notify()
	return dropped
}

// depth returns the queue's length, and the bytes its bound counts: the
// queued entries' cost and that of the batches being written.
func (q *queue) depth() (n, bytes int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.len(), q.bytes + q.held
}

// waitWritten waits until everything through position seq is written, or
// the session ends, or ctx ends. It returns the packet number of the last
// Data written so far.
func (q *queue) waitWritten(ctx context.Context, seq uint64) (uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.written < seq {
		if q.state == queueEnded {
			return q.writtenNum, ErrClosed
		}
		ch := q.waitChan()
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			q.mu.Lock()
			return q.writtenNum, ctx.Err()
		}
		q.mu.Lock()
	}
	return q.writtenNum, nil
}

// last returns the last position and packet number assigned, and the
// epoch they belong to (empty for a session that is not resumable).
func (q *queue) last() (seq, num uint64, epoch string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.rp != nil {
		epoch = q.rp.epoch
	}
	return q.seq, q.num, epoch
}

package server

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// ErrMemoryFull: the gateway-wide memory bound (Config.MaxMemory) is
// reached; the packet was not queued. It is an ErrQueueFull, so that a
// caller that handles a full queue handles it too.
var ErrMemoryFull = fmt.Errorf("%w: the gateway's memory bound (MaxMemory) is reached", ErrQueueFull)

// memoryBound is the bound of what every session together holds
// (Config.MaxMemory): outbound queues, the batches being written, the
// replay buffers and their arrays' room, counted as the queues count them,
// and what Handlers charge (Session.ChargeMemory). Each queue settles its
// share into used after every change; new work that would take used past
// limit is refused (or waits), except into an empty queue, which takes one
// packet as its own bound allows.
type memoryBound struct {
	limit int64 // 0: no bound
	used  atomic.Int64
	peak  atomic.Int64 // the most used has been

	// freed, when non-nil, is closed the next time used drops; waiting
	// senders make it.
	mu      sync.Mutex
	freed   chan struct{}
	waiting atomic.Bool
}

// charge adds delta to what is held, waking the waiters when it drops.
func (m *memoryBound) charge(delta int64) {
	if delta == 0 {
		return
	}
	n := m.used.Add(delta)
	for p := m.peak.Load(); n > p && !m.peak.CompareAndSwap(p, n); p = m.peak.Load() {
	}
	if delta < 0 && m.waiting.Load() {
		m.mu.Lock()
		if m.freed != nil {
			close(m.freed)
			m.freed = nil
		}
		m.waiting.Store(false)
		m.mu.Unlock()
	}
}

// fits reports whether n more bytes fit the bound.
func (m *memoryBound) fits(n int) bool {
	return m.limit == 0 || m.used.Load()+int64(n) <= m.limit
}

// full reports whether the bound is reached.
func (m *memoryBound) full() bool { return m.limit != 0 && m.used.Load() >= m.limit }

// waitChan returns a channel closed the next time what is held drops.
func (m *memoryBound) waitChan() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.freed == nil {
		m.freed = make(chan struct{})
	}
	m.waiting.Store(true)
	return m.freed
}

// keptEntries is the room for entries an array of a queue or replay
// buffer keeps when it empties (4 KiB of them), and is not charged for; a
// larger array, left by a burst, is let go when it empties, and charged
// for all its unused room until then.
const keptEntries = 64

// slack is what the memory bound charges for an entry array of capacity
// c holding n entries.
func slack(c, n int) int {
	if c <= keptEntries {
		return 0
	}
	return (c - n) * EntryOverhead
}

// growth is the room the next append adds to the queue's array, as the
// memory bound charges it: append doubles a small array and grows a large
// one by about a quarter (runtime.nextslicecap), and the allocation's
// size class may add an eighth. Call with q.mu held.
func (q *queue) growth() int {
	c := cap(q.items)
	if len(q.items) != c {
		return 0
	}
	next := 2 * c
	if c >= 256 {
		next = c + (c+3*256)/4
	}
	return slack(max(next+next/8, 1), len(q.items)+1)
}

// settle charges the bound with the change of what q holds since its last
// settle: the entries' cost as the queue's own bound counts it, and the
// unused room of the arrays that hold them (a slice's growth can leave as
// much room as it holds, and a flood of empty frames is nearly all
// entries). Every method that changes the queue or the replay buffer
// calls it before it releases q.mu; one that forgets only delays the
// charge to the next. Call with q.mu held.
func (q *queue) settle() {
	if q.mem == nil {
		return
	}
	// (The slots before q.head held the entries the writer's batch holds
	// now, charged in q.held: they are not counted twice.)
	now := int64(q.bytes + q.held + slack(cap(q.items), len(q.items)))
	if rp := q.rp; rp != nil {
		now += int64(rp.bytes + slack(cap(rp.unacked), len(rp.pending())))
	}
	q.mem.charge(now - q.charged)
	q.charged = now
}

// ChargeMemory counts delta bytes (negative: released) that a Handler
// holds on the session's behalf outside its queue, such as inbound packets
// waiting for a consumer's ack, in the session's share of
// Config.MaxMemory. Every charge must be released, by the same amount.
func (s *Session) ChargeMemory(delta int) {
	s.handlerHeld.Add(int64(delta))
	s.srv.mem.charge(int64(delta))
}

// MemoryFull reports whether the sessions together hold Config.MaxMemory:
// a Handler that holds something for this session should then wait (and
// so stop reading from its client) until it has released some.
func (s *Session) MemoryFull() bool { return s.srv.mem.full() }

// DefaultMaxMemoryFraction is the share of the machine's memory (the
// cgroup's limit, when there is one) that MaxMemory defaults to.
const DefaultMaxMemoryFraction = 0.5

// DefaultMaxMemory is MaxMemory's default: half of the cgroup's memory
// limit, or of the machine's memory, or 0 (no bound) where neither can be
// read.
func DefaultMaxMemory() int64 {
	if n, err := cgroupMemoryLimit(); err == nil && n > 0 {
		return int64(float64(n) * DefaultMaxMemoryFraction)
	}
	if n, err := machineMemory(); err == nil && n > 0 {
		return int64(float64(n) * DefaultMaxMemoryFraction)
	}
	return 0
}

// cgroupMemoryLimit reads cgroup v2's memory.max; "max" (no limit) is 0.
func cgroupMemoryLimit() (int64, error) {
	b, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	return strconv.ParseInt(s, 10, 64)
}

// machineMemory reads MemTotal from /proc/meminfo.
func machineMemory() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no MemTotal in /proc/meminfo")
}

package client

import (
	"math/rand/v2"
	"time"
)

// outPacket is an application packet sent on a Resumable and not yet
// acknowledged by the server.
type outPacket struct {
	seq   uint64       // its number in the current epoch
	frame []byte       // immutable once pushed: numbers are implicit
	done  chan<- error // SendAsync's, or nil
	sent  bool         // queued on some connection: the server may have it
	dup   bool         // resent into a new epoch after being sent: may be a duplicate
}

// outBuffer is the resume buffer: the unacknowledged outbound packets, in
// order, with their numbers. It is not safe for concurrent use.
type outBuffer struct {
	pkts  []outPacket // ascending seq: acked+1 … last
	bytes int         // sum of len(frame)
	last  uint64      // number of the last packet pushed
	acked uint64      // the server's cumulative ack
}

// push appends a packet and returns its number.
func (b *outBuffer) push(frame []byte, done chan<- error) uint64 {
	b.last++
	b.pkts = append(b.pkts, outPacket{seq: b.last, frame: frame, done: done})
	b.bytes += len(frame)
	return b.last
}

// fits reports whether n more bytes fit the bound; anything fits an empty
// buffer, so that a packet larger than the bound cannot wait forever.
func (b *outBuffer) fits(n, bound int) bool {
	return len(b.pkts) == 0 || b.bytes+n <= bound
}

// ack drops every packet through seq and returns them. It returns false,
// and changes nothing, if seq is beyond the last packet pushed.
func (b *outBuffer) ack(seq uint64) ([]outPacket, bool) {
	if seq > b.last {
		return nil, false
	}
	if seq <= b.acked {
		return nil, true
	}
	b.acked = seq
	n := 0
	for n < len(b.pkts) && b.pkts[n].seq <= seq {
		b.bytes -= len(b.pkts[n].frame)
		n++
	}
	freed := append([]outPacket(nil), b.pkts[:n]...)
	clear(b.pkts[:n])
	b.pkts = b.pkts[n:]
	if len(b.pkts) == 0 {
		b.pkts = nil // let the backing array go
	}
	return freed, true
}

// after returns the packets numbered after seq (a view of pkts).
func (b *outBuffer) after(seq uint64) []outPacket {
	i := 0
	for i < len(b.pkts) && b.pkts[i].seq <= seq {
		i++
	}
	return b.pkts[i:]
}

// renumber starts a new epoch: the packets kept are numbered from 1, in
// order, and the ones that had been sent are marked as possible
// duplicates. It returns how many were.
func (b *outBuffer) renumber() (dups int) {
	for i := range b.pkts {
		b.pkts[i].seq = uint64(i + 1)
		if b.pkts[i].sent {
			b.pkts[i].dup = true
			dups++
		}
	}
	b.last, b.acked = uint64(len(b.pkts)), 0
	return dups
}

// backoff returns the wait before reconnect attempt n (from 0): uniformly
// random in [0, min(ceiling, base·2ⁿ)), "full jitter". rnd(k) returns a
// uniform int64 in [0, k).
func backoff(n int, base, ceiling time.Duration, rnd func(int64) int64) time.Duration {
	top := base
	for i := 0; i < n && top < ceiling; i++ {
		if top > ceiling/2 {
			top = ceiling
			break
		}
		top *= 2
	}
	top = min(top, ceiling)
	if top <= 0 {
		return 0
	}
	if rnd == nil {
		rnd = randInt64N
	}
	return time.Duration(rnd(int64(top)))
}

func randInt64N(n int64) int64 { return rand.Int64N(n) }

package client

import "time"

// Backoff exposes the reconnect backoff to the tests.
func Backoff(n int, base, ceiling time.Duration, rnd func(int64) int64) time.Duration {
	return backoff(n, base, ceiling, rnd)
}

// OutBuffer exposes the resume buffer to the tests.
type OutBuffer struct{ b outBuffer }

func (o *OutBuffer) Push(frame []byte) uint64   { return o.b.push(frame, nil) }
func (o *OutBuffer) MarkSent()                  { markSent(&o.b) }
func (o *OutBuffer) Fits(n, bound int) bool     { return o.b.fits(n, bound) }
func (o *OutBuffer) Renumber() int              { return o.b.renumber() }
func (o *OutBuffer) Len() int                   { return len(o.b.pkts) }
func (o *OutBuffer) Bytes() int                 { return o.b.bytes }
func (o *OutBuffer) Last() uint64               { return o.b.last }
func (o *OutBuffer) Acked() uint64              { return o.b.acked }
func (o *OutBuffer) Ack(seq uint64) (int, bool) { f, ok := o.b.ack(seq); return len(f), ok }

// After returns the numbers and frames of the packets after seq.
func (o *OutBuffer) After(seq uint64) (nums []uint64, frames []string) {
	for _, p := range o.b.after(seq) {
		nums, frames = append(nums, p.seq), append(frames, string(p.frame))
	}
	return nums, frames
}

func markSent(b *outBuffer) {
	for i := range b.pkts {
		b.pkts[i].sent = true
	}
}

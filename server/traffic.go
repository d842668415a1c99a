package server

import (
	"sync/atomic"

	"github.com/tlsgate/tlsgate/wire"
)

// TypeSlots is the length of the by-type traffic arrays: one slot per
// packet type of protocol v1, and a last one for unknown types.
const TypeSlots = int(wire.TypeAck) + 2

// typeSlot is where a packet type is counted.
func typeSlot(t wire.Type) int { return min(int(t), TypeSlots-1) }

// traffic counts packets and bytes (frame headers included) by packet
// type. Each connection has its own, written by one goroutine, so the hot
// paths pay an uncontended atomic add; the server sums them when asked.
type traffic struct {
	packets, bytes [TypeSlots]atomic.Uint64
}

func (t *traffic) add(typ wire.Type, packets, bytes uint64) {
	i := typeSlot(typ)
	t.packets[i].Add(packets)
	t.bytes[i].Add(bytes)
}

// totals sums every type.
func (t *traffic) totals() (packets, bytes uint64) {
	for i := range TypeSlots {
		packets += t.packets[i].Load()
		bytes += t.bytes[i].Load()
	}
	return packets, bytes
}

// addTo adds t's counts to sum.
func (t *traffic) addTo(sum *TrafficByType) {
	for i := range TypeSlots {
		sum.Packets[i] += t.packets[i].Load()
		sum.Bytes[i] += t.bytes[i].Load()
	}
}

// merge adds t's counts into the server's total of ended connections.
func (t *traffic) mergeInto(total *traffic) {
	for i := range TypeSlots {
		total.packets[i].Add(t.packets[i].Load())
		total.bytes[i].Add(t.bytes[i].Load())
	}
}

// TrafficByType is packets and bytes by packet type; index TypeSlots-1
// counts unknown types.
type TrafficByType struct {
	Packets, Bytes [TypeSlots]uint64
}

// Traffic returns the data plane's inbound and outbound traffic by packet
// type since start, over ended and live connections.
func (s *Server) Traffic() (in, out TrafficByType) {
	s.trafficIn.addTo(&in)
	s.trafficOut.addTo(&out)
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.in.addTo(&in)
		c.out.addTo(&out)
	}
	return in, out
}

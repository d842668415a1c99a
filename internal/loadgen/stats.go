package loadgen

import (
	"slices"
	"sync/atomic"
	"time"
)

// latencies summarises samples.
type latencies struct {
	p50, p99, max time.Duration
	n             int
}

func summarize(d []time.Duration) latencies {
	if len(d) == 0 {
		return latencies{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(q float64) time.Duration {
		i := int(q*float64(len(s))+0.5) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return latencies{p50: at(0.50), p99: at(0.99), max: s[len(s)-1], n: len(s)}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// counter counts packets in shards, one cache line each, keyed by
// connection: connections processed on different CPUs then never contend
// for one line. The load tool's own bookkeeping must not be what limits
// the figures it measures; the gateway's handler and the raw baseline
// count with it alike.
type counter struct {
	shards [16]struct {
		n atomic.Uint64
		_ [56]byte
	}
}

func (c *counter) add(key, n uint64) { c.shards[key%uint64(len(c.shards))].n.Add(n) }

func (c *counter) load() (sum uint64) {
	for i := range c.shards {
		sum += c.shards[i].n.Load()
	}
	return sum
}

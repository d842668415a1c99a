package loadgen

import (
	"slices"
	"time"

	"github.com/tlsgate/tlsgate/server"
)

// serverHandler is the in-process gateway's fallback handler.
type serverHandler = server.Handler

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

package server

import (
	"log/slog"
	"sync"
	"time"
)

// RefusalLogInterval paces the log lines of the connections refused at
// accept (by Config.MaxConns and Config.MaxConnsPerIP): the first refusal
// is logged in full, at warn, with its remote address and limit; those that
// follow are counted by reason and logged as one summary line, at warn,
// at the end of each interval in which there were any. An interval
// without a refusal ends the summaries; the next refusal is logged in full
// again. Shutdown logs what was counted and not yet logged. A flood of
// refusals thus writes one line, then one line per interval, however fast
// it comes; the counters (Stats, tlsgate_connections_refused_total) count
// every refusal.
const RefusalLogInterval = 10 * time.Second

// refusalReason is why a connection was refused at accept; its name is
// the reason label of tlsgate_connections_refused_total.
type refusalReason int

const (
	refusedMaxConns refusalReason = iota
	refusedMaxConnsPerIP
	refusedMaxMemory
	numRefusalReasons
)

var refusalReasonNames = [numRefusalReasons]string{"max_conns", "max_conns_per_ip", "max_memory"}

// refusalLog throttles the refusal log lines (see RefusalLogInterval).
type refusalLog struct {
	log *slog.Logger

	mu       sync.Mutex
	interval time.Duration
	timer    *time.Timer // runs the interval; nil between floods
	counts   [numRefusalReasons]uint64
	stopped  bool
}

func newRefusalLog(log *slog.Logger, interval time.Duration) *refusalLog {
	return &refusalLog{log: log, interval: interval}
}

// refused logs a refusal in full (msg and args) when no interval runs, and
// starts one; within an interval it only counts it.
func (r *refusalLog) refused(reason refusalReason, msg string, args ...any) {
	r.mu.Lock()
	if r.timer != nil {
		r.counts[reason]++
		r.mu.Unlock()
		return
	}
	interval := r.interval
	if !r.stopped {
		r.timer = time.AfterFunc(interval, r.tick)
	}
	r.mu.Unlock()
	r.log.Warn(msg, append(args, "reason", refusalReasonNames[reason], "summary_interval", interval)...)
}

// tick ends an interval: it logs the summary of the refusals counted in
// it and starts the next, or, when there were none, lets the next refusal
// be logged in full.
func (r *refusalLog) tick() {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	counts := r.take()
	if counts == nil {
		r.timer = nil
		r.mu.Unlock()
		return
	}
	r.timer.Reset(r.interval)
	r.mu.Unlock()
	r.log.Warn(refusalSummary, counts...)
}

// stop logs what was counted and not yet logged, and ends the intervals;
// a refusal after it is logged in full. Later calls do nothing.
func (r *refusalLog) stop() {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.stopped = true
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	counts := r.take()
	r.mu.Unlock()
	if counts != nil {
		r.log.Warn(refusalSummary, counts...)
	}
}

// refusalSummary is the message of the summary lines.
const refusalSummary = "connections refused since the last line"

// take returns the counts and the interval as the attributes of a summary
// line and zeroes the counts, or nil when all are zero. r.mu is held.
func (r *refusalLog) take() []any {
	var total uint64
	for _, n := range r.counts {
		total += n
	}
	if total == 0 {
		return nil
	}
	attrs := make([]any, 0, 2*len(r.counts))
	for i, n := range r.counts {
		attrs = append(attrs, refusalReasonNames[i], n)
	}
	r.counts = [numRefusalReasons]uint64{}
	return []any{slog.Group("refused", attrs...), "interval", r.interval}
}

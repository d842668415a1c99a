package main

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/tlsgate/tlsgate/client"
)

// resumeReporter prints a --resume client's reconnects and gaps on stderr,
// one line each. Its events come from the Resumable's supervising
// goroutine; the ones that arrive before the "connected" line are held
// until it is printed.
type resumeReporter struct {
	w io.Writer

	mu      sync.Mutex
	started bool
	held    []string
	lostAt  time.Time // of the loss being recovered from
}

// start prints the connected line, then the events held.
func (r *resumeReporter) start(connected string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started = true
	fmt.Fprint(r.w, connected)
	for _, l := range r.held {
		fmt.Fprint(r.w, l)
	}
	r.held = nil
}

// event is the client.WithResumeEvents callback.
func (r *resumeReporter) event(ev client.ResumeEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var line string
	switch ev.Kind {
	case client.EventLost:
		r.lostAt = time.Now()
		line = fmt.Sprintf("tlsgate: connection lost (%v); reconnecting", ev.Cause)
	case client.EventReconnectFailed:
		line = fmt.Sprintf("tlsgate: reconnect attempt %d failed (%v); retrying", ev.Attempt, ev.Cause)
	case client.EventResumed:
		if ev.Attempt == 0 {
			return // the first connection: the connected line
		}
		took := time.Since(r.lostAt).Round(time.Millisecond)
		if ev.Resumed {
			line = fmt.Sprintf("tlsgate: resumed epoch %s after %s in %s (%d lines resent)", ev.Epoch, attempts(ev.Attempt), took, ev.Resent)
		} else {
			line = fmt.Sprintf("tlsgate: reconnected after %s in %s, in a new epoch %s (resumed=false)", attempts(ev.Attempt), took, ev.Epoch)
		}
	case client.EventGap:
		line = fmt.Sprintf("tlsgate: GAP: the server started a new epoch %s (resumed=false) instead of resuming %s: packets may be missing or repeated (%d lines resent, %d of them possibly twice)",
			ev.Epoch, ev.PrevEpoch, ev.Resent, ev.Duplicates)
	default:
		return
	}
	line += "\n"
	if !r.started {
		r.held = append(r.held, line)
		return
	}
	fmt.Fprint(r.w, line)
}

func attempts(n int) string {
	if n == 1 {
		return "1 attempt"
	}
	return fmt.Sprintf("%d attempts", n)
}

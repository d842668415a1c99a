package server_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/server"
)

// refusedTLS dials addr over TLS and expects the handshake to fail: the
// server closed the connection at accept.
func refusedTLS(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		_ = c.Close()
		t.Fatal("a TLS handshake past the connection limit succeeded")
	}
	if ctx.Err() != nil {
		t.Fatalf("the refused dial did not end within 10 s: %v", err)
	}
}

// notifyingLog is a logBuffer that signals each write.
type notifyingLog struct {
	logBuffer
	wrote chan struct{} // cap 1
}

func newNotifyingLog() *notifyingLog { return &notifyingLog{wrote: make(chan struct{}, 1)} }

func (l *notifyingLog) Write(p []byte) (int, error) {
	n, err := l.logBuffer.Write(p)
	select {
	case l.wrote <- struct{}{}:
	default:
	}
	return n, err
}

// refusalLines are the refusal lines of a JSON log.
type refusalLines struct {
	full      int               // refusals logged in full
	summaries int               // summary lines
	counted   map[string]uint64 // the summaries' counts, by reason
}

func parseRefusals(t *testing.T, log string) refusalLines {
	t.Helper()
	r := refusalLines{counted: map[string]uint64{}}
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var line struct {
			Msg     string            `json:"msg"`
			Refused map[string]uint64 `json:"refused"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		switch {
		case strings.HasPrefix(line.Msg, "connection refused"):
			r.full++
		case strings.HasPrefix(line.Msg, "connections refused"):
			r.summaries++
			for reason, n := range line.Refused {
				r.counted[reason] += n
			}
		}
	}
	return r
}

// TestRefusalsAreLoggedOnceThenSummarized: a burst of connections refused
// at the limit writes one full line and, at shutdown, one summary whose
// counts add up to the rest, by reason; not a line per refusal.
func TestRefusalsAreLoggedOnceThenSummarized(t *testing.T) {
	for _, tc := range []struct {
		name, reason, other string
		cfg                 server.Config
		refusedTotal        func(server.Stats) uint64
	}{
		{"max conns", "max_conns", "max_conns_per_ip", server.Config{MaxConns: 1}, func(s server.Stats) uint64 { return s.RefusedTotal }},
		{"max conns per IP", "max_conns_per_ip", "max_conns", server.Config{MaxConnsPerIP: 1}, func(s server.Stats) uint64 { return s.RefusedPerIP }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := newNotifyingLog()
			tc.cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
			ts := startServer(t, tc.cfg)
			ts.dialClient(t, newKey(t)) // the one connection the limit allows
			const n = 100
			start := time.Now()
			for range n {
				refusedTLS(t, ts.addr)
			}
			if got := tc.refusedTotal(ts.Stats()); got != n {
				t.Fatalf("refused %d, want %d", got, n)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := ts.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			elapsed := time.Since(start)
			r := parseRefusals(t, logs.String())
			if r.full+int(r.counted[tc.reason]) != n || r.counted[tc.other] != 0 {
				t.Errorf("%d refusals logged in full and %v summarized, want %d of %s in all", r.full, r.counted, n, tc.reason)
			}
			// One interval (10 s) is longer than the test: one line at the
			// first refusal, one summary at shutdown. Under a very slow
			// machine, one more of each per interval elapsed.
			intervals := int(elapsed / server.RefusalLogInterval)
			if r.full < 1 || r.full > 1+intervals || r.summaries < 1 || r.summaries > 1+intervals {
				t.Errorf("%d full refusal lines and %d summaries in %s for %d refusals; want 1 and 1 (one more of each per %s)\n%s",
					r.full, r.summaries, elapsed, n, server.RefusalLogInterval, logs)
			}
		})
	}
}

// TestRefusalSummariesComeAtMostOncePerInterval: with a short interval,
// the summaries come on their own (no refusal, no shutdown needed), at
// most one per interval elapsed, and every refusal is in the log once.
func TestRefusalSummariesComeAtMostOncePerInterval(t *testing.T) {
	logs := newNotifyingLog()
	ts := startServer(t, server.Config{MaxConns: 1, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	const interval = 20 * time.Millisecond
	server.SetRefusalLogInterval(ts.Server, interval)
	ts.dialClient(t, newKey(t))
	const n = 300
	start := time.Now()
	for range n {
		refusedTLS(t, ts.addr)
	}
	// Refusals are over; the summary of the last interval comes from
	// the timer.
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for r := parseRefusals(t, logs.String()); r.full+int(r.counted["max_conns"]) < n; r = parseRefusals(t, logs.String()) {
		select {
		case <-logs.wrote:
		case <-deadline.C:
			t.Fatalf("the last refusals were never summarized: %d in full, %v summarized of %d\n%s", r.full, r.counted, n, logs)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	r := parseRefusals(t, logs.String())
	if total := r.full + int(r.counted["max_conns"]); total != n {
		t.Errorf("%d refusals logged in full and %v summarized, want %d in all", r.full, r.counted, n)
	}
	// Each full line starts an interval, each summary ends one that had
	// refusals, and intervals do not overlap.
	most := int(elapsed/interval) + 1
	if r.full > most || r.summaries > most {
		t.Errorf("%d full refusal lines and %d summaries in %s, want at most %d of each (one per %s)", r.full, r.summaries, elapsed, most, interval)
	}
	if r.full+r.summaries >= n/2 {
		t.Errorf("%d refusal lines for %d refusals: not throttled", r.full+r.summaries, n)
	}
}

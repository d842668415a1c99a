package server_test

// The bad-input tests (badinput_*_test.go) prove that hostile input on the
// data plane, the list in docs/security.md, is bounded and leaves every
// other session alone. Each kind of input is a row, a subtest named after
// it, and each row runs on a server of its own, beside a well-behaved
// bystander session that echoes round trips all the while; every row
// checks its reaction, the server's counters and logs, and that the
// bystander kept its round trips going before, during and after. This
// file is their harness.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// inputRow is one row: a kind of bad input, and the test of it.
type inputRow struct {
	name string
	run  func(*testing.T)
}

// runRows runs each row as a subtest, in order.
func runRows(t *testing.T, rows []inputRow) {
	t.Helper()
	for _, in := range rows {
		t.Run(in.name, in.run)
	}
}

// logBuffer collects a server's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// count returns how many log lines contain every one of parts.
func (l *logBuffer) count(parts ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for line := range strings.Lines(l.b.String()) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// wantLogs fails unless exactly n log lines contain all of parts.
func (l *logBuffer) want(t *testing.T, n int, parts ...string) {
	t.Helper()
	if got := l.count(parts...); got != n {
		t.Errorf("%d log lines with %q, want %d; the log:\n%s", got, parts, n, l)
	}
}

// bystander is a well-behaved session of the Go client library that
// echoes numbered round trips, paced by a ticker, until the row ends. It
// stands for every other session on the server: a row's bad input must
// not stall it, nor break it.
type bystander struct {
	c      *client.Conn
	trips  atomic.Int64
	maxRTT atomic.Int64
	tick   chan struct{} // cap 1: a round trip completed
	stop   chan struct{}
	done   chan struct{}
	err    error // set before done is closed
}

// bystanderPace paces the bystander's round trips: steady traffic that
// leaves the CPU to the row under test.
const bystanderPace = 5 * time.Millisecond

func startBystander(t *testing.T, ts *testServer) *bystander {
	t.Helper()
	b := &bystander{c: ts.dialClient(t, newKey(t)), tick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go b.loop()
	t.Cleanup(func() { // before dialClient's Close: cleanups run last first
		select {
		case <-b.stop:
		default:
			close(b.stop)
		}
		<-b.done
	})
	return b
}

func (b *bystander) loop() {
	defer close(b.done)
	pace := time.NewTicker(bystanderPace)
	defer pace.Stop()
	for i := 0; ; i++ {
		select {
		case <-b.stop:
			return
		case <-pace.C:
		}
		msg := "bystander " + strconv.Itoa(i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		err := b.c.Send(ctx, client.Data([]byte(msg)))
		var p client.Packet
		if err == nil {
			p, err = b.c.Recv(ctx)
		}
		cancel()
		switch {
		case err != nil:
			b.err = fmt.Errorf("round trip %d: %w", i, err)
			return
		case p.Type != wire.TypeData || string(p.Payload) != msg:
			b.err = fmt.Errorf("round trip %d: got %s %q, want the echo of %q", i, p.Type, p.Payload, msg)
			return
		}
		if rtt := int64(time.Since(start)); rtt > b.maxRTT.Load() {
			b.maxRTT.Store(rtt)
		}
		b.trips.Add(1)
		select {
		case b.tick <- struct{}{}:
		default:
		}
	}
}

// waitTrips waits until the bystander has completed n more round trips.
func (b *bystander) waitTrips(t *testing.T, n int64) {
	t.Helper()
	want := b.trips.Load() + n
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for b.trips.Load() < want {
		select {
		case <-b.tick:
		case <-b.done:
			t.Fatalf("bystander stopped: %v", b.err)
		case <-timeout.C:
			t.Fatalf("bystander made %d of %d round trips in 10s", n-(want-b.trips.Load()), n)
		}
	}
}

// row is one row's server, its logs and its bystander.
type row struct {
	ts   *testServer
	logs *logBuffer
	by   *bystander
}

// newRow starts a server with cfg (logging at debug level into the row's
// buffer) and its bystander, and checks that the bystander works before
// the bad input.
func newRow(t *testing.T, cfg server.Config) *row {
	t.Helper()
	r := &row{logs: &logBuffer{}}
	var w io.Writer = r.logs
	if testing.Verbose() {
		w = io.MultiWriter(r.logs, os.Stderr)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r.ts = startServer(t, cfg)
	r.by = startBystander(t, r.ts)
	r.by.waitTrips(t, 3)
	return r
}

// unaffected checks the bystander after the row: it still makes round
// trips, none failed, and its session is still there.
func (r *row) unaffected(t *testing.T) {
	t.Helper()
	r.by.waitTrips(t, 3)
	if _, ok := r.ts.Session(r.by.c.ID()); !ok {
		t.Fatal("the bystander's session is gone")
	}
	t.Logf("bystander: %d round trips, slowest %s", r.by.trips.Load(), time.Duration(r.by.maxRTT.Load()).Round(time.Microsecond))
}

// wantFailures checks the handshake failure counters: exactly want, by
// reason, and zero for every other reason.
func wantFailures(t *testing.T, ts *testServer, want map[string]uint64) {
	t.Helper()
	for reason, n := range ts.Stats().HandshakeFailed {
		if n != want[reason] {
			t.Errorf("handshake failures %q: %d, want %d", reason, n, want[reason])
		}
	}
}

// rowHandler records every packet, and echoes those whose payload does not
// start with "noecho".
type rowHandler struct{ countingHandler }

func (h *rowHandler) Handle(ctx context.Context, s *server.Session, p server.Packet) {
	h.countingHandler.Handle(ctx, s, p)
	if !bytes.HasPrefix(p.Payload, []byte("noecho")) {
		_ = s.Reply(ctx, p.Type, p.Encoding, p.Payload)
	}
}

// nextEvent returns the next event of kind, of any session, within 10 s.
func (ts *testServer) nextEvent(t *testing.T, kind server.EventKind) server.Event {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case e := <-ts.events:
			if e.Kind == kind {
				return e
			}
		case <-timeout.C:
			t.Fatalf("no %s event within 10s", kind)
		}
	}
}

// expectClosed reads nc until the server closes it, within 10 s, and
// returns what it read. A reset counts as closed; a timeout fails.
func expectClosed(t *testing.T, nc net.Conn) []byte {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(nc)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after %d bytes: %v; want the server to close the connection", len(got), err)
	}
	return got
}

package server_test

// TestBadInput proves that hostile input on the data plane (the list in
// docs/security.md) is bounded and leaves other sessions alone: one subtest
// per kind of input, each a row. Each row runs on a server of its own,
// beside a well-behaved bystander session that echoes round trips all the
// while; every row checks its reaction, the server's counters and logs, and
// that the bystander kept its round trips going before, during and after.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

func TestBadInput(t *testing.T) {
	for _, row := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"plain TCP client sending HTTP or garbage", badInputNotTLS},
		{"TLS ok then nothing (slowloris)", badInputSlowloris},
		{"1 byte per second", badInputByteBySecond},
		{"wrong handshake version byte", badInputHandshakeVersion},
		{"bad signature", badInputBadSignature},
		{"short read", badInputShortRead},
		{"frame with bad version or reserved encoding", badInputBadFrameHeader},
		{"unknown packet type", badInputUnknownType},
		{"control payload that does not decode (JSON and MessagePack)", badInputBadControlPayload},
		{"frame longer than the configured maximum", badInputFrameTooLong},
		{"truncated frame then EOF", badInputTruncatedFrame},
		{"flood", badInputFlood},
		{"slow reader", badInputSlowReader},
		{"idle client", badInputIdleClient},
		{"too many connections in total or from one IP", badInputTooManyConnections},
		{"1,000 takeovers of one identity", badInputTakeoverStorm},
	} {
		t.Run(row.name, row.run)
	}
}

// ---- The harness of the rows ------------------------------------------------

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

// dialFrom connects key from the local address local (any when nil),
// without t: it may run on any goroutine. The caller closes the Conn.
func dialFrom(local net.Addr, addr string, key ed25519.PrivateKey) (*wiretest.Conn, error) {
	c, err := wiretest.DialTLS(addr, wiretest.From(local), wiretest.Wait(20*time.Second))
	if err != nil {
		return nil, err
	}
	if err := c.Handshake(key); err != nil {
		_ = c.Close()
		return nil, err
	}
	return c, nil
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

// ---- The rows ---------------------------------------------------------------------------

// badInputNotTLS: HTTP or garbage instead of a TLS ClientHello. The TLS
// handshake fails, the connection is closed, and it is logged at debug
// level and counted (reason "tls").
func badInputNotTLS(t *testing.T) {
	r := newRow(t, server.Config{})
	junk := map[string][]byte{
		"HTTP":                       []byte("GET / HTTP/1.1\r\nHost: gateway.example\r\n\r\n"),
		"garbage":                    bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 256),
		"TLS record of another type": append([]byte{0x17, 0x03, 0x03, 0x00, 0x10}, make([]byte, 16)...),
	}
	for name, b := range junk {
		nc, err := net.Dial("tcp", r.ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Write(b); err != nil {
			t.Fatal(err)
		}
		if got := expectClosed(t, nc); len(got) > 7 { // at most a TLS alert
			t.Errorf("%s: the server answered %d bytes %q", name, len(got), got)
		}
		_ = nc.Close()
	}
	r.by.waitTrips(t, 3)
	wantFailures(t, r.ts, map[string]uint64{"tls": uint64(len(junk))})
	r.logs.want(t, len(junk), "level=DEBUG", `msg="TLS handshake failed"`, "reason=tls")
	if n := len(r.ts.Sessions()); n != 1 {
		t.Errorf("%d sessions, want the bystander's alone", n)
	}
	r.unaffected(t)
}

// badInputSlowloris: connections that open and then send nothing, before
// TLS or after it, are closed at the handshake timeout, counted ("timeout")
// and logged; meanwhile new clients are served.
func badInputSlowloris(t *testing.T) {
	const timeout, each = time.Second, 5
	r := newRow(t, server.Config{HandshakeTimeout: timeout})
	start := time.Now()
	tripsBefore := r.by.trips.Load()
	var conns []net.Conn
	for range each { // TCP, then nothing
		nc, err := net.Dial("tcp", r.ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = nc.Close() })
		conns = append(conns, nc)
	}
	for range each { // TLS and the ServerHello, then nothing
		c := wiretest.Dial(t, r.ts.addr)
		c.ReadHello(t)
		conns = append(conns, c.TLS())
	}
	// While they hang, a new client connects and is served.
	fresh := wiretest.Connect(t, r.ts.addr, newKey(t))
	bystanderEcho(t, fresh, "served while the others hang")
	for i, nc := range conns {
		if got := expectClosed(t, nc); len(got) != 0 {
			t.Errorf("connection %d: the server sent %d bytes before closing", i, len(got))
		}
	}
	elapsed := time.Since(start)
	if elapsed < timeout || elapsed > timeout+5*time.Second {
		t.Errorf("closed after %s, want the handshake timeout of %s", elapsed, timeout)
	}
	if r.by.trips.Load() == tripsBefore {
		t.Error("the bystander made no round trip while the connections hung")
	}
	wantFailures(t, r.ts, map[string]uint64{"timeout": 2 * each})
	r.logs.want(t, each, `msg="TLS handshake failed"`, "reason=timeout")
	r.logs.want(t, each, `msg="handshake failed"`, "stage=auth", "reason=timeout")
	r.unaffected(t)
}

// tickConn writes one byte per tick: a client dribbling its handshake.
type tickConn struct {
	net.Conn
	tick    <-chan time.Time
	written atomic.Int64
}

func (c *tickConn) Write(b []byte) (int, error) {
	for i := range b {
		<-c.tick
		if _, err := c.Conn.Write(b[i : i+1]); err != nil {
			return i, err
		}
		c.written.Add(1)
	}
	return len(b), nil
}

// badInputByteBySecond: a client that sends its handshake one byte at a
// time (here every 20 ms against a 1 s handshake timeout: a client auth
// would take 2 s, a ClientHello 5 s) is closed at the handshake
// timeout although it never stops sending: the timeout bounds the whole
// handshake, it is not an idle timeout.
func badInputByteBySecond(t *testing.T) {
	const timeout, pace = time.Second, 20 * time.Millisecond
	r := newRow(t, server.Config{HandshakeTimeout: timeout})

	t.Run("TLS ClientHello", func(t *testing.T) {
		start := time.Now()
		nc, err := net.Dial("tcp", r.ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		tick := time.NewTicker(pace)
		defer tick.Stop()
		slow := &tickConn{Conn: nc, tick: tick.C}
		tc := tls.Client(slow, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err == nil {
			t.Fatal("the dribbled TLS handshake completed")
		}
		elapsed := time.Since(start)
		if elapsed < timeout || elapsed > timeout+5*time.Second {
			t.Errorf("closed after %s, want the handshake timeout of %s", elapsed, timeout)
		}
		if n := slow.written.Load(); n < 5 {
			t.Errorf("only %d bytes were written: the test did not dribble", n)
		}
	})
	t.Run("client auth", func(t *testing.T) {
		start := time.Now()
		c := wiretest.Dial(t, r.ts.addr)
		hello := c.ReadHello(t)
		auth := wire.SignAuth(newKey(t), hello.Nonce, c.CertHash()).Append(nil)
		var got []byte
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			_ = c.TLS().SetReadDeadline(time.Now().Add(10 * time.Second))
			got, _ = io.ReadAll(c.Stream())
		}()
		tick := time.NewTicker(pace)
		defer tick.Stop()
		written, _ := c.Dribble(auth, tick.C, closed) // until the server closes, or a write fails
		<-closed
		if written == len(auth) {
			t.Fatalf("the whole client auth went through one byte at a time (server sent %q)", got)
		}
		elapsed := time.Since(start)
		if elapsed < timeout || elapsed > timeout+5*time.Second {
			t.Errorf("closed after %s, want the handshake timeout of %s", elapsed, timeout)
		}
		if len(got) != 0 || written < 5 {
			t.Errorf("server sent %q after the hello; %d bytes dribbled: want nothing sent, several bytes dribbled", got, written)
		}
	})
	wantFailures(t, r.ts, map[string]uint64{"timeout": 2})
	r.logs.want(t, 1, `msg="TLS handshake failed"`, "reason=timeout")
	r.logs.want(t, 1, `msg="handshake failed"`, "stage=auth", "reason=timeout")
	r.unaffected(t)
}

// badInputHandshakeVersion: a client auth whose version byte is not 0x01
// is refused: nothing sent back, closed, logged with its reason, counted.
func badInputHandshakeVersion(t *testing.T) {
	r := newRow(t, server.Config{})
	key := newKey(t)
	for _, v := range []byte{0x00, 0x02, 0xff} {
		refusedAfter(t, r.ts, func(nonce, hash [32]byte) []byte {
			b := wire.SignAuth(key, nonce, hash).Append(nil)
			b[0] = v
			return b
		})
		r.by.waitTrips(t, 1)
	}
	wantFailures(t, r.ts, map[string]uint64{"version": 3})
	r.logs.want(t, 3, "level=INFO", `msg="handshake failed"`, "stage=auth", "reason=version")
	r.unaffected(t)
}

// badInputBadSignature: signatures over another certificate (a relay),
// another nonce (a replay), with another key, or corrupted, are refused.
func badInputBadSignature(t *testing.T) {
	r := newRow(t, server.Config{})
	key, other := newKey(t), newKey(t)
	for name, answer := range map[string]func(nonce, hash [32]byte) []byte{
		"over another certificate": func(nonce, _ [32]byte) []byte {
			return wire.SignAuth(key, nonce, sha256.Sum256([]byte("a relay's certificate"))).Append(nil)
		},
		"over another nonce": func(nonce, hash [32]byte) []byte {
			nonce[31] ^= 0x80
			return wire.SignAuth(key, nonce, hash).Append(nil)
		},
		"by another key": func(nonce, hash [32]byte) []byte {
			b := wire.SignAuth(key, nonce, hash).Append(nil)
			copy(b[1:], other.Public().(ed25519.PublicKey))
			return b
		},
		"corrupted": func(nonce, hash [32]byte) []byte {
			b := wire.SignAuth(key, nonce, hash).Append(nil)
			b[len(b)-1] ^= 1
			return b
		},
	} {
		t.Run(name, func(t *testing.T) { refusedAfter(t, r.ts, answer) })
		r.by.waitTrips(t, 1)
	}
	wantFailures(t, r.ts, map[string]uint64{"signature": 4})
	r.logs.want(t, 4, `msg="handshake failed"`, "stage=verify", "reason=signature")
	if _, ok := r.ts.Session(wire.SessionID(key.Public().(ed25519.PublicKey))); ok {
		t.Error("a session exists for the key of the bad signatures")
	}
	r.unaffected(t)
}

// badInputShortRead: a client auth cut short by the end of the stream is
// refused, logged and counted ("short_read").
func badInputShortRead(t *testing.T) {
	r := newRow(t, server.Config{})
	for _, n := range []int{0, 1, 10, wire.ClientAuthLen - 1} {
		c := wiretest.Dial(t, r.ts.addr)
		c.ReadHello(t)
		c.WriteRaw(t, make([]byte, n))
		_ = c.CloseWrite() // close_notify: the end of the stream
		if got := expectClosed(t, c.TLS()); len(got) != 0 {
			t.Errorf("%d bytes: the server sent %q", n, got)
		}
		_ = c.Close()
		r.by.waitTrips(t, 1)
	}
	wantFailures(t, r.ts, map[string]uint64{"short_read": 4})
	r.logs.want(t, 4, `msg="handshake failed"`, "stage=auth", "reason=short_read")
	r.unaffected(t)
}

// badInputBadFrameHeader: a frame whose version byte is not 0x01, or whose
// encoding bits are reserved, loses the framing: the server answers an
// Error protocol_error, then closes gracefully with Goodbye protocol_error.
// What came before is processed; nothing after it is.
func badInputBadFrameHeader(t *testing.T) {
	h := &rowHandler{}
	r := newRow(t, server.Config{Handler: h})
	for name, header := range map[string][]byte{
		"version 0x00":        {0x00, byte(wire.TypeData), 0, 1},
		"version 0x02":        {0x02, byte(wire.TypeData), 0, 1},
		"reserved encoding 2": {wire.Version, 2<<6 | byte(wire.TypeData), 0, 1},
		"reserved encoding 3": {wire.Version, 3<<6 | byte(wire.TypeFlush), 0, 1},
	} {
		t.Run(name, func(t *testing.T) {
			rc := wiretest.Connect(t, r.ts.addr, newKey(t))
			rc.WriteFrame(t, wire.TypeData, wire.MsgPack, []byte("before"))
			if f := rc.Read(t); string(f.Payload) != "before" {
				t.Fatalf("echo before the bad frame: %s %q", f.Type, f.Payload)
			}
			frames := append(append([]byte{}, header...), 'x')
			frames = wire.AppendFrame(frames, wire.TypeData, wire.JSON, []byte("after"))
			rc.WriteRaw(t, frames)
			expectError(t, rc, wire.JSON, wire.CodeProtocolError, 0)
			r.by.waitTrips(t, 1)
			expectProtocolClose(t, r.ts, rc)
			if got := h.got(rc.ID()); len(got) != 1 || string(got[0]) != "before" {
				t.Errorf("processed %q, want [before] alone", got)
			}
		})
	}
	r.logs.want(t, 4, `msg="protocol error, closing"`, "code=protocol_error")
	r.unaffected(t)
}

// badInputUnknownType: a frame of a type protocol v1 does not define gets
// an Error unknown_type naming it, in the frame's encoding, and the
// connection stays open and working.
func badInputUnknownType(t *testing.T) {
	r := newRow(t, server.Config{})
	rc := wiretest.Connect(t, r.ts.addr, newKey(t))
	i := 0
	for _, typ := range []wire.Type{7, 8, 42, 63} {
		for _, enc := range []wire.Encoding{wire.JSON, wire.MsgPack} {
			rc.WriteFrame(t, typ, enc, []byte("?"))
			expectError(t, rc, enc, wire.CodeUnknownType, typ)
			i++
			expectStillOpen(t, rc, uint64(i))
			r.by.waitTrips(t, 1)
		}
	}
	bystanderEcho(t, rc, "data still flows")
	if sess, ok := r.ts.Session(rc.ID()); !ok || sess.Info().State != server.StateActive {
		t.Fatal("the session is no longer active")
	}
	r.unaffected(t)
}

// badInputBadControlPayload: Flush and Ping payloads that do not decode, in
// JSON and in MessagePack, get an Error bad_payload in the same encoding;
// the connection stays open. FlushAck and Pong are never answered with an
// Error (two peers must not loop): they are logged and dropped.
func badInputBadControlPayload(t *testing.T) {
	r := newRow(t, server.Config{})
	rc := wiretest.Connect(t, r.ts.addr, newKey(t))
	for i, c := range []struct {
		typ     wire.Type
		enc     wire.Encoding
		payload string
	}{
		{wire.TypeFlush, wire.JSON, ""},
		{wire.TypeFlush, wire.JSON, "{"},
		{wire.TypeFlush, wire.JSON, `{"seq":"one"}`},
		{wire.TypeFlush, wire.JSON, `{"seq":-1}`},
		{wire.TypeFlush, wire.JSON, "\x81\xa3seq\x01"}, // MessagePack under the JSON bits
		{wire.TypeFlush, wire.MsgPack, ""},
		{wire.TypeFlush, wire.MsgPack, "\xc1"},
		{wire.TypeFlush, wire.MsgPack, `{"seq":1}`}, // JSON under the MessagePack bits
		{wire.TypePing, wire.JSON, "[]"},
		{wire.TypePing, wire.JSON, `{"nonce":1.5}`},
		{wire.TypePing, wire.MsgPack, "\x81\xa5nonce\xa1x"},
		{wire.TypePing, wire.MsgPack, "\x92\x01\x02"},
	} {
		rc.WriteFrame(t, c.typ, c.enc, []byte(c.payload))
		expectError(t, rc, c.enc, wire.CodeBadPayload, c.typ)
		expectStillOpen(t, rc, uint64(i))
	}
	r.by.waitTrips(t, 1)
	for _, enc := range []wire.Encoding{wire.JSON, wire.MsgPack} {
		rc.WriteFrame(t, wire.TypeFlushAck, enc, []byte("\xc1{"))
		rc.WriteFrame(t, wire.TypePong, enc, []byte("\xc1{"))
	}
	expectStillOpen(t, rc, 99) // the next frame is the Pong: no Error came first
	bystanderEcho(t, rc, "data still flows")
	// Logged at warn once, then at debug: a client cannot flood the log.
	r.logs.want(t, 1, "level=WARN", `msg="undecodable control packet"`, "further slips of this connection are logged at debug")
	r.logs.want(t, 3, "level=DEBUG", `msg="undecodable control packet"`)
	r.unaffected(t)
}

// badInputFrameTooLong: a frame header announcing more than the configured
// maximum payload gets Error frame_too_large, then the graceful close with
// Goodbye protocol_error; the payload and anything after it are read and
// discarded, never processed. A frame of exactly the maximum is fine.
func badInputFrameTooLong(t *testing.T) {
	const maxPayload = 1000
	h := &rowHandler{}
	r := newRow(t, server.Config{Handler: h, MaxPayload: maxPayload})
	rc := wiretest.Connect(t, r.ts.addr, newKey(t))
	largest := bytes.Repeat([]byte("m"), maxPayload)
	rc.WriteFrame(t, wire.TypeData, wire.JSON, largest)
	if f := rc.Read(t); !bytes.Equal(f.Payload, largest) {
		t.Fatalf("a frame of exactly the maximum: got %s of %d bytes", f.Type, len(f.Payload))
	}
	over := wire.AppendFrame(nil, wire.TypeData, wire.MsgPack, bytes.Repeat([]byte("o"), maxPayload+1))
	over = wire.AppendFrame(over, wire.TypeData, wire.JSON, []byte("after"))
	rc.WriteRaw(t, over)
	expectError(t, rc, wire.MsgPack, wire.CodeFrameTooLarge, wire.TypeData)
	r.by.waitTrips(t, 1)
	expectProtocolClose(t, r.ts, rc)
	if got := h.got(rc.ID()); len(got) != 1 || len(got[0]) != maxPayload {
		t.Errorf("processed %d packets, want the one of the maximum size alone", len(got))
	}
	r.logs.want(t, 1, `msg="protocol error, closing"`, "code=frame_too_large")
	r.unaffected(t)
}

// badInputTruncatedFrame: the stream ends inside a frame (its header or its
// payload). Every whole frame before it is processed, and the truncation
// is recorded in the closed event and the log.
func badInputTruncatedFrame(t *testing.T) {
	h := &rowHandler{}
	r := newRow(t, server.Config{Handler: h})

	t.Run("close_notify inside a payload", func(t *testing.T) {
		rc := wiretest.Connect(t, r.ts.addr, newKey(t))
		for i := range 3 {
			rc.WriteFrame(t, wire.TypeData, wire.JSON, fmt.Appendf(nil, "whole %d", i))
		}
		rc.WriteRaw(t, []byte{wire.Version, byte(wire.TypeData), 0, 10, 'x'})
		_ = rc.CloseWrite()
		// The echoes of the whole frames, then the server's Goodbye.
		for i := range 3 {
			if f := rc.Read(t); string(f.Payload) != fmt.Sprintf("whole %d", i) {
				t.Fatalf("echo %d: %s %q", i, f.Type, f.Payload)
			}
		}
		if f := rc.Read(t); f.Type != wire.TypeGoodbye {
			t.Fatalf("got %s, want Goodbye", f.Type)
		}
		rc.ExpectEOF(t)
		ev := r.ts.waitEvent(t, server.EventClosed, rc.ID())
		if got := h.got(rc.ID()); len(got) != 3 || !ev.Close.TruncatedFrame || ev.Close.PacketsIn != 3 {
			t.Fatalf("processed %q, closed %+v: want the 3 whole frames and the truncation recorded", got, ev.Close)
		}
	})
	t.Run("TCP close inside a header", func(t *testing.T) {
		rc := wiretest.Connect(t, r.ts.addr, newKey(t))
		for i := range 3 {
			rc.WriteFrame(t, wire.TypeData, wire.MsgPack, fmt.Appendf(nil, "noecho %d", i))
		}
		rc.WriteRaw(t, []byte{wire.Version, byte(wire.TypeData)})
		_ = rc.Abort() // no close_notify either
		ev := r.ts.waitEvent(t, server.EventClosed, rc.ID())
		if got := h.got(rc.ID()); len(got) != 3 || string(got[2]) != "noecho 2" || ev.Close.PacketsIn != 3 {
			t.Fatalf("processed %q, closed %+v: want the 3 whole frames", got, ev.Close)
		}
		if ev.Close.Outcome != server.OutcomePeerClosed {
			t.Errorf("outcome %s, want peer_closed", ev.Close.Outcome)
		}
	})
	r.by.waitTrips(t, 1)
	if n := r.logs.count(`msg="stream ended inside a frame"`); n < 1 {
		t.Errorf("the truncation was not logged:\n%s", r.logs)
	}
	r.unaffected(t)
}

// badInputFlood: clients write Data frames as fast as they can while the
// handler of their sessions is blocked. The server stops reading them, so
// the back-pressure reaches the clients through TCP: their writes block (a
// write deadline expires). The server's memory stays bounded (it holds one
// frame per flooder, and its read buffer), the bystander keeps its round
// trips, and once the handler is released every frame the clients wrote
// is processed, in order.
func badInputFlood(t *testing.T) {
	const flooders = 4
	type flooder struct {
		rc      *wiretest.Conn
		sess    *server.Session
		written int
		err     error
		got     []int // guarded by mu
		blocked chan struct{}
		once    sync.Once
	}
	var (
		mu      sync.Mutex
		byID    = map[uint64]*flooder{}
		release = make(chan struct{})
	)
	handler := server.HandlerFunc(func(ctx context.Context, s *server.Session, p server.Packet) {
		mu.Lock()
		f := byID[s.ID()]
		mu.Unlock()
		if f == nil {
			_ = s.Reply(ctx, p.Type, p.Encoding, p.Payload)
			return
		}
		f.once.Do(func() { close(f.blocked) })
		select {
		case <-release:
		case <-ctx.Done():
			return
		}
		n, err := strconv.Atoi(string(p.Payload[:bytes.IndexByte(p.Payload, ':')]))
		if err != nil {
			n = -1
		}
		mu.Lock()
		f.got = append(f.got, n)
		mu.Unlock()
	})
	r := newRow(t, server.Config{Handler: handler})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	fs := make([]*flooder, flooders)
	for i := range fs {
		key := newKey(t)
		f := &flooder{blocked: make(chan struct{})}
		mu.Lock()
		byID[wire.SessionID(key.Public().(ed25519.PublicKey))] = f
		mu.Unlock()
		f.rc = wiretest.Connect(t, r.ts.addr, key)
		var ok bool
		if f.sess, ok = r.ts.Session(f.rc.ID()); !ok {
			t.Fatal("no flood session")
		}
		fs[i] = f
	}

	runtime.GC()
	var before, during runtime.MemStats
	runtime.ReadMemStats(&before)

	filler := bytes.Repeat([]byte("f"), 8000)
	frameLen := len(wire.AppendFrame(nil, wire.TypeData, wire.JSON, append([]byte("00000:"), filler...)))
	var wg sync.WaitGroup
	for _, f := range fs {
		wg.Go(func() {
			for ; f.written < 100000; f.written++ {
				frame := wire.AppendFrame(nil, wire.TypeData, wire.JSON, fmt.Appendf(nil, "%05d:%s", f.written, filler))
				_ = f.rc.TLS().SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
				if _, f.err = f.rc.TLS().Write(frame); f.err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	flooded := 0
	for i, f := range fs {
		if !errors.Is(f.err, os.ErrDeadlineExceeded) {
			t.Fatalf("flooder %d: after %d frames its write returned %v, want its deadline exceeded: no back-pressure", i, f.written, f.err)
		}
		<-f.blocked
		flooded += f.written * frameLen
		// The server read one frame (the handler holds it) and stopped.
		if in := f.sess.Info().PacketsIn; in != 1 {
			t.Errorf("flooder %d: the server read %d frames while the handler was blocked, want 1", i, in)
		}
	}
	r.by.waitTrips(t, 20) // other sessions keep their round trips
	runtime.GC()
	runtime.ReadMemStats(&during)
	growth := int64(during.HeapInuse) - int64(before.HeapInuse)
	t.Logf("flood: %.1f MB written by %d clients before their writes blocked; heap in use grew %.1f MB",
		float64(flooded)/(1<<20), flooders, float64(growth)/(1<<20))
	if flooded < 2<<20 {
		t.Errorf("only %d bytes flooded before the writes blocked: want more than 2 MB (what the socket buffers hold)", flooded)
	}
	if growth > int64(flooded/4) {
		t.Errorf("heap in use grew %.1f MB while %.1f MB of flood was blocked, want less than a quarter of it",
			float64(growth)/(1<<20), float64(flooded)/(1<<20))
	}
	for i, f := range fs {
		if in := f.sess.Info().PacketsIn; in != 1 {
			t.Errorf("flooder %d: the server read %d frames while the handler was blocked, want 1", i, in)
		}
	}

	// Released, the server reads and processes everything the clients
	// wrote; the clients then go away (the last frame of each was cut
	// short by the write deadline and is lost with the socket).
	released = true
	close(release)
	for _, f := range fs {
		_ = f.rc.Abort()
	}
	closed := map[uint64]server.CloseInfo{}
	for len(closed) < flooders { // in any order: waitEvent drops the others
		ev := r.ts.nextEvent(t, server.EventClosed)
		closed[ev.SessionID] = ev.Close
	}
	for i, f := range fs {
		ev := closed[f.rc.ID()]
		mu.Lock()
		got := f.got
		mu.Unlock()
		if len(got) != f.written || ev.PacketsIn != uint64(f.written) {
			t.Errorf("flooder %d: the handler processed %d frames (%d read), want the %d the client wrote", i, len(got), ev.PacketsIn, f.written)
		}
		for j, n := range got {
			if n != j {
				t.Fatalf("flooder %d: frame %d processed as the %dth", i, n, j)
			}
		}
	}
	r.unaffected(t)
}

// badInputSlowReader: the server pushes to a client that never reads. The
// session's byte-bounded queue fills and SendAsync is refused with
// ErrQueueFull (ResourceExhausted in the API) while nothing queued is
// dropped; once the writer has made no progress for the slow-consumer
// timeout, the session closes with Goodbye slow_consumer. Every packet is
// accounted for: written, or counted unwritten; and what the client can
// still read is a gapless prefix.
func badInputSlowReader(t *testing.T) {
	const slowTimeout = 1500 * time.Millisecond
	r := newRow(t, server.Config{QueueBytes: 256 << 10, SlowConsumerTimeout: slowTimeout, LingerTimeout: 200 * time.Millisecond})
	slow := wiretest.Connect(t, r.ts.addr, newKey(t))
	sess, ok := r.ts.Session(slow.ID())
	if !ok {
		t.Fatal("no session")
	}
	filler := bytes.Repeat([]byte("s"), 16000)
	numbered := func(i int) []byte {
		return append(strconv.AppendInt(nil, int64(i), 10), append([]byte{':'}, filler...)...)
	}
	// Push until the queue is full and the writer makes no progress: the
	// socket buffers are full too. Then SendAsync is refused, time and
	// again, and the queue neither grows nor shrinks.
	accepted := 0
	var last uint64
	for attempt := 0; ; attempt++ {
		if attempt == 100 {
			t.Fatal("the writer kept making progress although the client never reads")
		}
		for {
			e, err := sess.SendAsync(wire.JSON, numbered(accepted))
			if errors.Is(err, server.ErrQueueFull) {
				break
			}
			if err != nil {
				t.Fatalf("SendAsync %d: %v", accepted, err)
			}
			accepted, last = accepted+1, e.Seq
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		written, _ := sess.WaitWritten(ctx, last)
		cancel()
		ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
		again, _ := sess.WaitWritten(ctx, written+1)
		cancel()
		if again != written {
			continue // progress: not stuck yet
		}
		depth := sess.Info().QueueLen
		refused := 0
		for ; refused < 5; refused++ {
			e, err := sess.SendAsync(wire.JSON, numbered(accepted))
			if err == nil { // the writer moved after all
				accepted, last = accepted+1, e.Seq
				break
			}
			if !errors.Is(err, server.ErrQueueFull) {
				t.Fatalf("SendAsync into the full queue: %v, want ErrQueueFull", err)
			}
		}
		if refused == 5 && sess.Info().QueueLen == depth {
			break
		}
	}
	r.by.waitTrips(t, 10) // nothing else stalls
	ev := r.ts.waitEvent(t, server.EventClosed, slow.ID())
	c := ev.Close
	if c.Code != wire.GoodbyeSlowConsumer || c.Outcome != server.OutcomeTimeout || c.GoodbyeSent {
		t.Fatalf("closed %+v, want slow_consumer, outcome timeout, Goodbye not written", c)
	}
	if c.PacketsOut+c.Unwritten != uint64(accepted)+1 { // +1: the Goodbye, queued, never written
		t.Errorf("%d packets written + %d unwritten, want the %d accepted and the Goodbye", c.PacketsOut, c.Unwritten, accepted)
	}
	if n := r.ts.Stats().SlowConsumers; n != 1 {
		t.Errorf("slow consumers counted %d, want 1", n)
	}
	r.logs.want(t, 1, `msg="slow consumer: the client has not read for the slow-consumer timeout; closing"`)
	// The client reads at last: packets 0, 1, 2, ... with no gap, at least
	// those the server counted written.
	_ = slow.TLS().SetReadDeadline(time.Now().Add(10 * time.Second))
	n := 0
	for {
		f, err := slow.ReadFrame()
		if err != nil {
			break
		}
		if i, err := strconv.Atoi(string(f.Payload[:bytes.IndexByte(f.Payload, ':')])); err != nil || i != n {
			t.Fatalf("packet %d read as %.10q", n, f.Payload)
		}
		n++
	}
	if n < int(c.PacketsOut) || n > accepted {
		t.Errorf("the client read %d packets; the server wrote %d of %d", n, c.PacketsOut, accepted)
	}
	t.Logf("slow reader: %d accepted, %d written, %d read by the client afterwards", accepted, c.PacketsOut, n)
	r.unaffected(t)
}

// badInputIdleClient: a client that sends nothing gets a Ping after the
// idle interval; answering keeps it open; staying silent past the pong
// timeout closes it with Goodbye idle_timeout, counted. The bystander, busy,
// is never closed.
func badInputIdleClient(t *testing.T) {
	const idle, pong = 150 * time.Millisecond, 300 * time.Millisecond
	r := newRow(t, server.Config{IdleInterval: idle, PongTimeout: pong, LingerTimeout: 200 * time.Millisecond})
	start := time.Now()
	rc := wiretest.Connect(t, r.ts.addr, newKey(t))
	f := rc.Read(t)
	p, err := wire.DecodePing(f.Encoding, f.Payload)
	if f.Type != wire.TypePing || err != nil {
		t.Fatalf("got %s %q, want Ping", f.Type, f.Payload)
	}
	if e := time.Since(start); e < idle {
		t.Errorf("pinged after %s, before the idle interval of %s", e, idle)
	}
	rc.WriteControl(t, wire.TypePong, f.Encoding, wire.PingPayload{Nonce: p.Nonce})
	f = rc.Read(t)
	second := time.Now()
	if f.Type != wire.TypePing {
		t.Fatalf("got %s, want a second Ping after the Pong", f.Type)
	}
	r.by.waitTrips(t, 1)
	f = rc.Read(t) // stay silent
	gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
	if f.Type != wire.TypeGoodbye || err != nil || gb.Code != wire.GoodbyeIdleTimeout || !gb.Reconnect {
		t.Fatalf("got %s %+v, want Goodbye idle_timeout with reconnect", f.Type, gb)
	}
	if e := time.Since(second); e < pong {
		t.Errorf("closed %s after the Ping, before the pong timeout of %s", e, pong)
	}
	ev := r.ts.waitEvent(t, server.EventClosed, rc.ID())
	if ev.Close.Code != wire.GoodbyeIdleTimeout {
		t.Fatalf("closed %+v", ev.Close)
	}
	if n := r.ts.Stats().IdleTimeouts; n != 1 {
		t.Errorf("idle timeouts counted %d, want 1", n)
	}
	r.logs.want(t, 1, `msg="idle timeout: no packet and no Pong; closing"`)
	r.unaffected(t)
}

// badInputTooManyConnections: past MaxConns, or MaxConnsPerIP from one
// address, a connection is refused at accept, before TLS, with a log line
// and a counter; the open connections, and other addresses, are unaffected.
func badInputTooManyConnections(t *testing.T) {
	t.Run("in total", func(t *testing.T) {
		r := newRow(t, server.Config{MaxConns: 3}) // the bystander and two
		a := wiretest.Connect(t, r.ts.addr, newKey(t))
		wiretest.Connect(t, r.ts.addr, newKey(t))
		for range 3 {
			refused(t, r.ts.addr)
		}
		r.by.waitTrips(t, 1)
		bystanderEcho(t, a, "still served")
		if st := r.ts.Stats(); st.RefusedTotal != 3 || st.RefusedPerIP != 0 || st.Accepted != 3 {
			t.Errorf("stats %+v, want 3 accepted, 3 refused in total", st)
		}
		r.logs.want(t, 3, "level=WARN", `msg="connection refused: too many connections"`, "open=3", "max_conns=3")
		r.unaffected(t)
	})
	t.Run("from one IP", func(t *testing.T) {
		r := newRow(t, server.Config{MaxConnsPerIP: 2}) // the bystander is on 127.0.0.1
		other := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}
		var fromOther []*wiretest.Conn
		for range 2 {
			rc, err := dialFrom(other, r.ts.addr, newKey(t))
			if err != nil {
				t.Skipf("cannot dial from %s (no 127.0.0.0/8 loopback here?): %v", other.IP, err)
			}
			t.Cleanup(func() { _ = rc.Close() })
			fromOther = append(fromOther, rc)
		}
		for range 2 {
			d := net.Dialer{LocalAddr: other}
			nc, err := d.Dial("tcp", r.ts.addr)
			if err != nil {
				t.Fatal(err)
			}
			if got := expectClosed(t, nc); len(got) != 0 {
				t.Errorf("a refused connection got %q", got)
			}
			_ = nc.Close()
		}
		// 127.0.0.1 has one connection (the bystander): one more is fine.
		local := wiretest.Connect(t, r.ts.addr, newKey(t))
		bystanderEcho(t, local, "another address is unaffected")
		for _, rc := range fromOther {
			bystanderEcho(t, rc, "the open ones are unaffected")
		}
		if st := r.ts.Stats(); st.RefusedPerIP != 2 || st.RefusedTotal != 0 {
			t.Errorf("stats %+v, want 2 refused per IP", st)
		}
		r.logs.want(t, 2, "level=WARN", `msg="connection refused: too many connections from one IP"`, "remote_addr=127.0.0.2:", "max_conns_per_ip=2")
		r.unaffected(t)
	})
}

// badInputTakeoverStorm: 1,000 handshakes (200 with -short) with one key
// from 8 goroutines in tight loops, then a final connection. Every storm connection gets the
// takeover Error and Goodbye (or is refused cleanly), every one of them
// ends, exactly one connection holds the session at the end, and the
// final connection's packets are all processed, in order, and echoed.
// goleak (TestMain) checks that no goroutine is left behind.
func badInputTakeoverStorm(t *testing.T) {
	const dialers, final = 8, 1000
	storm := 1000
	if testing.Short() {
		storm = 200
	}
	h := &rowHandler{}
	r := newRow(t, server.Config{Handler: h, LingerTimeout: 2 * time.Second})
	key := newKey(t)
	id := wire.SessionID(key.Public().(ed25519.PublicKey))

	type outcome struct {
		refused error // the handshake failed
		err     error // the connection did not end as a taken-over one should
	}
	results := make(chan outcome, storm)
	var claimed atomic.Int64
	var dialing, reading sync.WaitGroup
	start := time.Now()
	for range dialers {
		dialing.Go(func() {
			for claimed.Add(1) <= int64(storm) {
				rc, err := dialFrom(nil, r.ts.addr, key)
				if err != nil {
					results <- outcome{refused: err}
					continue
				}
				reading.Go(func() { results <- outcome{err: takenOver(rc)} })
			}
		})
	}
	dialing.Wait()
	dialed := time.Since(start)
	fin := wiretest.Connect(t, r.ts.addr, key) // takes the session from the storm's survivor
	reading.Wait()
	close(results)
	handshakes := 0
	for o := range results {
		switch {
		case o.refused != nil:
			// Refused cleanly: the server closed without a word.
			if !errors.Is(o.refused, io.EOF) && !errors.Is(o.refused, io.ErrUnexpectedEOF) {
				t.Errorf("a storm handshake failed with %v", o.refused)
			}
		case o.err != nil:
			t.Errorf("a storm connection: %v", o.err)
		default:
			handshakes++
		}
	}
	t.Logf("takeover storm: %d handshakes (%d refused) in %s", handshakes, storm-handshakes, dialed.Round(time.Millisecond))
	if handshakes < storm*9/10 {
		t.Errorf("only %d of %d storm handshakes succeeded", handshakes, storm)
	}

	// Every storm connection has ended on the server too.
	for range handshakes {
		r.ts.waitEvent(t, server.EventClosed, id)
	}
	sessions := r.ts.Sessions()
	if len(sessions) != 2 {
		t.Fatalf("%d sessions, want the bystander's and the storm's", len(sessions))
	}
	sess, ok := r.ts.Session(id)
	if !ok {
		t.Fatal("the storm's session is gone")
	}
	if info := sess.Info(); info.Takeovers != uint64(handshakes) || info.State != server.StateActive {
		t.Errorf("session %+v: want %d takeovers (every storm connection was taken over once), active", info, handshakes)
	}
	r.by.waitTrips(t, 1)

	// The final connection loses nothing.
	before := len(h.got(id))
	for i := range final {
		fin.WriteFrame(t, wire.TypeData, wire.JSON, fmt.Appendf(nil, "final %d", i))
	}
	fin.WriteControl(t, wire.TypeFlush, wire.JSON, wire.FlushPayload{Seq: 1})
	for i := range final {
		if f := fin.Read(t); f.Type != wire.TypeData || string(f.Payload) != fmt.Sprintf("final %d", i) {
			t.Fatalf("final connection, echo %d: %s %q", i, f.Type, f.Payload)
		}
	}
	if f := fin.Read(t); f.Type != wire.TypeFlushAck {
		t.Fatalf("got %s, want the FlushAck", f.Type)
	}
	got := h.got(id)[before:]
	if len(got) != final {
		t.Fatalf("%d packets of the final connection processed, want %d", len(got), final)
	}
	for i, p := range got {
		if string(p) != fmt.Sprintf("final %d", i) {
			t.Fatalf("processed %d: %q", i, p)
		}
	}
	r.unaffected(t)
}

// takenOver checks a storm connection: the session ID, then the takeover
// Error and Goodbye, exactly; it then answers the Goodbye and expects the
// close_notify. It closes rc.
func takenOver(rc *wiretest.Conn) error {
	defer rc.Close()
	_ = rc.TLS().SetDeadline(time.Now().Add(30 * time.Second))
	f, err := rc.ReadFrame()
	if err != nil {
		return fmt.Errorf("reading the Error: %w", err)
	}
	if ep, err := wire.DecodeError(f.Encoding, f.Payload); f.Type != wire.TypeError || err != nil ||
		ep != (wire.ErrorPayload{Error: wire.TakeoverMessage, Code: wire.CodeSessionTakenOver}) {
		return fmt.Errorf("got %s %q, want the takeover Error", f.Type, f.Payload)
	}
	if f, err = rc.ReadFrame(); err != nil {
		return fmt.Errorf("reading the Goodbye: %w", err)
	}
	if gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload); f.Type != wire.TypeGoodbye || err != nil || gb.Code != wire.GoodbyeSessionTakenOver {
		return fmt.Errorf("got %s %q, want Goodbye session_taken_over", f.Type, f.Payload)
	}
	b, _ := wire.Marshal(wire.JSON, wire.GoodbyePayload{Code: wire.GoodbyeNormal})
	if _, err := rc.TLS().Write(wire.AppendFrame(nil, wire.TypeGoodbye, wire.JSON, b)); err != nil {
		return fmt.Errorf("answering the Goodbye: %w", err)
	}
	if f, err := rc.ReadFrame(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("after the Goodbyes: %s %q, %v; want EOF", f.Type, f.Payload, err)
	}
	return nil
}

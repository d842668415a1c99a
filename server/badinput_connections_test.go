package server_test

// Bad input in numbers of connections: more than the limits allow, and a
// storm of takeovers of one identity.

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestBadInputConnections: connections past the limits are refused at
// accept, and a storm of takeovers of one identity ends with exactly one
// connection holding the session, losing nothing.
func TestBadInputConnections(t *testing.T) {
	runRows(t, []inputRow{
		{"too many connections in total or from one IP", badInputTooManyConnections},
		{"1,000 takeovers of one identity", badInputTakeoverStorm},
	})
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

// badInputTooManyConnections: past MaxConns, or MaxConnsPerIP from one
// address, a connection is refused at accept, before TLS, with a log line
// (the first; then a summary per interval) and a counter; the open connections, and other addresses, are unaffected.
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
		// The first refusal is logged; the others go into the summary
		// at the end of the interval (TestRefusalsAreLoggedOnceThenSummarized).
		r.logs.want(t, 1, "level=WARN", `msg="connection refused: too many connections"`, "open=3", "max_conns=3", "reason=max_conns")
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
		r.logs.want(t, 1, "level=WARN", `msg="connection refused: too many connections from one IP"`, "remote_addr=127.0.0.2:", "max_conns_per_ip=2", "reason=max_conns_per_ip")
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

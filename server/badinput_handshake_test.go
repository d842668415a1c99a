package server_test

// Bad input before and during the handshake: no TLS, stalls, dribbles,
// and client auths that are refused.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestBadInputHandshake: each handshake a client botches, on purpose or
// not, is refused or timed out, counted by reason and logged, and costs
// the other sessions nothing.
func TestBadInputHandshake(t *testing.T) {
	runRows(t, []inputRow{
		{"plain TCP client sending HTTP or garbage", badInputNotTLS},
		{"TLS ok then nothing (slowloris)", badInputSlowloris},
		{"1 byte per second", badInputByteBySecond},
		{"wrong handshake version byte", badInputHandshakeVersion},
		{"bad signature", badInputBadSignature},
		{"short read", badInputShortRead},
	})
}

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

// authAnswer is what a client writes after the server hello, made from
// the hello's nonce and the hash of the certificate the server presented.
type authAnswer func(nonce, certHash [32]byte) []byte

// refusedAuths writes each answer on a connection of its own, in a subtest
// named after it, and expects nothing back but the close; the bystander
// makes a round trip after each. The server must then have counted every
// one as a handshake failure of reason, and logged one line with all of
// logParts for each.
func refusedAuths(t *testing.T, r *row, answers map[string]authAnswer, reason string, logParts ...string) {
	t.Helper()
	for name, answer := range answers {
		t.Run(name, func(t *testing.T) { refusedAfter(t, r.ts, answer) })
		r.by.waitTrips(t, 1)
	}
	wantFailures(t, r.ts, map[string]uint64{reason: uint64(len(answers))})
	r.logs.want(t, len(answers), logParts...)
}

// badInputHandshakeVersion: a client auth whose version byte is not 0x01
// is refused: nothing sent back, closed, logged with its reason, counted.
func badInputHandshakeVersion(t *testing.T) {
	r := newRow(t, server.Config{})
	key := newKey(t)
	answers := map[string]authAnswer{}
	for _, v := range []byte{0x00, 0x02, 0xff} {
		answers[fmt.Sprintf("version 0x%02x", v)] = func(nonce, hash [32]byte) []byte {
			b := wire.SignAuth(key, nonce, hash).Append(nil)
			b[0] = v
			return b
		}
	}
	refusedAuths(t, r, answers, "version", "level=INFO", `msg="handshake failed"`, "stage=auth", "reason=version")
	r.unaffected(t)
}

// badInputBadSignature: signatures over another certificate (a relay),
// another nonce (a replay), with another key, or corrupted, are refused.
func badInputBadSignature(t *testing.T) {
	r := newRow(t, server.Config{})
	key, other := newKey(t), newKey(t)
	refusedAuths(t, r, map[string]authAnswer{
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
	}, "signature", `msg="handshake failed"`, "stage=verify", "reason=signature")
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

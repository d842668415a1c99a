package server_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// refusedAfter dials, reads the hello, writes answer(nonce, certHash) and
// returns what the server sent back before closing: it must be nothing.
func refusedAfter(t *testing.T, ts *testServer, answer func(nonce [32]byte, certHash [32]byte) []byte) {
	t.Helper()
	c := wiretest.Dial(t, ts.addr)
	hello := c.ReadHello(t)
	_ = c.TLS().SetDeadline(time.Now().Add(10 * time.Second))
	if b := answer(hello.Nonce, c.CertHash()); b != nil {
		c.WriteRaw(t, b)
	}
	got, err := io.ReadAll(c.Stream())
	if err != nil {
		t.Fatalf("want close_notify then EOF, got %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("server sent %d bytes after a failed handshake, want none", len(got))
	}
}

func TestHandshakeRefusals(t *testing.T) {
	ts := startServer(t, server.Config{HandshakeTimeout: 500 * time.Millisecond})
	key := newKey(t)
	bystander := wiretest.Connect(t, ts.addr, newKey(t))

	t.Run("signature over another certificate", func(t *testing.T) {
		refusedAfter(t, ts, func(nonce, hash [32]byte) []byte {
			other := sha256.Sum256([]byte("a relay's certificate"))
			return wire.SignAuth(key, nonce, other).Append(nil)
		})
	})
	t.Run("signature over another nonce", func(t *testing.T) {
		refusedAfter(t, ts, func(nonce, hash [32]byte) []byte {
			nonce[0] ^= 1
			return wire.SignAuth(key, nonce, hash).Append(nil)
		})
	})
	t.Run("bad version", func(t *testing.T) {
		refusedAfter(t, ts, func(nonce, hash [32]byte) []byte {
			b := wire.SignAuth(key, nonce, hash).Append(nil)
			b[0] = 0x02
			return b
		})
	})
	t.Run("timeout", func(t *testing.T) {
		refusedAfter(t, ts, func(nonce, hash [32]byte) []byte { return nil })
	})
	t.Run("short read", func(t *testing.T) {
		c := wiretest.Dial(t, ts.addr)
		c.ReadHello(t)
		c.WriteRaw(t, make([]byte, 10))
		_ = c.CloseWrite()
		_ = c.TLS().SetReadDeadline(time.Now().Add(10 * time.Second))
		if got, err := io.ReadAll(c.Stream()); err != nil || len(got) != 0 {
			t.Fatalf("got %d bytes, %v; want nothing, then EOF", len(got), err)
		}
	})
	t.Run("not TLS", func(t *testing.T) {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		_, _ = nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		// The TLS stack may send an alert; then the server closes.
		if _, err := io.ReadAll(nc); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("the server kept a non-TLS connection open")
		}
	})
	t.Run("valid signature is accepted", func(t *testing.T) {
		rc := wiretest.Connect(t, ts.addr, key)
		if rc.ID() != wire.SessionID(key.Public().(ed25519.PublicKey)) {
			t.Fatalf("session id %d", rc.ID())
		}
		if len(ts.Sessions()) != 2 {
			t.Fatalf("%d sessions, want the bystander and the valid one", len(ts.Sessions()))
		}
	})
	bystanderEcho(t, bystander, "unaffected")
}

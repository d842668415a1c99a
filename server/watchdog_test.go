package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestIdleClientIsPinged: a silent client gets a Ping after the idle
// interval; answering keeps it open, staying silent closes it with Goodbye
// idle_timeout.
func TestIdleClientIsPinged(t *testing.T) {
	ts := startServer(t, server.Config{IdleInterval: 100 * time.Millisecond, PongTimeout: 200 * time.Millisecond, LingerTimeout: 100 * time.Millisecond})
	rc := wiretest.Connect(t, ts.addr, newKey(t))
	f := rc.Read(t)
	p, err := wire.DecodePing(f.Encoding, f.Payload)
	if f.Type != wire.TypePing || err != nil {
		t.Fatalf("got %s %q, want Ping", f.Type, f.Payload)
	}
	rc.WriteControl(t, wire.TypePong, f.Encoding, wire.PingPayload{Nonce: p.Nonce})
	if f := rc.Read(t); f.Type != wire.TypePing { // alive: pinged again later
		t.Fatalf("got %s, want a second Ping", f.Type)
	}
	f = rc.Read(t) // stay silent
	gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
	if f.Type != wire.TypeGoodbye || err != nil || gb.Code != wire.GoodbyeIdleTimeout || !gb.Reconnect {
		t.Fatalf("got %s %+v, want Goodbye idle_timeout with reconnect", f.Type, gb)
	}
	if ev := ts.waitEvent(t, server.EventClosed, rc.ID()); ev.Close.Code != wire.GoodbyeIdleTimeout {
		t.Fatalf("closed %+v", ev.Close)
	}
	if n := ts.Stats().IdleTimeouts; n != 1 {
		t.Fatalf("idle timeouts counted %d, want 1", n)
	}
}

// TestSlowConsumerIsClosed: a client that never reads while the server
// pushes to it fills its queue (SendAsync then fails, nothing queued is
// dropped), and once the writer is stuck for the slow-consumer timeout the
// session closes with Goodbye slow_consumer. Another session is unaffected.
func TestSlowConsumerIsClosed(t *testing.T) {
	ts := startServer(t, server.Config{QueueBytes: 1 << 20, SlowConsumerTimeout: 300 * time.Millisecond, LingerTimeout: 200 * time.Millisecond})
	bystander := wiretest.Connect(t, ts.addr, newKey(t))
	slow := wiretest.Connect(t, ts.addr, newKey(t))
	ts.waitEvent(t, server.EventConnected, slow.ID())
	sess, _ := ts.Session(slow.ID())
	payload := bytes.Repeat([]byte("x"), 60000)
	accepted := 0
	for {
		_, err := sess.SendAsync(wire.JSON, payload)
		if errors.Is(err, server.ErrQueueFull) {
			break
		}
		if err != nil {
			t.Fatalf("SendAsync: %v", err)
		}
		accepted++
	}
	// Keep pushing (waiting for space) until the socket buffers are full
	// too and the writer is stuck: the slow-consumer timeout then runs out.
	pushed := make(chan struct{})
	go func() {
		defer close(pushed)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for range 1000 { // 60 MB at most
			if err := sess.Reply(ctx, wire.TypeData, wire.JSON, payload); err != nil {
				return
			}
			if info := sess.Info(); info.State != server.StateActive {
				return
			}
		}
	}()
	bsess, _ := ts.Session(bystander.ID())
	if _, err := bsess.SendAsync(wire.JSON, []byte("still flowing")); err != nil {
		t.Fatal(err)
	}
	if f := bystander.Read(t); string(f.Payload) != "still flowing" {
		t.Fatalf("bystander got %q", f.Payload)
	}
	ev := ts.waitEvent(t, server.EventClosed, slow.ID())
	<-pushed
	if ev.Close.Code != wire.GoodbyeSlowConsumer || ev.Close.Outcome != server.OutcomeTimeout || ev.Close.GoodbyeSent {
		t.Fatalf("closed %+v, want slow_consumer, timeout, Goodbye not written", ev.Close)
	}
	if ev.Close.PacketsOut < uint64(accepted)/2 || ev.Close.Unwritten == 0 {
		t.Fatalf("closed %+v: want packets written and the rest counted unwritten", ev.Close)
	}
	if n := ts.Stats().SlowConsumers; n != 1 {
		t.Fatalf("slow consumers counted %d", n)
	}
	bystanderEcho(t, bystander, "after")
}

// TestConnectionLimits: past MaxConns or MaxConnsPerIP a connection is
// refused at accept and counted; the open ones are unaffected.
func TestConnectionLimits(t *testing.T) {
	ts := startServer(t, server.Config{MaxConns: 2})
	a := wiretest.Connect(t, ts.addr, newKey(t))
	wiretest.Connect(t, ts.addr, newKey(t))
	refused(t, ts.addr)
	if st := ts.Stats(); st.RefusedTotal != 1 {
		t.Fatalf("refused %d, want 1", st.RefusedTotal)
	}
	bystanderEcho(t, a, "unaffected")

	perIP := startServer(t, server.Config{MaxConnsPerIP: 1})
	b := wiretest.Connect(t, perIP.addr, newKey(t))
	refused(t, perIP.addr)
	if st := perIP.Stats(); st.RefusedPerIP != 1 {
		t.Fatalf("refused per IP %d, want 1", st.RefusedPerIP)
	}
	bystanderEcho(t, b, "unaffected")
}

// refused expects the server to close a new connection before any TLS.
func refused(t *testing.T, addr string) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := nc.Read(make([]byte, 1)); n != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, %v: want the connection closed", n, err)
	}
}

// TestAllowList: only listed keys complete the handshake.
func TestAllowList(t *testing.T) {
	allowed, other := newKey(t), newKey(t)
	path := filepath.Join(t.TempDir(), "allow")
	pub := allowed.Public().(ed25519.PublicKey)
	if err := os.WriteFile(path, []byte("# clients\n"+hexKey(pub)+" # the allowed one\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	list, err := server.LoadAllowList(path)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, server.Config{Authorizer: list})
	wiretest.Connect(t, ts.addr, allowed)
	refusedAfter(t, ts, func(nonce, hash [32]byte) []byte { return wire.SignAuth(other, nonce, hash).Append(nil) })
	if n := ts.Stats().HandshakeFailed["unauthorized"]; n != 1 {
		t.Fatalf("unauthorized handshakes %d, want 1", n)
	}
	if err := os.WriteFile(path, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := server.LoadAllowList(path); err == nil || !bytes.Contains([]byte(err.Error()), []byte(":1:")) {
		t.Fatalf("bad allow list: %v, want an error naming line 1", err)
	}
}

func hexKey(pub ed25519.PublicKey) string { return hex.EncodeToString(pub) }

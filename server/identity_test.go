package server_test

import (
	"crypto/ed25519"
	"log/slog"
	"testing"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestSessionIDCollisionIsRefused: a session is matched by its whole
// public key, not its 63-bit ID alone. With every key made to collide on
// one ID, a second key is refused at the handshake (counted id_collision,
// logged), while the live session is left alone: it still echoes, and its
// own key still takes it over.
func TestSessionIDCollisionIsRefused(t *testing.T) {
	logs := &logBuffer{}
	ts := startServer(t, server.Config{Handler: server.Echo{}, Logger: slog.New(slog.NewTextHandler(logs, nil))},
		func(s *server.Server) { s.SetSessionIDFunc(func(ed25519.PublicKey) uint64 { return 42 }) })
	owner := newKey(t)
	first := wiretest.Connect(t, ts.addr, owner)
	if first.ID() != 42 {
		t.Fatalf("session ID %d, want the colliding 42", first.ID())
	}

	other := wiretest.Dial(t, ts.addr)
	if err := other.Handshake(newKey(t)); err == nil {
		t.Fatal("another key with the same session ID completed the handshake")
	}
	if n := ts.Stats().HandshakeFailed[string(server.HandshakeFailureIDCollision)]; n != 1 {
		t.Fatalf("id_collision handshakes %d, want 1", n)
	}
	if logs.count("level=WARN", "handshake refused: another key has the session ID of a live session") != 1 {
		t.Error("no warning about the collision in the log")
	}

	first.WriteFrame(t, wire.TypeData, wire.JSON, []byte(`"still mine"`))
	if f, err := first.ReadFrame(); err != nil || f.Type != wire.TypeData || string(f.Payload) != `"still mine"` {
		t.Fatalf("the live session got %v %q (%v), want its echo", f.Type, f.Payload, err)
	}
	if sess, ok := ts.Session(42); !ok || !sess.PublicKey().Equal(owner.Public()) {
		t.Fatal("session 42 no longer belongs to its key")
	}
	wiretest.Connect(t, ts.addr, owner) // the same key takes it over
	ts.waitEvent(t, server.EventTakenOver, 42)
}

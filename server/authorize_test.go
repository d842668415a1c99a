package server_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/server"
)

// TestAuthorizerFuncDecidesEachHandshake: the function sees each client's
// verified key and its loopback address; the key it refuses gets no
// session, the others do.
func TestAuthorizerFuncDecidesEachHandshake(t *testing.T) {
	allowed, refused := newKey(t), newKey(t)
	seen := make(chan ed25519.PublicKey, 2)
	ts := startServer(t, server.Config{Authorizer: server.AuthorizerFunc(func(_ context.Context, key ed25519.PublicKey, remote net.Addr) error {
		if ap, ok := remote.(*net.TCPAddr); !ok || !ap.IP.IsLoopback() {
			return errors.New("not loopback")
		}
		seen <- key
		if key.Equal(refused.Public()) {
			return errors.New("refused by the test")
		}
		return nil
	})})

	c := ts.dialClient(t, allowed)
	if got := <-seen; !got.Equal(allowed.Public()) {
		t.Fatalf("Authorize saw key %x, want the client's", got)
	}
	if _, ok := ts.Session(c.ID()); !ok {
		t.Fatal("the allowed client has no session")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if rc, err := client.Dial(ctx, ts.addr, refused, client.WithFingerprint(client.Fingerprint(ts.cert.Certificate[0]))); err == nil {
		_ = rc.Close(ctx)
		t.Fatal("Dial with the refused key succeeded")
	}
	if got := <-seen; !got.Equal(refused.Public()) {
		t.Fatalf("Authorize saw key %x, want the refused client's", got)
	}
	if n := ts.Stats().HandshakeFailed["unauthorized"]; n != 1 {
		t.Fatalf("unauthorized handshakes %d, want 1", n)
	}
}

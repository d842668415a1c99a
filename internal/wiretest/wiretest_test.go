package wiretest_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gateway runs an echo server on 127.0.0.1:0 until the test's end and
// returns its address and its certificate's hash.
func gateway(t *testing.T) (string, [sha256.Size]byte) {
	t.Helper()
	cert, _, _, err := devcert.Generate()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wiretest.DefaultWait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ln.Addr().String(), sha256.Sum256(cert.Certificate[0])
}

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestConnectEchoesAndClosesCleanly: Connect's session ID is the key's,
// frames written one way and another come back in order, a Flush gets its
// FlushAck after them, and a Goodbye is answered, then close_notify.
func TestConnectEchoesAndClosesCleanly(t *testing.T) {
	addr, hash := gateway(t)
	key := newKey(t)
	c := wiretest.Connect(t, addr, key, wiretest.Pin(hash))
	if want := wire.SessionID(key.Public().(ed25519.PublicKey)); c.ID() != want || !c.PublicKey().Equal(key.Public()) {
		t.Fatalf("session %d, key %x; want %d and the key's", c.ID(), c.PublicKey(), want)
	}
	c.WriteFrame(t, wire.TypeData, wire.JSON, []byte(`"one"`))
	c.WriteRaw(t, wire.AppendFrame(nil, wire.TypeData, wire.MsgPack, []byte("\xa3two")))
	tick := make(chan time.Time, wire.HeaderLen+7) // every tick already there
	for range cap(tick) {
		tick <- time.Time{}
	}
	if n, err := c.Dribble(wire.AppendFrame(nil, wire.TypeData, wire.JSON, []byte(`"three"`)), tick, nil); err != nil || n != wire.HeaderLen+7 {
		t.Fatalf("dribbled %d bytes: %v", n, err)
	}
	c.WriteControl(t, wire.TypeFlush, wire.JSON, wire.FlushPayload{Seq: 7})
	for _, want := range []string{`"one"`, "\xa3two", `"three"`} {
		if f := c.Read(t); f.Type != wire.TypeData || string(f.Payload) != want {
			t.Fatalf("got %s %q, want the echo %q", f.Type, f.Payload, want)
		}
	}
	f := c.Read(t)
	if p, err := wire.DecodeFlush(f.Encoding, f.Payload); f.Type != wire.TypeFlushAck || err != nil || p.Seq != 7 {
		t.Fatalf("got %s %q, want FlushAck 7", f.Type, f.Payload)
	}
	c.WriteControl(t, wire.TypeGoodbye, wire.MsgPack, wire.GoodbyePayload{Code: wire.GoodbyeNormal})
	f = c.Read(t)
	if gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload); f.Type != wire.TypeGoodbye || err != nil || gb.Code != wire.GoodbyeNormal {
		t.Fatalf("got %s %q, want Goodbye normal", f.Type, f.Payload)
	}
	c.ExpectEOF(t)
}

// TestHandshakeStepByStep: the three steps done one at a time make the
// same session as Connect; a client auth signed over another certificate
// gets nothing back but the end of the stream.
func TestHandshakeStepByStep(t *testing.T) {
	addr, hash := gateway(t)
	key := newKey(t)

	c := wiretest.Dial(t, addr)
	if c.CertHash() != hash {
		t.Fatal("CertHash is not the server certificate's")
	}
	hello := c.ReadHello(t)
	c.WriteAuth(t, wire.SignAuth(key, hello.Nonce, c.CertHash()))
	if id := c.ReadSessionID(t); id != wire.SessionID(key.Public().(ed25519.PublicKey)) || id != c.ID() {
		t.Fatalf("session %d (ID() %d), want the key's", id, c.ID())
	}

	bad := wiretest.Dial(t, addr)
	hello = bad.ReadHello(t)
	bad.WriteAuth(t, wire.SignAuth(key, hello.Nonce, sha256.Sum256([]byte("another certificate"))))
	_ = bad.TLS().SetReadDeadline(time.Now().Add(wiretest.DefaultWait))
	if got, err := io.ReadAll(bad.Stream()); err != nil || len(got) != 0 {
		t.Fatalf("refused handshake: got %q, %v; want nothing, then EOF", got, err)
	}
}

// TestPinRefusesAnotherCertificate: a pin that does not match fails the
// TLS handshake, and DialTLS says so.
func TestPinRefusesAnotherCertificate(t *testing.T) {
	addr, hash := gateway(t)
	hash[0] ^= 1
	c, err := wiretest.DialTLS(addr, wiretest.Pin(hash))
	if err == nil {
		_ = c.Close()
		t.Fatal("dialed a server whose certificate is not the pinned one")
	}
}

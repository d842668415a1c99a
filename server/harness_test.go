package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/server"
)

// testServer is a real server on a loopback port with its lifecycle events.
type testServer struct {
	*server.Server
	addr     string
	cert     tls.Certificate
	certHash [sha256.Size]byte
	events   chan server.Event
}

// startServer runs a server on 127.0.0.1:0. cfg's TLSConfig and OnEvent are
// filled in; beforeServe run on the server before it serves. It is shut
// down at the test's end.
func startServer(t testing.TB, cfg server.Config, beforeServe ...func(*server.Server)) *testServer {
	t.Helper()
	cert, _, _, err := devcert.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{cert: cert, certHash: sha256.Sum256(cert.Certificate[0]), events: make(chan server.Event, 100000)}
	cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	cfg.OnEvent = func(e server.Event) { ts.events <- e }
	if cfg.Logger == nil && testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ts.Server, err = server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range beforeServe {
		f(ts.Server)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- ts.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		// Every charge of the memory bound was given back: a leak here
		// would shrink the bound for good.
		if held := ts.Stats().MemoryHeld; held != 0 {
			t.Errorf("after shutdown the sessions still hold %d bytes of the memory bound, want 0", held)
		}
	})
	return ts
}

// waitEvent returns the next event of kind for session id, within 10 s.
func (ts *testServer) waitEvent(t testing.TB, kind server.EventKind, id uint64) server.Event {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case e := <-ts.events:
			if e.Kind == kind && e.SessionID == id {
				return e
			}
		case <-timeout.C:
			t.Fatalf("no %s event for session %d within 10s", kind, id)
		}
	}
}

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// countingHandler counts packets per session and records their payloads.
type countingHandler struct {
	mu       sync.Mutex
	payloads map[uint64][][]byte
}

func (h *countingHandler) Handle(_ context.Context, s *server.Session, p server.Packet) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.payloads == nil {
		h.payloads = make(map[uint64][][]byte)
	}
	h.payloads[s.ID()] = append(h.payloads[s.ID()], bytes.Clone(p.Payload)) // borrowed for the call only
}

func (h *countingHandler) got(id uint64) [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.payloads[id]
}

// dialClient connects the Go client library, pinning the test certificate.
func (ts *testServer) dialClient(t testing.TB, key ed25519.PrivateKey, opts ...client.Option) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	opts = append([]client.Option{client.WithFingerprint(client.Fingerprint(ts.cert.Certificate[0]))}, opts...)
	c, err := client.Dial(ctx, ts.addr, key, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.Close(ctx)
	})
	return c
}

// recordingEcho records every packet, then echoes it.
type recordingEcho struct{ countingHandler }

func (h *recordingEcho) Handle(ctx context.Context, s *server.Session, p server.Packet) {
	h.countingHandler.Handle(ctx, s, p)
	server.Echo{}.Handle(ctx, s, p)
}

package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/internal/gatewaytest"
	"github.com/tlsgate/tlsgate/server"
)

// startEchoServer runs the real server with the echo handler on loopback
// and returns its address and certificate fingerprint.
func startEchoServer(t *testing.T, cfg server.Config) (addr, fingerprint string) {
	t.Helper()
	cert, _, _, err := devcert.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	if cfg.Handler == nil {
		cfg.Handler = server.Echo{}
	}
	srv, err := server.New(cfg)
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
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("server shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), client.Fingerprint(cert.Certificate[0])
}

// TestResumableServerThroughCuts: the required test against the real
// server: 2,000 packets each way through a proxy that cuts the connection
// 5 times; the echoes prove the server processed each packet once, in
// order, and the client received each echo once, in order.
func TestResumableServerThroughCuts(t *testing.T) {
	addr, fp := startEchoServer(t, server.Config{})
	probe, err := client.DialResumable(testCtx(t), addr, newKey(t), client.WithFingerprint(fp))
	if errors.Is(err, client.ErrResumeUnsupported) {
		t.Skip("the server does not support resume yet")
	} else if err != nil {
		t.Fatal(err)
	}
	if err := probe.Close(testCtx(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	proxy := gatewaytest.NewProxy(t, addr)
	runThroughCuts(t, proxy, fp, nil)
}

// TestResumableIdentityAndReconnectTimeout: a Resumable has the session ID
// and server fingerprint a v1 Conn with the same key has, and a reconnect
// attempt to a peer that accepts TCP and then says nothing fails after
// WithReconnectTimeout, not after the 10 s default.
func TestResumableIdentityAndReconnectTimeout(t *testing.T) {
	addr, fp := startEchoServer(t, server.Config{})
	key := newKey(t)
	v1, err := client.Dial(testCtx(t), addr, key, client.WithFingerprint(fp))
	if err != nil {
		t.Fatal(err)
	}
	if err := v1.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	proxy := gatewaytest.NewProxy(t, addr)
	const timeout = 100 * time.Millisecond
	failed := make(chan client.ResumeEvent, 16)
	r, err := client.DialResumable(testCtx(t), proxy.Addr(), key,
		client.WithFingerprint(fp),
		client.WithReconnectTimeout(timeout),
		client.WithBackoff(time.Millisecond, time.Millisecond),
		client.WithResumeEvents(func(ev client.ResumeEvent) {
			if ev.Kind == client.EventReconnectFailed {
				select {
				case failed <- ev:
				default:
				}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, r)
	if r.ID() != v1.ID() || r.ServerFingerprint() != v1.ServerFingerprint() || r.ServerFingerprint() != fp {
		t.Fatalf("resumable ID %d, fingerprint %s; v1 conn %d, %s", r.ID(), r.ServerFingerprint(), v1.ID(), v1.ServerFingerprint())
	}
	proxy.Blackhole()
	proxy.Cut()
	cut := time.Now()
	// Half the 10 s default: far beyond 100 ms however busy the machine,
	// and short of what an attempt without the option would take.
	select {
	case ev := <-failed:
		t.Logf("the first attempt failed %v after the cut: %v", time.Since(cut), ev.Cause)
	case <-time.After(client.DefaultReconnectTimeout / 2):
		t.Fatalf("no reconnect attempt failed within %v of the cut, with a reconnect timeout of %v", client.DefaultReconnectTimeout/2, timeout)
	}
}

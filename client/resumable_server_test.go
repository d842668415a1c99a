package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"

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

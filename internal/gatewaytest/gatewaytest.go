// Package gatewaytest runs a whole gateway (server/gateway: both planes) on
// loopback ports for tests outside the server's own packages.
package gatewaytest

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"log/slog"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/gateway"
)

// Wait bounds every wait of the package's helpers.
const Wait = 10 * time.Second

// Gateway is a running gateway.
type Gateway struct {
	*gateway.Gateway
	// CertHash is the data plane certificate's SHA-256, for pinning.
	CertHash [sha256.Size]byte
}

// Start runs a gateway with the data-plane settings of cfg (its TLS
// certificate is a new self-signed one), the control plane on loopback
// without auth, and no admin endpoint; each of configure may change the
// rest of its configuration. It is shut down at the test's end.
func Start(t testing.TB, cfg server.Config, configure ...func(*gateway.Config)) *Gateway {
	t.Helper()
	cert, _, _, err := devcert.Generate()
	if err != nil {
		t.Fatal(err)
	}
	gc := gateway.DefaultConfig()
	gc.Server = cfg.WithDefaults()
	gc.Server.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	if cfg.Logger == nil {
		gc.Server.Logger = slog.New(slog.DiscardHandler)
	}
	gc.Addr, gc.ControlAddr, gc.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", ""
	for _, f := range configure {
		f(&gc)
	}
	g, err := gateway.New(gc)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve(context.Background()) }()
	select {
	case <-g.Ready():
	case err := <-served:
		t.Fatalf("gateway Serve: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), Wait)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("gateway shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("gateway Serve returned %v", err)
		}
	})
	return &Gateway{Gateway: g, CertHash: sha256.Sum256(cert.Certificate[0])}
}

// API returns a gRPC client of the control plane at addr (the gateway's,
// or a proxy's), closed at the test's end.
func API(t testing.TB, addr string) tlsgatev1.ControlServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return tlsgatev1.NewControlServiceClient(cc)
}

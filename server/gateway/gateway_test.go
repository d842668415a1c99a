package gateway_test

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/gateway"
	"github.com/tlsgate/tlsgate/wire"
)

// wait bounds every wait on an event that should happen.
const wait = 10 * time.Second

// config is a gateway on loopback ports, every plane on.
func config(t *testing.T) (gateway.Config, tls.Certificate) {
	t.Helper()
	cert, _, _, err := devcert.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	cfg.Server.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	cfg.Addr, cfg.ControlAddr, cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	return cfg, cert
}

// serve runs g.Serve(ctx) until it is ready; the returned channel gets
// Serve's result.
func serve(ctx context.Context, t *testing.T, g *gateway.Gateway) <-chan error {
	t.Helper()
	served := make(chan error, 1)
	go func() { served <- g.Serve(ctx) }()
	select {
	case <-g.Ready():
	case err := <-served:
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() { _ = g.Shutdown(context.Background()) })
	return served
}

func result(t *testing.T, served <-chan error) error {
	t.Helper()
	select {
	case err := <-served:
		return err
	case <-time.After(wait):
		t.Fatal("Serve did not return")
		return nil
	}
}

func dial(t *testing.T, g *gateway.Gateway, cert tls.Certificate) *client.Conn {
	t.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	c, err := client.Dial(ctx, g.Addr().String(), key, client.WithFingerprint(client.Fingerprint(cert.Certificate[0])))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// wantClosedBy waits for c to end and checks the server's Goodbye.
func wantClosedBy(t *testing.T, c *client.Conn, code string) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(wait):
		t.Fatal("the client connection did not end")
	}
	var ce *client.CloseError
	if !errors.As(c.Err(), &ce) || ce.Code != code || ce.Outcome != client.OutcomeClean {
		t.Fatalf("client ended with %v, want a clean Goodbye %s", c.Err(), code)
	}
}

// healthz returns the admin endpoint's /healthz answer, "200 SERVING".
func healthz(ctx context.Context, addr net.Addr) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+"/healthz", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return fmt.Sprint(resp.StatusCode, " ", strings.TrimSpace(string(body))), err
}

// TestServeUntilContextEnds: every plane serves once Ready; when Serve's
// context ends, sessions get Goodbye server_shutdown, Serve returns nil
// and every listener is closed.
func TestServeUntilContextEnds(t *testing.T) {
	cfg, cert := config(t)
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := serve(ctx, t, g)

	c := dial(t, g, cert)
	if err := c.Send(t.Context(), client.Data([]byte("ping"))); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(t.Context(), wait)
	defer rcancel()
	if p, err := c.Recv(rctx); err != nil || string(p.Payload) != "ping" {
		t.Fatalf("echo: %v, %v", p, err)
	}
	hctx, hcancel := context.WithTimeout(t.Context(), wait)
	defer hcancel()
	if got, err := healthz(hctx, g.AdminAddr()); got != "200 SERVING" {
		t.Fatalf("/healthz %q, %v; want 200 SERVING", got, err)
	}
	cc, err := grpc.NewClient("passthrough:///"+g.ControlAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if resp, err := healthpb.NewHealthClient(cc).Check(hctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health Check %v, %v; want SERVING", resp, err)
	}

	cancel()
	wantClosedBy(t, c, wire.GoodbyeServerShutdown)
	if err := result(t, served); err != nil {
		t.Fatalf("Serve returned %v, want nil", err)
	}
	for _, a := range []net.Addr{g.Addr(), g.ControlAddr(), g.AdminAddr()} {
		if nc, err := net.Dial("tcp", a.String()); err == nil {
			nc.Close()
			t.Errorf("%s still accepts after Serve returned", a)
		}
	}
}

// TestShutdownOrder: health is NOT_SERVING by the time a session is
// closed, the admin endpoint still answers then, and Shutdown returns
// without forcing anything.
func TestShutdownOrder(t *testing.T) {
	cfg, cert := config(t)
	var g *gateway.Gateway
	atClose := make(chan string, 1)
	cfg.Server.OnEvent = func(e server.Event) {
		if e.Kind == server.EventClosed {
			// Synchronously, from the closing connection: the state the
			// gateway is in at that moment.
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			got, err := healthz(ctx, g.AdminAddr())
			atClose <- fmt.Sprint(got, err)
		}
	}
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := serve(context.Background(), t, g)
	c := dial(t, g, cert)

	sctx, scancel := context.WithTimeout(context.Background(), wait)
	defer scancel()
	if err := g.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v (forced)", err)
	}
	wantClosedBy(t, c, wire.GoodbyeServerShutdown)
	if got := <-atClose; got != "503 NOT_SERVING<nil>" {
		t.Fatalf("/healthz when the session closed: %q, want 503 NOT_SERVING", got)
	}
	if err := result(t, served); err != nil {
		t.Fatalf("Serve returned %v after Shutdown, want nil", err)
	}
	if err := g.Serve(context.Background()); !errors.Is(err, gateway.ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v, want ErrServerClosed", err)
	}
}

// TestNewClosesWhatItOpened: when a listener cannot be bound, New fails
// with an error naming the field, and the listeners it had bound are
// closed again.
func TestNewClosesWhatItOpened(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for {
		// A port that was free a moment ago; should another process
		// take it before New binds it, New fails on Addr and the test
		// tries another.
		free, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := free.Addr().String()
		free.Close()

		cfg, _ := config(t)
		cfg.Addr, cfg.ControlAddr, cfg.AdminAddr = addr, "127.0.0.1:0", taken.Addr().String()
		g, err := gateway.New(cfg)
		if g != nil || err == nil {
			t.Fatal("New succeeded on a taken admin address")
		}
		if strings.HasPrefix(err.Error(), "Config.Addr ") {
			continue
		}
		if !strings.HasPrefix(err.Error(), "Config.AdminAddr "+taken.Addr().String()) {
			t.Fatalf("New: %v, want an error naming Config.AdminAddr", err)
		}
		again, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("the data-plane address stayed bound after New failed: %v", err)
		}
		again.Close()
		return
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*gateway.Config)
		field string
		want  string
	}{
		{"zero payload", func(c *gateway.Config) { c.Server.MaxPayload = 0 }, "Server.MaxPayload", "must be between 1 and"},
		{"no addr", func(c *gateway.Config) { c.Addr = "" }, "Addr", "must be set"},
		{"no stream buffer", func(c *gateway.Config) { c.StreamBuffer = 0 }, "StreamBuffer", "must be positive"},
		{"no max streams", func(c *gateway.Config) { c.MaxStreams = 0 }, "MaxStreams", "must be positive, got 0"},
		{"negative max streams", func(c *gateway.Config) { c.MaxStreams = -1 }, "MaxStreams", "must be positive, got -1"},
		{"open control plane", func(c *gateway.Config) { c.ControlAddr = "0.0.0.0:0" }, "ControlAddr", "not a loopback address"},
		{"pprof without admin", func(c *gateway.Config) { c.Pprof, c.AdminAddr = true, "" }, "Pprof", "needs the admin endpoint"},
		{"short token", func(c *gateway.Config) { c.ControlToken = "secret" }, "ControlToken", "must be at least 16 bytes, got 6"},
		{"blank token", func(c *gateway.Config) { c.ControlToken = " " }, "ControlToken", "must not start or end with whitespace"},
		{"padded token", func(c *gateway.Config) { c.ControlToken = "0123456789abcdef\n" }, "ControlToken", "must not start or end with whitespace"},
		{"plaintext token off loopback", func(c *gateway.Config) { c.ControlAddr, c.ControlToken = "0.0.0.0:0", "0123456789abcdef" }, "ControlAddr", "the bearer token would cross the network in the clear"},
		{"tiny header limit", func(c *gateway.Config) { c.ControlMaxHeaderBytes = 100 }, "ControlMaxHeaderBytes", "must be at least 1024"},
		{"no control conns", func(c *gateway.Config) { c.ControlMaxConns = 0 }, "ControlMaxConns", "must be positive, got 0"},
		{"no calls per conn", func(c *gateway.Config) { c.ControlMaxCallsPerConn = -1 }, "ControlMaxCallsPerConn", "must be positive, got -1"},
		{"no keepalive min time", func(c *gateway.Config) { c.ControlKeepaliveMinTime = 0 }, "ControlKeepaliveMinTime", "must be positive"},
		{"negative max memory", func(c *gateway.Config) { c.Server.MaxMemory = -2 }, "Server.MaxMemory", "must be positive, or -1 for no bound, got -2"},
		{"zero duration", func(c *gateway.Config) { c.Server.DrainTimeout = 0 }, "Server.DrainTimeout", "must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := config(t)
			tc.edit(&cfg)
			_, err := gateway.New(cfg)
			var ce *server.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field || !strings.Contains(ce.Problem, tc.want) {
				t.Fatalf("New: %v, want a ConfigError of %s: ... %s", err, tc.field, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "Config."+tc.field+" ") {
				t.Fatalf("error %q does not start with Config.%s", err, tc.field)
			}
		})
	}
	// Auth, or the explicit flag, allows a control plane on any address;
	// a token off loopback needs TLS or its own explicit flag.
	for _, edit := range []func(*gateway.Config){
		func(c *gateway.Config) { c.ControlToken, c.InsecureControlToken = "0123456789abcdef", true },
		func(c *gateway.Config) { c.ControlToken, c.ControlTLS = "0123456789abcdef", &tls.Config{} },
		func(c *gateway.Config) { c.InsecureControlPlane = true },
	} {
		cfg, _ := config(t)
		cfg.ControlAddr = "0.0.0.0:0"
		edit(&cfg)
		if err := cfg.Validate(); err != nil {
			t.Errorf("Validate: %v", err)
		}
	}
}

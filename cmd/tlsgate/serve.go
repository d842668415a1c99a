package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
	"github.com/tlsgate/tlsgate/wire"
)

const defaultListenAddr = server.DefaultAddr

// serveCmd is `tlsgate serve`.
type serveCmd struct {
	Addr             string        `env:"TLSGATE_ADDR" default:"${listenaddr}" placeholder:"HOST:PORT" help:"TCP address to listen on; port 0 picks a free port (default: ${default})."`
	Cert             string        `env:"TLSGATE_CERT" type:"path" placeholder:"FILE" help:"Server certificate chain, PEM. Without --cert and --key: dev mode, a self-signed certificate kept in --dev-dir."`
	Key              string        `env:"TLSGATE_KEY" type:"path" placeholder:"FILE" help:"Private key of --cert, PEM."`
	Handler          string        `env:"TLSGATE_HANDLER" enum:"echo,discard" default:"echo" help:"What to do with inbound Data and Error packets: ${enum} (default: ${default})."`
	MaxPayload       int           `env:"TLSGATE_MAX_PAYLOAD" default:"65531" placeholder:"BYTES" help:"Largest frame payload accepted, 1..65531 (default: ${default})."`
	QueueBytes       int           `env:"TLSGATE_QUEUE_BYTES" default:"4194304" placeholder:"BYTES" help:"Bound of each session's outbound queue, at least one full frame (default: ${default})."`
	HandshakeTimeout time.Duration `env:"TLSGATE_HANDSHAKE_TIMEOUT" default:"5s" help:"Bound of the whole handshake, TLS included, from accept (default: ${default})."`
	LingerTimeout    time.Duration `env:"TLSGATE_LINGER_TIMEOUT" default:"2s" help:"How long a closing connection keeps reading for the peer's Goodbye or EOF (default: ${default})."`
	DrainTimeout     time.Duration `env:"TLSGATE_DRAIN_TIMEOUT" default:"10s" help:"How long a server-initiated close waits for the queue to be written (default: ${default})."`
	ShutdownTimeout  time.Duration `env:"TLSGATE_SHUTDOWN_TIMEOUT" default:"15s" help:"Bound of the graceful shutdown on SIGINT or SIGTERM (default: ${default})."`
	AllowTLS12       bool          `name:"allow-tls12" env:"TLSGATE_ALLOW_TLS12" help:"Accept TLS 1.2 as well as 1.3 (default: TLS 1.3 only)."`
	SessionTickets   bool          `env:"TLSGATE_SESSION_TICKETS" help:"Send TLS 1.3 session tickets (default: off, see docs/protocol.md)."`

	ControlAddr          string `env:"TLSGATE_CONTROL_ADDR" default:"${controladdr}" placeholder:"HOST:PORT" help:"gRPC control plane address; empty turns the control plane off (default: ${default})."`
	ControlToken         string `env:"TLSGATE_CONTROL_TOKEN" placeholder:"TOKEN" help:"Bearer token every control-plane RPC must carry (the health service stays open). Prefer the env var: flags show in ps."`
	InsecureControlPlane bool   `env:"TLSGATE_INSECURE_CONTROL_PLANE" help:"Allow the control plane on a non-loopback address without --control-token."`
}

// Validate checks the values kong cannot, naming the flag at fault.
func (c *serveCmd) Validate() error {
	if (c.Cert == "") != (c.Key == "") {
		return fmt.Errorf("--cert and --key must be given together (or neither, for dev mode)")
	}
	if c.MaxPayload < 1 || c.MaxPayload > wire.MaxPayload {
		return fmt.Errorf("--max-payload must be between 1 and %d, got %d", wire.MaxPayload, c.MaxPayload)
	}
	if frame := wire.HeaderLen + c.MaxPayload; c.QueueBytes < frame {
		return fmt.Errorf("--queue-bytes must hold at least one full frame (%d bytes with --max-payload %d), got %d", frame, c.MaxPayload, c.QueueBytes)
	}
	if c.ControlAddr != "" && c.ControlToken == "" && !c.InsecureControlPlane && !isLoopback(c.ControlAddr) {
		return fmt.Errorf("--control-addr %s is not a loopback address and --control-token is empty: anyone who can reach it could send to and disconnect every session; set --control-token (or TLSGATE_CONTROL_TOKEN), or pass --insecure-control-plane", c.ControlAddr)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"--handshake-timeout", c.HandshakeTimeout},
		{"--linger-timeout", c.LingerTimeout},
		{"--drain-timeout", c.DrainTimeout},
		{"--shutdown-timeout", c.ShutdownTimeout},
	} {
		if d.v <= 0 {
			return fmt.Errorf("%s must be positive, got %s", d.flag, d.v)
		}
	}
	return nil
}

// Run serves until the context ends (SIGINT or SIGTERM), then shuts down
// gracefully.
func (c *serveCmd) Run(rt *runtime) error {
	log, err := rt.globals.logger(rt.stderr)
	if err != nil {
		return err
	}
	cert, err := c.certificate(rt)
	if err != nil {
		return err
	}
	var handler server.Handler = server.Echo{}
	if c.Handler == "discard" {
		handler = server.Discard{}
	}
	// The hub routes inbound packets to the control plane's Receive streams
	// (or the handler when none is open) and lifecycle events to watchers.
	hub := control.NewHub(handler, 0)
	srv, err := server.New(server.Config{
		Addr:             c.Addr,
		TLSConfig:        &tls.Config{Certificates: []tls.Certificate{cert}},
		AllowTLS12:       c.AllowTLS12,
		SessionTickets:   c.SessionTickets,
		Handler:          hub,
		OnEvent:          hub.Publish,
		Logger:           log,
		MaxPayload:       c.MaxPayload,
		QueueBytes:       c.QueueBytes,
		HandshakeTimeout: c.HandshakeTimeout,
		LingerTimeout:    c.LingerTimeout,
		DrainTimeout:     c.DrainTimeout,
		ShutdownTimeout:  c.ShutdownTimeout,
	})
	if err != nil {
		return err
	}

	var lc net.ListenConfig
	ln, err := lc.Listen(rt.ctx, "tcp", c.Addr)
	if err != nil {
		return fmt.Errorf("--addr %s: %w", c.Addr, err)
	}
	if _, err := fmt.Fprintf(rt.stdout, "listening on %s\n", ln.Addr()); err != nil {
		_ = ln.Close()
		return err
	}
	log.Info("serving", "addr", ln.Addr().String(), "handler", c.Handler)

	// Serve runs until Shutdown; shutting down here, rather than through
	// Serve's context, lets the logs say when it starts and whether the
	// shutdown timeout forced connections closed.
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), ln) }()

	var ctl *control.Server
	ctlServed := make(chan error, 1)
	if c.ControlAddr != "" {
		ctl, err = control.New(control.Config{Gateway: srv, Hub: hub, Addr: c.ControlAddr, Token: c.ControlToken, Logger: log.With("plane", "control")})
		if err == nil {
			var cln net.Listener
			if cln, err = lc.Listen(rt.ctx, "tcp", c.ControlAddr); err != nil {
				err = fmt.Errorf("--control-addr %s: %w", c.ControlAddr, err)
			} else if _, err = fmt.Fprintf(rt.stdout, "control plane listening on %s\n", cln.Addr()); err == nil {
				go func() { ctlServed <- ctl.Serve(cln) }()
				ctl.SetServing(true) // both planes are up
			}
		}
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
			defer cancel()
			_ = srv.Shutdown(sctx)
			return err
		}
	}

	select {
	case err = <-served: // the data-plane listener failed
	case err = <-ctlServed: // the control-plane listener failed
	case <-rt.ctx.Done():
	}
	log.Info("stopping: closing every session gracefully; signal again to force",
		"cause", context.Cause(rt.ctx), "shutdown_timeout", c.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	if ctl != nil {
		ctl.SetServing(false) // health goes NOT_SERVING first
	}
	if serr := srv.Shutdown(sctx); serr != nil {
		log.Warn("shutdown timeout expired: the remaining connections were closed at once", "err", serr)
	}
	if ctl != nil {
		ctl.Stop(sctx) // after the sessions, so watchers see every closed event
	}
	if err != nil {
		return err
	}
	if err := <-served; err != nil && !errors.Is(err, server.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// isLoopback reports whether a listen address binds only loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// certificate loads --cert and --key, or in dev mode loads or creates the
// self-signed certificate in --dev-dir and prints where it is kept and its
// fingerprint.
func (c *serveCmd) certificate(rt *runtime) (tls.Certificate, error) {
	if c.Cert != "" {
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("--cert/--key: %w", err)
		}
		_, err = fmt.Fprintf(rt.stdout, "certificate fingerprint: %s\n", devcert.Fingerprint(cert.Certificate[0]))
		return cert, err
	}
	dir, err := rt.globals.devDir()
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, created, err := devcert.LoadOrCreate(dir)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("--dev-dir %s: %w", dir, err)
	}
	state := "loaded"
	if created {
		state = "created"
	}
	_, err = fmt.Fprintf(rt.stdout, "dev mode: self-signed certificate kept in %s (%s)\ndev certificate fingerprint: %s\n",
		dir, state, devcert.Fingerprint(cert.Certificate[0]))
	return cert, err
}

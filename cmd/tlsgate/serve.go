package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/internal/metrics"
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

	IdleInterval        time.Duration `env:"TLSGATE_IDLE_INTERVAL" default:"30s" help:"Ping a client after this long without a packet from it (default: ${default})."`
	PongTimeout         time.Duration `env:"TLSGATE_PONG_TIMEOUT" default:"10s" help:"Close with Goodbye idle_timeout when a pinged client stays silent this long (default: ${default})."`
	SlowConsumerTimeout time.Duration `env:"TLSGATE_SLOW_CONSUMER_TIMEOUT" default:"10s" help:"Close with Goodbye slow_consumer when a client has not read for this long (default: ${default})."`
	MaxConns            int           `env:"TLSGATE_MAX_CONNS" default:"100000" help:"Most open connections, handshakes included; more are refused at accept; -1 for no limit (default: ${default})."`
	MaxConnsPerIP       int           `name:"max-conns-per-ip" env:"TLSGATE_MAX_CONNS_PER_IP" default:"0" help:"Most open connections from one IP address; 0 for no limit (default: ${default})."`
	AllowList           string        `env:"TLSGATE_ALLOW_LIST" type:"path" placeholder:"FILE" help:"Only admit the client public keys listed in FILE (hex or base64, one per line, # comments). Default: any key."`

	ControlAddr          string `env:"TLSGATE_CONTROL_ADDR" default:"${controladdr}" placeholder:"HOST:PORT" help:"gRPC control plane address; empty turns the control plane off (default: ${default})."`
	ControlToken         string `env:"TLSGATE_CONTROL_TOKEN" placeholder:"TOKEN" help:"Bearer token every control-plane RPC must carry (the health service stays open). Prefer the env var: flags show in ps."`
	ControlCert          string `env:"TLSGATE_CONTROL_CERT" type:"path" placeholder:"FILE" help:"Serve the control plane over TLS with this certificate chain (PEM). Default: plaintext."`
	ControlKey           string `env:"TLSGATE_CONTROL_KEY" type:"path" placeholder:"FILE" help:"Private key of --control-cert (PEM)."`
	ControlClientCA      string `name:"control-client-ca" env:"TLSGATE_CONTROL_CLIENT_CA" type:"path" placeholder:"FILE" help:"Require control-plane clients to present a certificate signed by this CA (mTLS; needs --control-cert)."`
	InsecureControlPlane bool   `env:"TLSGATE_INSECURE_CONTROL_PLANE" help:"Allow the control plane on a non-loopback address without --control-token or --control-client-ca."`

	AdminAddr string     `env:"TLSGATE_ADMIN_ADDR" default:"127.0.0.1:7225" placeholder:"HOST:PORT" help:"Admin HTTP listener: /metrics, /healthz, /readyz, and /debug/pprof/ with --pprof; empty turns it off (default: ${default})."`
	Pprof     bool       `name:"pprof" env:"TLSGATE_PPROF" help:"Serve /debug/pprof/ on --admin-addr (default: off)."`
	Config    configFile `env:"TLSGATE_CONFIG" type:"path" placeholder:"FILE" help:"YAML file of settings keyed by the long flag names (max-conns: 500); flags and env vars win over it. See docs/operations.md."`
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
	if (c.ControlCert == "") != (c.ControlKey == "") {
		return fmt.Errorf("--control-cert and --control-key must be given together")
	}
	if c.ControlClientCA != "" && c.ControlCert == "" {
		return fmt.Errorf("--control-client-ca needs --control-cert and --control-key: mTLS runs over TLS")
	}
	if c.ControlAddr != "" && c.ControlToken == "" && c.ControlClientCA == "" && !c.InsecureControlPlane && !isLoopback(c.ControlAddr) {
		return fmt.Errorf("--control-addr %s is not a loopback address and the control plane has no auth: anyone who can reach it could send to and disconnect every session; set --control-token (or TLSGATE_CONTROL_TOKEN) or --control-client-ca, or pass --insecure-control-plane", c.ControlAddr)
	}
	if c.MaxConns < -1 || c.MaxConns == 0 {
		return fmt.Errorf("--max-conns must be positive, or -1 for no limit, got %d", c.MaxConns)
	}
	if c.Pprof && c.AdminAddr == "" {
		return fmt.Errorf("--pprof needs --admin-addr: pprof is served on the admin listener")
	}
	if c.MaxConnsPerIP < 0 {
		return fmt.Errorf("--max-conns-per-ip must be 0 (no limit) or positive, got %d", c.MaxConnsPerIP)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{
		{"--handshake-timeout", c.HandshakeTimeout},
		{"--linger-timeout", c.LingerTimeout},
		{"--drain-timeout", c.DrainTimeout},
		{"--shutdown-timeout", c.ShutdownTimeout},
		{"--idle-interval", c.IdleInterval},
		{"--pong-timeout", c.PongTimeout},
		{"--slow-consumer-timeout", c.SlowConsumerTimeout},
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
	// The metrics observe durations and count lifecycle events; the rest
	// they read from the gateway and the hub at scrape time.
	m := metrics.New(versionString())
	if c.Config != "" {
		log.Info("settings read from a config file", "config", string(c.Config))
	}
	var authorizer server.Authorizer
	if c.AllowList != "" {
		list, err := server.LoadAllowList(c.AllowList)
		if err != nil {
			return fmt.Errorf("--allow-list: %w", err)
		}
		authorizer = list
		log.Info("allow list loaded", "keys", len(list), "file", c.AllowList)
	}
	controlTLS, err := c.controlTLS()
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{
		Addr:           c.Addr,
		TLSConfig:      &tls.Config{Certificates: []tls.Certificate{cert}},
		AllowTLS12:     c.AllowTLS12,
		SessionTickets: c.SessionTickets,
		Handler:        hub,
		// Counted before published: what a watcher has seen is in /metrics.
		OnEvent:          func(e server.Event) { m.Event(e); hub.Publish(e) },
		Observer:         m,
		Logger:           log,
		MaxPayload:       c.MaxPayload,
		QueueBytes:       c.QueueBytes,
		HandshakeTimeout: c.HandshakeTimeout,
		LingerTimeout:    c.LingerTimeout,
		DrainTimeout:     c.DrainTimeout,
		ShutdownTimeout:  c.ShutdownTimeout,

		IdleInterval:        c.IdleInterval,
		PongTimeout:         c.PongTimeout,
		SlowConsumerTimeout: c.SlowConsumerTimeout,
		MaxConns:            c.MaxConns,
		MaxConnsPerIP:       c.MaxConnsPerIP,
		Authorizer:          authorizer,
	})
	if err != nil {
		return err
	}
	m.Attach(srv, hub)

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

	// serving is the health state, of the gRPC health service and of the
	// admin /healthz and /readyz alike.
	var serving atomic.Bool
	var ctl *control.Server
	setServing := func(on bool) {
		serving.Store(on)
		if ctl != nil {
			ctl.SetServing(on)
		}
	}
	var adm *admin
	// stopStarted undoes a start that failed half-way.
	stopStarted := func(err error) error {
		sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if ctl != nil {
			ctl.Stop(sctx)
		}
		return err
	}
	ctlServed := make(chan error, 1)
	if c.ControlAddr != "" {
		ctl, err = control.New(control.Config{
			Gateway: srv, Hub: hub, Addr: c.ControlAddr, Token: c.ControlToken, TLSConfig: controlTLS,
			Logger: log.With("plane", "control"),
			// Metrics outermost: they count every call with its final code.
			UnaryInterceptors:  []grpc.UnaryServerInterceptor{m.GRPCUnary()},
			StreamInterceptors: []grpc.StreamServerInterceptor{m.GRPCStream()},
		})
		if err == nil {
			m.InitializeGRPC(ctl)
			var cln net.Listener
			if cln, err = lc.Listen(rt.ctx, "tcp", c.ControlAddr); err != nil {
				err = fmt.Errorf("--control-addr %s: %w", c.ControlAddr, err)
			} else if _, err = fmt.Fprintf(rt.stdout, "control plane listening on %s\n", cln.Addr()); err == nil {
				go func() { ctlServed <- ctl.Serve(cln) }()
			} else {
				_ = cln.Close()
			}
		}
		if err != nil {
			ctl = nil // never served: nothing to stop
			return stopStarted(err)
		}
	}
	var adminDone <-chan struct{} // nil without the admin listener
	if c.AdminAddr != "" {
		aln, err := lc.Listen(rt.ctx, "tcp", c.AdminAddr)
		if err != nil {
			return stopStarted(fmt.Errorf("--admin-addr %s: %w", c.AdminAddr, err))
		}
		if c.Pprof && !isLoopback(c.AdminAddr) {
			log.Warn("pprof is served on a non-loopback admin address: anyone who can reach it can profile the process and read its command line", "admin_addr", c.AdminAddr)
		}
		adm = startAdmin(aln, adminHandler(m.Handler(), &serving, c.Pprof), log.With("plane", "admin"))
		adminDone = adm.done
		setServing(true) // both planes are up
		log.Info("admin listening", "addr", aln.Addr().String(), "pprof", c.Pprof)
		if _, err := fmt.Fprintf(rt.stdout, "admin listening on %s\n", aln.Addr()); err != nil {
			_ = adm.shutdown(context.Background())
			return stopStarted(err)
		}
	} else {
		setServing(true) // both planes are up
	}

	select {
	case err = <-served: // the data-plane listener failed
	case err = <-ctlServed: // the control-plane listener failed
	case <-adminDone: // the admin listener failed
		err = fmt.Errorf("--admin-addr: %w", adm.err)
	case <-rt.ctx.Done():
	}
	log.Info("stopping: closing every session gracefully; signal again to force",
		"cause", context.Cause(rt.ctx), "shutdown_timeout", c.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	setServing(false) // health goes NOT_SERVING first
	if serr := srv.Shutdown(sctx); serr != nil {
		log.Warn("shutdown timeout expired: the remaining connections were closed at once", "err", serr)
	}
	if ctl != nil {
		ctl.Stop(sctx) // after the sessions, so watchers see every closed event
	}
	if adm != nil {
		// Last, so that metrics and health stay readable during the drain.
		if aerr := adm.shutdown(sctx); aerr != nil && err == nil {
			log.Warn("admin listener", "err", aerr)
		}
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

// controlTLS builds the control plane's TLS configuration: none (plaintext)
// without --control-cert; with --control-client-ca, client certificates
// signed by that CA are required.
func (c *serveCmd) controlTLS() (*tls.Config, error) {
	if c.ControlCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.ControlCert, c.ControlKey)
	if err != nil {
		return nil, fmt.Errorf("--control-cert/--control-key: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.ControlClientCA != "" {
		pem, err := os.ReadFile(c.ControlClientCA)
		if err != nil {
			return nil, fmt.Errorf("--control-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--control-client-ca %s: no PEM certificate in it", c.ControlClientCA)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
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

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
	"github.com/tlsgate/tlsgate/server/gateway"
)

// serveCmd is `tlsgate serve`.
type serveCmd struct {
	Addr             string        `env:"TLSGATE_ADDR" default:"${listenaddr}" placeholder:"HOST:PORT" help:"TCP address to listen on; port 0 picks a free port (default: ${default})."`
	Cert             string        `env:"TLSGATE_CERT" type:"path" placeholder:"FILE" help:"Server certificate chain, PEM. Without --cert and --key: dev mode, a self-signed certificate kept in --dev-dir."`
	Key              string        `env:"TLSGATE_KEY" type:"path" placeholder:"FILE" help:"Private key of --cert, PEM."`
	Handler          string        `env:"TLSGATE_HANDLER" enum:"echo,discard" default:"echo" help:"What to do with inbound Data and Error packets: ${enum} (default: ${default})."`
	MaxPayload       int           `env:"TLSGATE_MAX_PAYLOAD" default:"${maxpayload}" placeholder:"BYTES" help:"Largest frame payload accepted, 1..${maxpayload} (default: ${default})."`
	QueueBytes       int           `env:"TLSGATE_QUEUE_BYTES" default:"${queuebytes}" placeholder:"BYTES" help:"Bound of each session's outbound queue, at least one full frame (default: ${default})."`
	HandshakeTimeout time.Duration `env:"TLSGATE_HANDSHAKE_TIMEOUT" default:"${handshaketimeout}" help:"Bound of the whole handshake, TLS included, from accept (default: ${default})."`
	LingerTimeout    time.Duration `env:"TLSGATE_LINGER_TIMEOUT" default:"${lingertimeout}" help:"How long a closing connection keeps reading for the peer's Goodbye or EOF (default: ${default})."`
	DrainTimeout     time.Duration `env:"TLSGATE_DRAIN_TIMEOUT" default:"${draintimeout}" help:"How long a server-initiated close waits for the queue to be written (default: ${default})."`
	ShutdownTimeout  time.Duration `env:"TLSGATE_SHUTDOWN_TIMEOUT" default:"${shutdowntimeout}" help:"Bound of the graceful shutdown on SIGINT or SIGTERM (default: ${default})."`
	AllowTLS12       bool          `name:"allow-tls12" env:"TLSGATE_ALLOW_TLS12" help:"Accept TLS 1.2 as well as 1.3 (default: TLS 1.3 only)."`
	SessionTickets   bool          `env:"TLSGATE_SESSION_TICKETS" help:"Send TLS 1.3 session tickets (default: off, see docs/protocol.md)."`

	IdleInterval        time.Duration `env:"TLSGATE_IDLE_INTERVAL" default:"${idleinterval}" help:"Ping a client after this long without a packet from it (default: ${default})."`
	PongTimeout         time.Duration `env:"TLSGATE_PONG_TIMEOUT" default:"${pongtimeout}" help:"Close with Goodbye idle_timeout when a pinged client stays silent this long (default: ${default})."`
	SlowConsumerTimeout time.Duration `env:"TLSGATE_SLOW_CONSUMER_TIMEOUT" default:"${slowconsumertimeout}" help:"Close with Goodbye slow_consumer when a client has not read for this long (default: ${default})."`
	ResumeWindow        time.Duration `env:"TLSGATE_RESUME_WINDOW" default:"${resumewindow}" help:"How long a resumable session (protocol extension tlsgate-resume/1) whose connection was lost without a Goodbye is kept for the client to resume it (default: ${default})."`
	ResumeBuffer        int           `env:"TLSGATE_RESUME_BUFFER" default:"${resumebuffer}" placeholder:"BYTES" help:"Bound of what a resumable session holds for its client, queued plus written and not yet acknowledged; sends past it wait for the client's Acks (default: ${default})."`
	MaxMemory           int64         `env:"TLSGATE_MAX_MEMORY" default:"${maxmemory}" placeholder:"BYTES" help:"Bound of what every session together holds for its clients (queued, being written, kept for a resume) and backends (inbound packets unacked by a Consume group), counted as --queue-bytes counts it; past it, sends to a session that holds anything are refused (or wait) and new sessions are refused (returning clients are not); -1 for no bound (default: half the memory of the cgroup or the machine, here ${default})."`
	MaxConns            int           `env:"TLSGATE_MAX_CONNS" default:"${maxconns}" help:"Most open connections, handshakes included; more are refused at accept; -1 for no limit. Lowered at start to fit the file-descriptor limit, less a reserve (see docs/operations.md) (default: ${default})."`
	MaxConnsPerIP       int           `name:"max-conns-per-ip" env:"TLSGATE_MAX_CONNS_PER_IP" default:"${maxconnsperip}" help:"Most open connections from one IP address; 0 for no limit (default: ${default})."`
	AllowList           string        `env:"TLSGATE_ALLOW_LIST" type:"path" placeholder:"FILE" help:"Only admit the client public keys listed in FILE (hex or base64, one per line, # comments). Default: any key."`

	ControlAddr          string        `env:"TLSGATE_CONTROL_ADDR" default:"${controladdr}" placeholder:"HOST:PORT" help:"gRPC control plane address; empty turns the control plane off (default: ${default})."`
	ControlToken         string        `env:"TLSGATE_CONTROL_TOKEN" placeholder:"TOKEN" help:"Bearer token every control-plane RPC must carry (the health service stays open). Prefer the env var: flags show in ps."`
	ControlCert          string        `env:"TLSGATE_CONTROL_CERT" type:"path" placeholder:"FILE" help:"Serve the control plane over TLS with this certificate chain (PEM). Default: plaintext."`
	ControlKey           string        `env:"TLSGATE_CONTROL_KEY" type:"path" placeholder:"FILE" help:"Private key of --control-cert (PEM)."`
	ControlClientCA      string        `name:"control-client-ca" env:"TLSGATE_CONTROL_CLIENT_CA" type:"path" placeholder:"FILE" help:"Require control-plane clients to present a certificate signed by this CA (mTLS; needs --control-cert)."`
	InsecureControlPlane bool          `env:"TLSGATE_INSECURE_CONTROL_PLANE" help:"Allow the control plane on a non-loopback address without --control-token or --control-client-ca."`
	InsecureControlToken bool          `env:"TLSGATE_INSECURE_CONTROL_TOKEN" help:"Allow --control-token over plaintext gRPC on a non-loopback address (a trusted network, or a TLS-terminating sidecar in front); logged as a warning."`
	NoConsumer           string        `env:"TLSGATE_NO_CONSUMER" enum:"handler,hold" default:"${noconsumer}" help:"Packets no Consume group takes: handler (--handler takes them) or hold (the default group keeps them, pausing the client at its limits, until a consumer joins) (default: ${default})."`
	ConsumePauseTimeout  time.Duration `env:"TLSGATE_CONSUME_PAUSE_TIMEOUT" default:"${consumepausetimeout}" help:"Close with Goodbye backend_stalled a session a Consume group has paused this long; 0 never does (default: ${default})."`
	MaxStreams           int           `env:"TLSGATE_MAX_STREAMS" default:"${maxstreams}" help:"Most control-plane streams (Receive, WatchSessions, Consume, SendStream) open at once over every connection; more are refused with RESOURCE_EXHAUSTED (default: ${default})."`

	ControlMaxHeaderBytes   int           `env:"TLSGATE_CONTROL_MAX_HEADER_BYTES" default:"${controlmaxheaderbytes}" placeholder:"BYTES" help:"Largest header list (metadata) of one control-plane call; a larger one is refused before auth (default: ${default})."`
	ControlMaxCallsPerConn  int           `env:"TLSGATE_CONTROL_MAX_CALLS_PER_CONN" default:"${controlmaxcallsperconn}" placeholder:"N" help:"Most calls one control-plane connection may have open at once (HTTP/2 concurrent streams) (default: ${default})."`
	ControlMaxConns         int           `env:"TLSGATE_CONTROL_MAX_CONNS" default:"${controlmaxconns}" placeholder:"N" help:"Most control-plane connections served at once; more wait to be accepted (default: ${default})."`
	ControlKeepaliveMinTime time.Duration `env:"TLSGATE_CONTROL_KEEPALIVE_MIN_TIME" default:"${controlkeepalivemintime}" help:"Shortest interval between a control-plane client's keepalive pings; a client pinging more often is sent GOAWAY (default: ${default})."`

	AdminAddr string     `env:"TLSGATE_ADMIN_ADDR" default:"${adminaddr}" placeholder:"HOST:PORT" help:"Admin HTTP listener: /metrics, /healthz, /readyz, and /debug/pprof/ with --pprof; empty turns it off (default: ${default})."`
	Pprof     bool       `name:"pprof" env:"TLSGATE_PPROF" help:"Serve /debug/pprof/ on --admin-addr (default: off)."`
	Config    configFile `env:"TLSGATE_CONFIG" type:"path" placeholder:"FILE" help:"YAML file of settings keyed by the long flag names (max-conns: 500); flags and env vars win over it. See docs/operations.md."`
}

// Run builds the gateway from the flags and serves until the context ends
// (SIGINT or SIGTERM); the gateway then shuts down gracefully.
func (c *serveCmd) Run(rt *runtime) error {
	log, err := rt.globals.logger(rt.stderr)
	if err != nil {
		return err
	}
	if c.Config != "" {
		log.Info("settings read from a config file", "config", string(c.Config))
	}
	cfg, err := c.gatewayConfig(rt, log)
	if err != nil {
		return err
	}
	g, err := gateway.New(cfg)
	if err != nil {
		return flagError(err)
	}
	for _, l := range []struct {
		what string
		addr net.Addr
	}{
		{"listening on", g.Addr()},
		{"control plane listening on", g.ControlAddr()},
		{"admin listening on", g.AdminAddr()},
	} {
		if l.addr == nil {
			continue
		}
		if _, err := fmt.Fprintf(rt.stdout, "%s %s\n", l.what, l.addr); err != nil {
			_ = g.Shutdown(context.Background())
			return err
		}
	}
	return g.Serve(rt.ctx)
}

// gatewayConfig maps the flags onto the gateway's Config, loading the
// files they name. Validation is the gateway's (see flagError); only what
// is the CLI's own, its files, is checked here.
func (c *serveCmd) gatewayConfig(rt *runtime, log *slog.Logger) (gateway.Config, error) {
	cfg := gateway.DefaultConfig()
	cert, err := c.certificate(rt)
	if err != nil {
		return cfg, err
	}
	controlTLS, err := c.controlTLS()
	if err != nil {
		return cfg, err
	}
	sc := &cfg.Server
	sc.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	sc.AllowTLS12, sc.SessionTickets = c.AllowTLS12, c.SessionTickets
	sc.Handler = server.Echo{}
	if c.Handler == "discard" {
		sc.Handler = server.Discard{}
	}
	sc.MaxPayload, sc.QueueBytes = c.MaxPayload, c.QueueBytes
	sc.HandshakeTimeout, sc.LingerTimeout, sc.DrainTimeout, sc.ShutdownTimeout = c.HandshakeTimeout, c.LingerTimeout, c.DrainTimeout, c.ShutdownTimeout
	sc.IdleInterval, sc.PongTimeout, sc.SlowConsumerTimeout = c.IdleInterval, c.PongTimeout, c.SlowConsumerTimeout
	sc.MaxConns, sc.MaxConnsPerIP = c.MaxConns, c.MaxConnsPerIP
	sc.ResumeWindow, sc.ResumeBuffer, sc.MaxMemory = c.ResumeWindow, c.ResumeBuffer, c.MaxMemory
	if c.AllowList != "" {
		list, err := server.LoadAllowList(c.AllowList)
		if err != nil {
			return cfg, fmt.Errorf("--allow-list: %w", err)
		}
		sc.Authorizer = list
		log.Info("allow list loaded", "keys", len(list), "file", c.AllowList)
	}
	cfg.Addr, cfg.ControlAddr, cfg.AdminAddr = c.Addr, c.ControlAddr, c.AdminAddr
	cfg.ControlToken, cfg.ControlTLS, cfg.InsecureControlPlane, cfg.InsecureControlToken = c.ControlToken, controlTLS, c.InsecureControlPlane, c.InsecureControlToken
	cfg.ControlMaxHeaderBytes, cfg.ControlMaxCallsPerConn = c.ControlMaxHeaderBytes, c.ControlMaxCallsPerConn
	cfg.ControlMaxConns, cfg.ControlKeepaliveMinTime = c.ControlMaxConns, c.ControlKeepaliveMinTime
	cfg.NoConsumer, cfg.ConsumePauseTimeout = control.NoConsumer(c.NoConsumer), c.ConsumePauseTimeout
	cfg.MaxStreams = c.MaxStreams
	cfg.Pprof, cfg.Version, cfg.Logger = c.Pprof, versionString(), log
	return cfg, nil
}

// controlTLS builds the control plane's TLS configuration: none (plaintext)
// without --control-cert; with --control-client-ca, client certificates
// signed by that CA are required.
func (c *serveCmd) controlTLS() (*tls.Config, error) {
	if (c.ControlCert == "") != (c.ControlKey == "") {
		return nil, usageError{errors.New("--control-cert and --control-key must be given together")}
	}
	if c.ControlClientCA != "" && c.ControlCert == "" {
		return nil, usageError{errors.New("--control-client-ca needs --control-cert and --control-key: mTLS runs over TLS")}
	}
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

// certificate loads --cert and --key, or in dev mode loads or creates the
// self-signed certificate in --dev-dir and prints where it is kept and its
// fingerprint.
func (c *serveCmd) certificate(rt *runtime) (tls.Certificate, error) {
	if (c.Cert == "") != (c.Key == "") {
		return tls.Certificate{}, usageError{errors.New("--cert and --key must be given together (or neither, for dev mode)")}
	}
	if c.Cert != "" {
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("--cert/--key: %w", err)
		}
		_, err = fmt.Fprintf(rt.stdout, "certificate fingerprint: %s\n", client.Fingerprint(cert.Certificate[0]))
		return cert, err
	}
	dir, err := rt.globals.devDir()
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, res, err := devcert.LoadOrCreate(dir)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("--dev-dir %s: %w", dir, err)
	}
	state := "loaded"
	switch {
	case res.Broken != nil:
		state = "replaced a broken one: " + res.Broken.Error() + "; clients pinning the old fingerprint must pin the new one"
	case res.Created:
		state = "created"
	}
	_, err = fmt.Fprintf(rt.stdout, "dev mode: self-signed certificate kept in %s (%s)\ndev certificate fingerprint: %s\n",
		dir, state, client.Fingerprint(cert.Certificate[0]))
	return cert, err
}

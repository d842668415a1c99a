package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// Defaults for Config's zero fields.
const (
	DefaultAddr             = ":7223"
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultLingerTimeout    = 2 * time.Second
	DefaultDrainTimeout     = 10 * time.Second
	DefaultShutdownTimeout  = 15 * time.Second
	DefaultQueueBytes       = 4 << 20
	DefaultIdleInterval     = 30 * time.Second
	DefaultPongTimeout      = 10 * time.Second
	DefaultSlowConsumer     = 10 * time.Second
	DefaultMaxConns         = 100000
	// ReadBufferSize and WriteBufferSize are the per-connection buffer sizes.
	ReadBufferSize  = 64 << 10
	WriteBufferSize = 64 << 10
)

// Config configures a Server. The zero value of every field but TLSConfig
// means its documented default; New validates and fills it in.
type Config struct {
	// Addr is the TCP address ListenAndServe binds. Default ":7223".
	Addr string
	// TLSConfig holds the server certificate (exactly one, its leaf first).
	// New clones it and sets MinVersion (TLS 1.3, or 1.2 with AllowTLS12)
	// and SessionTicketsDisabled (unless SessionTickets). Required.
	TLSConfig *tls.Config
	// AllowTLS12 lowers the minimum TLS version to 1.2. Default false.
	AllowTLS12 bool
	// SessionTickets enables TLS 1.3 session tickets. Default false: a client
	// that never reads would leave them unread, and its close would send RST.
	SessionTickets bool
	// Handler processes inbound Data and Error packets. Default Echo.
	Handler Handler
	// OnEvent, when set, receives every session lifecycle event,
	// synchronously from the connection's goroutines: it must not block.
	OnEvent func(Event)
	// Logger receives the server's logs. Default: discard.
	Logger *slog.Logger
	// MaxPayload is the largest frame payload accepted, in bytes.
	// Default and upper bound wire.MaxPayload (65,531).
	MaxPayload int
	// QueueBytes bounds each session's outbound queue, in frame bytes.
	// Default 4 MiB; at least one full frame.
	QueueBytes int
	// HandshakeTimeout bounds the whole handshake, TLS included, from
	// accept. Default 5 s.
	HandshakeTimeout time.Duration
	// LingerTimeout bounds how long a closing connection keeps reading for
	// the peer's Goodbye or EOF. Default 2 s.
	LingerTimeout time.Duration
	// DrainTimeout bounds how long a server-initiated close waits for the
	// session's queue to be written before it forces the close. Default 10 s.
	DrainTimeout time.Duration
	// ShutdownTimeout bounds Shutdown when its context has no deadline.
	// Default 15 s.
	ShutdownTimeout time.Duration
	// IdleInterval: after this long without a packet from the client, the
	// server sends Ping. Default 30 s.
	IdleInterval time.Duration
	// PongTimeout: a client that sends nothing for this long after a Ping
	// is closed with Goodbye idle_timeout. Default 10 s.
	PongTimeout time.Duration
	// SlowConsumerTimeout: when the writer has made no progress for this
	// long (the client does not read), the session is closed with Goodbye
	// slow_consumer. Default 10 s.
	SlowConsumerTimeout time.Duration
	// MaxConns bounds the open connections, handshakes included; more are
	// refused at accept. Default 100,000; -1 means no limit.
	MaxConns int
	// MaxConnsPerIP bounds the open connections from one IP address.
	// Default 0: no limit (clients behind NAT share addresses).
	MaxConnsPerIP int
	// Observer, when set, receives the durations of handshakes, drains and
	// closes (for histograms). Its methods must not block.
	Observer Observer
	// Authorizer, when set, may refuse a client's key at the handshake
	// (after its signature is verified). See AllowList.
	Authorizer Authorizer
}

func (c *Config) setDefaults() error {
	if c.TLSConfig == nil || len(c.TLSConfig.Certificates) == 0 {
		return errors.New("server: Config.TLSConfig must hold the server certificate")
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Handler == nil {
		c.Handler = Echo{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = wire.MaxPayload
	}
	if c.MaxPayload < 0 || c.MaxPayload > wire.MaxPayload {
		return fmt.Errorf("server: Config.MaxPayload %d out of range: want 1..%d", c.MaxPayload, wire.MaxPayload)
	}
	if c.QueueBytes == 0 {
		c.QueueBytes = DefaultQueueBytes
	}
	if c.QueueBytes < wire.HeaderLen+c.MaxPayload {
		return fmt.Errorf("server: Config.QueueBytes %d is less than one full frame (%d bytes)", c.QueueBytes, wire.HeaderLen+c.MaxPayload)
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"HandshakeTimeout", &c.HandshakeTimeout, DefaultHandshakeTimeout},
		{"LingerTimeout", &c.LingerTimeout, DefaultLingerTimeout},
		{"DrainTimeout", &c.DrainTimeout, DefaultDrainTimeout},
		{"ShutdownTimeout", &c.ShutdownTimeout, DefaultShutdownTimeout},
		{"IdleInterval", &c.IdleInterval, DefaultIdleInterval},
		{"PongTimeout", &c.PongTimeout, DefaultPongTimeout},
		{"SlowConsumerTimeout", &c.SlowConsumerTimeout, DefaultSlowConsumer},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < 0 {
			return fmt.Errorf("server: Config.%s must not be negative, got %s", d.name, *d.v)
		}
	}
	switch {
	case c.MaxConns == 0:
		c.MaxConns = DefaultMaxConns
	case c.MaxConns < -1:
		return fmt.Errorf("server: Config.MaxConns must be positive, or -1 for no limit, got %d", c.MaxConns)
	}
	if c.MaxConnsPerIP < 0 {
		return fmt.Errorf("server: Config.MaxConnsPerIP must not be negative, got %d", c.MaxConnsPerIP)
	}
	tc := c.TLSConfig.Clone()
	tc.MinVersion = tls.VersionTLS13
	if c.AllowTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	tc.SessionTicketsDisabled = !c.SessionTickets
	c.TLSConfig = tc
	return nil
}

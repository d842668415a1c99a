package server

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// The defaults of Config, which New gives its zero fields. DefaultConfig
// returns them all; the CLI's flag defaults come from there.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultLingerTimeout    = 2 * time.Second
	DefaultDrainTimeout     = 10 * time.Second
	DefaultShutdownTimeout  = 15 * time.Second
	DefaultQueueBytes       = 4 << 20
	DefaultIdleInterval     = 30 * time.Second
	DefaultPongTimeout      = 10 * time.Second
	DefaultSlowConsumer     = 10 * time.Second
	DefaultMaxConns         = 100000
	DefaultResumeWindow     = 2 * time.Minute
	DefaultResumeBuffer     = 1 << 20
	// WriteBufferSize bounds what a connection's writer takes from its
	// queue for one write (at least one frame). Its buffer is pooled and
	// held only during the write; the read buffer grows from
	// wire.MinReadBuffer to a frame of MaxPayload and shrinks back when the
	// connection is quiet.
	WriteBufferSize = 64 << 10
)

// Config configures a Server. The zero value of every field but TLSConfig
// means its documented default; New validates and fills it in.
type Config struct {
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
	// Default and upper bound wire.MaxPayload.
	MaxPayload int
	// QueueBytes bounds the memory each session's outbound queue holds: a
	// packet counts its payload's allocation plus EntryOverhead (64 bytes),
	// whether queued or taken by the writer and not yet written. Default
	// 4 MiB; at least one full frame.
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
	// ResumeWindow is how long a resumable session whose connection was
	// lost without a Goodbye is kept for a Resume. Default 2 min.
	ResumeWindow time.Duration
	// ResumeBuffer bounds what a resumable session holds for its client:
	// the memory of what is queued plus what is written and not yet acked,
	// counted as QueueBytes counts it. A send
	// past it waits (SendWait) or fails with ErrQueueFull (SendAsync),
	// until the client's Acks make room. Default 1 MiB.
	ResumeBuffer int
	// MaxMemory bounds, in bytes, what all sessions together hold: queued
	// packets, the batches being written and the replay buffers, counted
	// as QueueBytes counts them, and what Handlers charge
	// (Session.ChargeMemory: the control plane's consumer groups charge
	// their unacked inbound packets). Past it, new sends are refused with
	// ErrMemoryFull (or wait, SendWait) unless the session's queue is
	// empty, and new sessions are refused after their handshake (a
	// returning client, which gives memory back, is not); a reply a
	// Handler owes its client (Reply, and the server's own Pongs and
	// FlushAcks) waits, and so stops the session's reads, while its queue
	// holds anything, until the writer has written that.
	// Default DefaultMaxMemory() (half the cgroup's or the machine's
	// memory); -1: no bound.
	MaxMemory int64
}

// DefaultConfig returns a Config with every default filled in (and no
// TLSConfig). New gives the same values to zero fields.
func DefaultConfig() Config {
	return Config{
		MaxPayload:          wire.MaxPayload,
		QueueBytes:          DefaultQueueBytes,
		HandshakeTimeout:    DefaultHandshakeTimeout,
		LingerTimeout:       DefaultLingerTimeout,
		DrainTimeout:        DefaultDrainTimeout,
		ShutdownTimeout:     DefaultShutdownTimeout,
		IdleInterval:        DefaultIdleInterval,
		PongTimeout:         DefaultPongTimeout,
		SlowConsumerTimeout: DefaultSlowConsumer,
		MaxConns:            DefaultMaxConns,
		ResumeWindow:        DefaultResumeWindow,
		ResumeBuffer:        DefaultResumeBuffer,
		MaxMemory:           cmp.Or(DefaultMaxMemory(), -1),
	}
}

// ConfigError is a Config field that New refuses. The CLI turns Field
// into the name of its flag (MaxPayload: --max-payload). The gateway's
// assembly reports its own fields with the same type, the data plane's
// under "Server." (Server.MaxPayload).
type ConfigError struct {
	// Field is the field's name, e.g. "MaxPayload".
	Field string
	// Problem follows the field's name: "must be positive, got 0s".
	Problem string
	// Fix, when set, names other fields, any one of which would mend it.
	Fix []string
	// Err, when set, is the cause (a failed bind, say), for errors.Is.
	Err error
}

func (e *ConfigError) Error() string {
	msg := "Config." + e.Field + " " + e.Problem
	if len(e.Fix) > 0 {
		msg += "; set Config." + strings.Join(e.Fix, " or Config.")
	}
	return msg
}

// Unwrap returns the cause, if any.
func (e *ConfigError) Unwrap() error { return e.Err }

// configErrorf returns a ConfigError of field.
func configErrorf(field, format string, args ...any) error {
	return &ConfigError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

// WithDefaults returns c with the defaults in its zero fields: what New
// serves. An assembly that validates strictly (refusing zeros) fills in a
// partial Config with it first.
func (c Config) WithDefaults() Config {
	if c.Handler == nil {
		c.Handler = Echo{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	def := DefaultConfig()
	for _, f := range []struct{ v, def *int }{
		{&c.MaxPayload, &def.MaxPayload},
		{&c.QueueBytes, &def.QueueBytes},
		{&c.MaxConns, &def.MaxConns},
		{&c.ResumeBuffer, &def.ResumeBuffer},
	} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	if c.MaxMemory == 0 {
		c.MaxMemory = def.MaxMemory
	}
	for _, f := range []struct{ v, def *time.Duration }{
		{&c.HandshakeTimeout, &def.HandshakeTimeout},
		{&c.LingerTimeout, &def.LingerTimeout},
		{&c.DrainTimeout, &def.DrainTimeout},
		{&c.ShutdownTimeout, &def.ShutdownTimeout},
		{&c.IdleInterval, &def.IdleInterval},
		{&c.PongTimeout, &def.PongTimeout},
		{&c.SlowConsumerTimeout, &def.SlowConsumerTimeout},
		{&c.ResumeWindow, &def.ResumeWindow},
	} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	return c
}

// Validate checks c as it is, zero fields included: New checks c this way
// after filling in the defaults, and an assembly whose configuration
// starts from DefaultConfig (the CLI's) calls it first, so that a zero it
// was given is refused rather than taken for the default. Its errors are
// *ConfigError.
func (c *Config) Validate() error {
	if c.TLSConfig == nil || len(c.TLSConfig.Certificates) == 0 {
		return configErrorf("TLSConfig", "must hold the server certificate")
	}
	if c.MaxPayload < 1 || c.MaxPayload > wire.MaxPayload {
		return configErrorf("MaxPayload", "must be between 1 and %d, got %d", wire.MaxPayload, c.MaxPayload)
	}
	if frame := wire.HeaderLen + c.MaxPayload; c.QueueBytes < frame {
		return configErrorf("QueueBytes", "must hold at least one full frame (%d bytes with a largest payload of %d), got %d", frame, c.MaxPayload, c.QueueBytes)
	}
	if c.MaxConns < 1 && c.MaxConns != -1 {
		return configErrorf("MaxConns", "must be positive, or -1 for no limit, got %d", c.MaxConns)
	}
	if c.ResumeBuffer < 1 {
		return configErrorf("ResumeBuffer", "must be positive, got %d", c.ResumeBuffer)
	}
	if c.MaxMemory < 1 && c.MaxMemory != -1 {
		return configErrorf("MaxMemory", "must be positive, or -1 for no bound, got %d", c.MaxMemory)
	}
	if c.MaxConnsPerIP < 0 {
		return configErrorf("MaxConnsPerIP", "must be 0 (no limit) or positive, got %d", c.MaxConnsPerIP)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"HandshakeTimeout", c.HandshakeTimeout},
		{"LingerTimeout", c.LingerTimeout},
		{"DrainTimeout", c.DrainTimeout},
		{"ShutdownTimeout", c.ShutdownTimeout},
		{"IdleInterval", c.IdleInterval},
		{"PongTimeout", c.PongTimeout},
		{"SlowConsumerTimeout", c.SlowConsumerTimeout},
		{"ResumeWindow", c.ResumeWindow},
	} {
		if d.v <= 0 {
			return configErrorf(d.name, "must be positive, got %s", d.v)
		}
	}
	return nil
}

// tlsConfig returns the TLS configuration New serves: a clone of
// c.TLSConfig with the minimum version and session tickets set.
func (c *Config) tlsConfig() *tls.Config {
	tc := c.TLSConfig.Clone()
	tc.MinVersion = tls.VersionTLS13
	if c.AllowTLS12 {
		tc.MinVersion = tls.VersionTLS12
	}
	tc.SessionTicketsDisabled = !c.SessionTickets
	// A client that offers ALPN wire.ALPNResume gets it; any other client
	// sees no ALPN at all, exactly as before the resume extension (a
	// server list would refuse clients offering only other protocols).
	resume := tc.Clone()
	resume.NextProtos = []string{wire.ALPNResume}
	tc.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(hello.SupportedProtos, wire.ALPNResume) {
			return resume, nil
		}
		return nil, nil
	}
	return tc
}

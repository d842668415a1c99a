package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
)

// The default listen addresses. The data plane listens on every
// interface; the control plane and the admin endpoint on loopback only.
const (
	DefaultAddr        = ":7223"
	DefaultControlAddr = control.DefaultAddr
	DefaultAdminAddr   = "127.0.0.1:7225"
)

// Config configures a Gateway: the data plane, the control plane and the
// admin endpoint. Start from DefaultConfig: New takes every field as it
// is, and refuses a zero where zero is not a valid value.
type Config struct {
	// Server is the data plane's configuration; TLSConfig is required.
	// Its Handler is what packets go to when no Receive stream of the
	// control plane selects their session (default server.Echo). Its
	// OnEvent, when set, is called after the gateway's metrics and the
	// control plane's watchers have the event. Its Logger defaults to
	// Logger. Its Observer defaults to the metrics, with the admin
	// endpoint on. New raises the soft file-descriptor limit to the hard
	// one and lowers its MaxConns (-1 included) to what that limit holds
	// less a reserve (FileReserveMin, FileReservePercent), with a warning.
	Server server.Config
	// Addr is the data plane's TCP listen address; port 0 picks a free
	// port. Required; DefaultConfig has DefaultAddr.
	Addr string
	// ControlAddr is the control plane's gRPC listen address; empty turns
	// the control plane off. DefaultConfig has DefaultControlAddr.
	ControlAddr string
	// ControlToken, when set, is the bearer token every control-plane RPC
	// must carry (the health service stays open).
	ControlToken string
	// ControlTLS, when set, serves the control plane over TLS; with
	// ClientAuth set to tls.RequireAndVerifyClientCert it is mTLS.
	// Default: plaintext.
	ControlTLS *tls.Config
	// InsecureControlPlane allows a control plane on a non-loopback
	// address without a token or client certificates.
	InsecureControlPlane bool
	// InsecureControlToken allows ControlToken over plaintext gRPC on a
	// non-loopback address (a trusted network, or a TLS-terminating
	// sidecar in front); the gateway logs a warning when it is used.
	InsecureControlToken bool
	// StreamBuffer is how many items a Receive or WatchSessions stream may
	// have waiting before it is cut off. DefaultConfig has
	// control.DefaultStreamBuffer.
	StreamBuffer int
	// StreamBufferBytes bounds the same buffers in bytes (payloads and a
	// per-item overhead). DefaultConfig has control.DefaultStreamBufferBytes.
	StreamBufferBytes int
	// NoConsumer says what becomes of the packets that no consumer group
	// takes: control.NoConsumerHandler (Server.Handler takes them) or
	// control.NoConsumerHold (the default group keeps them until a
	// consumer joins). DefaultConfig has control.NoConsumerHandler.
	NoConsumer control.NoConsumer
	// ConsumePauseTimeout, when positive, closes with Goodbye
	// backend_stalled a session whose reads a consumer group has paused
	// this long (its backend does not ack). Zero: never.
	ConsumePauseTimeout time.Duration
	// MaxStreams caps the control plane's streams (Receive, WatchSessions,
	// Consume, SendStream) open at once over every connection; beyond it a
	// new one is refused with RESOURCE_EXHAUSTED until one ends (see
	// control.Config.MaxStreams). DefaultConfig has
	// control.DefaultMaxStreams.
	MaxStreams int
	// ControlMaxHeaderBytes bounds one control-plane call's header list
	// (metadata), refused before auth beyond it; ControlMaxCallsPerConn
	// caps the calls one connection has open at once; ControlMaxConns caps
	// the connections served at once (more wait to be accepted);
	// ControlKeepaliveMinTime is the shortest interval between a client's
	// pings (GOAWAY below it). See control.Config. DefaultConfig has
	// control's defaults.
	ControlMaxHeaderBytes   int
	ControlMaxCallsPerConn  int
	ControlMaxConns         int
	ControlKeepaliveMinTime time.Duration
	// AdminAddr is the admin HTTP listen address (/metrics, /healthz,
	// /readyz); empty turns it, and the metrics, off. DefaultConfig has
	// DefaultAdminAddr.
	AdminAddr string
	// Pprof serves /debug/pprof/ on the admin endpoint.
	Pprof bool
	// Version is reported by tlsgate_build_info.
	Version string
	// Logger receives the gateway's logs. Default: discard.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of every setting, those of the data
// plane included. The CLI's flag defaults come from here.
func DefaultConfig() Config {
	return Config{
		Server:            server.DefaultConfig(),
		Addr:              DefaultAddr,
		ControlAddr:       DefaultControlAddr,
		StreamBuffer:      control.DefaultStreamBuffer,
		StreamBufferBytes: control.DefaultStreamBufferBytes,
		NoConsumer:        control.NoConsumerHandler,
		MaxStreams:        control.DefaultMaxStreams,

		ControlMaxHeaderBytes:   control.DefaultMaxHeaderBytes,
		ControlMaxCallsPerConn:  control.DefaultMaxCallsPerConn,
		ControlMaxConns:         control.DefaultMaxConns,
		ControlKeepaliveMinTime: control.DefaultKeepaliveMinTime,
		AdminAddr:               DefaultAdminAddr,
	}
}

// Validate checks c as New takes it, zero fields included. Its errors are
// *server.ConfigError; the data plane's fields are named "Server.X".
func (c *Config) Validate() error {
	if err := c.Server.Validate(); err != nil {
		var ce *server.ConfigError
		if errors.As(err, &ce) {
			return &server.ConfigError{Field: "Server." + ce.Field, Problem: ce.Problem, Fix: ce.Fix}
		}
		return err
	}
	if c.Addr == "" {
		return &server.ConfigError{Field: "Addr", Problem: "must be set (the data plane cannot be turned off)"}
	}
	if c.StreamBuffer < 1 {
		return &server.ConfigError{Field: "StreamBuffer", Problem: "must be positive"}
	}
	if c.StreamBufferBytes < 1 {
		return &server.ConfigError{Field: "StreamBufferBytes", Problem: "must be positive"}
	}
	if c.ConsumePauseTimeout < 0 {
		return &server.ConfigError{Field: "ConsumePauseTimeout", Problem: fmt.Sprintf("must not be negative, got %s", c.ConsumePauseTimeout)}
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxStreams", c.MaxStreams},
		{"ControlMaxHeaderBytes", c.ControlMaxHeaderBytes},
		{"ControlMaxCallsPerConn", c.ControlMaxCallsPerConn},
		{"ControlMaxConns", c.ControlMaxConns},
	} {
		if f.v < 1 {
			return &server.ConfigError{Field: f.name, Problem: fmt.Sprintf("must be positive, got %d", f.v)}
		}
	}
	if c.ControlMaxHeaderBytes < minHeaderBytes {
		return &server.ConfigError{Field: "ControlMaxHeaderBytes", Problem: fmt.Sprintf("must be at least %d (a call's own headers take several hundred bytes), got %d", minHeaderBytes, c.ControlMaxHeaderBytes)}
	}
	if c.ControlKeepaliveMinTime <= 0 {
		return &server.ConfigError{Field: "ControlKeepaliveMinTime", Problem: fmt.Sprintf("must be positive, got %s", c.ControlKeepaliveMinTime)}
	}
	if err := c.checkToken(); err != nil {
		return err
	}
	if c.NoConsumer != control.NoConsumerHandler && c.NoConsumer != control.NoConsumerHold {
		return &server.ConfigError{Field: "NoConsumer", Problem: fmt.Sprintf("must be %q or %q, got %q", control.NoConsumerHandler, control.NoConsumerHold, c.NoConsumer)}
	}
	mtls := c.ControlTLS != nil && c.ControlTLS.ClientAuth == tls.RequireAndVerifyClientCert
	if c.ControlAddr != "" && c.ControlToken == "" && !mtls && !c.InsecureControlPlane && !isLoopback(c.ControlAddr) {
		return &server.ConfigError{
			Field:   "ControlAddr",
			Problem: c.ControlAddr + " is not a loopback address and the control plane has no auth: anyone who can reach it could send to and disconnect every session",
			Fix:     []string{"ControlToken", "ControlTLS.ClientCAs", "InsecureControlPlane"},
		}
	}
	if c.plaintextToken() && !c.InsecureControlToken {
		return &server.ConfigError{
			Field:   "ControlAddr",
			Problem: c.ControlAddr + " is not a loopback address and the control plane is plaintext: the bearer token would cross the network in the clear, to anyone who can read it",
			Fix:     []string{"ControlTLS", "InsecureControlToken"},
		}
	}
	if c.Pprof && c.AdminAddr == "" {
		return &server.ConfigError{Field: "Pprof", Problem: "needs the admin endpoint: pprof is served there", Fix: []string{"AdminAddr"}}
	}
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

// minHeaderBytes is the least ControlMaxHeaderBytes: below it ordinary
// calls (path, content type, user agent, a bearer token, a deadline)
// would be refused.
const minHeaderBytes = 1024

// minTokenBytes is the shortest ControlToken accepted.
const minTokenBytes = 16

// checkToken refuses a ControlToken too short to resist guessing, or with
// surrounding whitespace (a paste error, which no client would send).
func (c *Config) checkToken() error {
	t := c.ControlToken
	switch {
	case t == "":
		return nil
	case strings.TrimSpace(t) != t:
		return &server.ConfigError{Field: "ControlToken", Problem: "must not start or end with whitespace"}
	case len(t) < minTokenBytes:
		return &server.ConfigError{Field: "ControlToken", Problem: fmt.Sprintf("must be at least %d bytes, got %d (generate one with: openssl rand -hex 32)", minTokenBytes, len(t))}
	}
	return nil
}

// plaintextToken reports whether the control plane would take its bearer
// token in the clear over a non-loopback address.
func (c *Config) plaintextToken() bool {
	return c.ControlAddr != "" && c.ControlToken != "" && c.ControlTLS == nil && !isLoopback(c.ControlAddr)
}

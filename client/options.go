package client

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// Defaults of the options.
const (
	DefaultRecvBuffer    = 1024
	DefaultLingerTimeout = 2 * time.Second
)

// bufSize is the size of the read and write buffers.
const bufSize = 64 << 10

// Option configures Dial.
type Option func(*config)

type config struct {
	tlsConfig   *tls.Config
	fingerprint string
	pinned      bool
	logger      *slog.Logger
	recvBuffer  int
	handler     func(Packet)
	encoding    wire.Encoding
	linger      time.Duration
	resume      resumeConfig // DialResumable only
}

func defaultConfig() config {
	return config{
		logger:     slog.New(slog.DiscardHandler),
		recvBuffer: DefaultRecvBuffer,
		encoding:   wire.JSON,
		linger:     DefaultLingerTimeout,
		resume:     defaultResumeConfig(),
	}
}

func (c *config) validate() error {
	switch {
	case c.logger == nil:
		return errors.New("client: nil logger")
	case c.recvBuffer < 1:
		return errors.New("client: receive buffer must hold at least one packet")
	case !c.encoding.Valid():
		return errors.New("client: invalid control encoding")
	case c.linger <= 0:
		return errors.New("client: linger timeout must be positive")
	}
	return nil
}

// WithTLSConfig sets the TLS configuration. Dial clones it; a zero
// MinVersion becomes TLS 1.3.
func WithTLSConfig(cfg *tls.Config) Option {
	return func(c *config) { c.tlsConfig = cfg }
}

// WithFingerprint pins the server's leaf certificate by the SHA-256 of its
// DER, in hex (case-insensitive, colons allowed). The certificate chain is
// then not verified against roots; the pin is checked instead.
func WithFingerprint(hexSHA256 string) Option {
	return func(c *config) { c.fingerprint, c.pinned = hexSHA256, true }
}

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithRecvBuffer bounds the number of received packets waiting for Recv.
// When it is full, the reader stops reading. Default 1024.
func WithRecvBuffer(n int) Option {
	return func(c *config) { c.recvBuffer = n }
}

// WithHandler delivers received Data and Error packets to h, called from
// the reader goroutine in order, instead of through Recv. h must not block
// for long: while it runs, nothing else is read. h must not call Close,
// which waits for the reader.
func WithHandler(h func(Packet)) Option {
	return func(c *config) { c.handler = h }
}

// WithEncoding sets the encoding of the control packets the client starts
// (Flush, Goodbye) before it has received any frame; after that they use
// the encoding of the last frame received. Replies use the encoding of the
// packet they answer. Default JSON.
func WithEncoding(enc wire.Encoding) Option {
	return func(c *config) { c.encoding = enc }
}

// WithLingerTimeout bounds how long the client waits, once it has sent its
// Goodbye, for the server's Goodbye (the timer restarts on every frame
// received), and, once close_notify is sent, for the server's EOF.
// Default 2 s.
func WithLingerTimeout(d time.Duration) Option {
	return func(c *config) { c.linger = d }
}

package client

import (
	"errors"
	"time"
)

// Defaults of the resumable mode's options.
const (
	DefaultResumeBuffer      = 1 << 20 // bytes of unacknowledged outbound frames
	DefaultBackoffBase       = 100 * time.Millisecond
	DefaultBackoffMax        = 10 * time.Second
	DefaultKeepaliveInterval = 15 * time.Second
	DefaultKeepaliveTimeout  = 10 * time.Second
	DefaultReconnectTimeout  = 10 * time.Second
)

// resumeConfig holds the options that only DialResumable reads.
type resumeConfig struct {
	buffer       int
	failWhenFull bool
	backoffMin   time.Duration
	backoffMax   time.Duration
	keepalive    time.Duration
	keepTimeout  time.Duration
	dialTimeout  time.Duration
	events       func(ResumeEvent)
}

func defaultResumeConfig() resumeConfig {
	return resumeConfig{
		buffer:      DefaultResumeBuffer,
		backoffMin:  DefaultBackoffBase,
		backoffMax:  DefaultBackoffMax,
		keepalive:   DefaultKeepaliveInterval,
		keepTimeout: DefaultKeepaliveTimeout,
		dialTimeout: DefaultReconnectTimeout,
	}
}

func (r *resumeConfig) validate() error {
	switch {
	case r.buffer < 1:
		return errors.New("client: resume buffer must be positive")
	case r.backoffMin <= 0 || r.backoffMax < r.backoffMin:
		return errors.New("client: backoff wants 0 < min <= max")
	case r.keepalive <= 0 || r.keepTimeout <= 0:
		return errors.New("client: keepalive interval and timeout must be positive")
	case r.dialTimeout <= 0:
		return errors.New("client: reconnect timeout must be positive")
	}
	return nil
}

// WithResumeBuffer bounds, in bytes of frames (header included), the
// outbound packets a Resumable keeps until the server acknowledges them.
// When a packet does not fit, Send waits for acknowledgements to free room
// (or fails, with WithFailWhenFull); a packet larger than the whole bound
// is accepted only into an empty buffer. The client asks the server for
// acknowledgements (a Flush) on its own once more than half the bound is
// unacknowledged. Default 1 MiB. Only DialResumable reads it.
func WithResumeBuffer(bytes int) Option {
	return func(c *config) { c.resume.buffer = bytes }
}

// WithFailWhenFull makes Resumable.Send fail at once with
// ErrResumeBufferFull, instead of waiting, when the resume buffer has no
// room. Only DialResumable reads it.
func WithFailWhenFull() Option {
	return func(c *config) { c.resume.failWhenFull = true }
}

// WithBackoff sets the reconnect backoff of a Resumable: attempt n (from 0)
// waits a uniformly random time in [0, min(ceiling, base·2ⁿ)) ("full
// jitter").
// Defaults 100 ms and 10 s. Only DialResumable reads it.
func WithBackoff(base, ceiling time.Duration) Option {
	return func(c *config) { c.resume.backoffMin, c.resume.backoffMax = base, ceiling }
}

// WithKeepalive sets the half-open detection of a Resumable: it sends a
// Ping every interval, and counts a connection on which nothing at all
// arrived for interval+timeout as lost. Defaults 15 s and 10 s. Only
// DialResumable reads it.
func WithKeepalive(interval, timeout time.Duration) Option {
	return func(c *config) { c.resume.keepalive, c.resume.keepTimeout = interval, timeout }
}

// WithReconnectTimeout bounds each reconnect attempt of a Resumable: TCP,
// TLS, the handshake and the Resume exchange. Default 10 s. Only
// DialResumable reads it.
func WithReconnectTimeout(d time.Duration) Option {
	return func(c *config) { c.resume.dialTimeout = d }
}

// WithResumeEvents reports a Resumable's connection changes to f: each
// lost connection, each failed reconnect attempt, each Resumed (the first
// connection's included) and each gap. f is called from the Resumable's
// supervising goroutine, one event at a time and in order; it must not
// block for long (reconnecting waits for it) and must not call Close.
// Only DialResumable reads it.
func WithResumeEvents(f func(ResumeEvent)) Option {
	return func(c *config) { c.resume.events = f }
}

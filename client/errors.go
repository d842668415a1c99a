package client

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors.
var (
	// ErrClosed is wrapped by errors about a connection that has ended.
	ErrClosed = errors.New("client: connection closed")
	// ErrClosing refuses new sends once the connection is closing.
	ErrClosing = errors.New("client: connection closing")
	// ErrGoodbyeReceived refuses new sends and fails pending flushes once
	// the server's Goodbye has arrived. It wraps ErrClosing.
	ErrGoodbyeReceived = fmt.Errorf("%w: the server said goodbye", ErrClosing)
	// ErrConnectionLost matches a *CloseError whose socket died without a
	// Goodbye exchange: a read or write error, or EOF without Goodbye.
	ErrConnectionLost = errors.New("client: connection lost")
	// ErrHandlerSet is returned by Recv on a Conn dialled WithHandler.
	ErrHandlerSet = errors.New("client: Recv is unavailable with WithHandler")
	// ErrFingerprintMismatch is wrapped when the pinned fingerprint does
	// not match the server's certificate.
	ErrFingerprintMismatch = errors.New("client: server certificate fingerprint mismatch")
)

// Initiator tells which side started the end of a connection.
type Initiator string

// Initiators.
const (
	InitiatorLocal  Initiator = "local"
	InitiatorRemote Initiator = "remote"
)

// Outcome tells how a connection ended.
type Outcome string

// Outcomes.
const (
	// OutcomeClean: both Goodbyes were exchanged.
	OutcomeClean Outcome = "clean"
	// OutcomePeerClosed: EOF without the server's Goodbye. It proves
	// nothing about what the server meant to send.
	OutcomePeerClosed Outcome = "peer_closed"
	// OutcomeTimeout: the linger timeout expired waiting for the Goodbye.
	OutcomeTimeout Outcome = "timeout"
	// OutcomeForced: Close's context expired and the socket was closed.
	OutcomeForced Outcome = "forced"
	// OutcomeLost: a read or write error, or a broken byte stream.
	OutcomeLost Outcome = "lost"
)

// CloseError tells why a connection ended. Code, Reason and Reconnect come
// from the server's Goodbye; Code is empty when none was received.
type CloseError struct {
	Code      string
	Reason    string
	Reconnect bool
	Initiator Initiator
	Outcome   Outcome
	Cause     error
}

func (e *CloseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "client: connection ended (%s, initiated by %s)", e.Outcome, e.Initiator)
	if e.Code != "" {
		fmt.Fprintf(&b, ", server goodbye %q", e.Code)
		if e.Reason != "" {
			fmt.Fprintf(&b, ": %s", e.Reason)
		}
		if e.Reconnect {
			b.WriteString(" (reconnect advised)")
		}
	}
	if e.Cause != nil {
		fmt.Fprintf(&b, ": %v", e.Cause)
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *CloseError) Unwrap() error { return e.Cause }

// Is matches ErrConnectionLost for the outcomes lost and peer_closed.
func (e *CloseError) Is(target error) bool {
	return target == ErrConnectionLost && (e.Outcome == OutcomeLost || e.Outcome == OutcomePeerClosed)
}

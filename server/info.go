package server

import (
	"crypto/ed25519"
	"time"
)

// Outcome records how a connection's close ended.
type Outcome string

// Outcomes of a close.
const (
	// OutcomeClean: both Goodbyes were exchanged.
	OutcomeClean Outcome = "clean"
	// OutcomePeerClosed: the peer closed (EOF or a socket error) without
	// completing the Goodbye exchange. It proves nothing about what the peer
	// meant to send.
	OutcomePeerClosed Outcome = "peer_closed"
	// OutcomeTimeout: the drain or linger timeout expired.
	OutcomeTimeout Outcome = "timeout"
	// OutcomeForced: closed at once, by request or at the end of a shutdown.
	OutcomeForced Outcome = "forced"
)

// State is a connection's place in its lifecycle. A connection only moves
// forward:
//
//	active ──close starts──▶ draining ──Goodbye written──▶ closing ──▶ closed
//	active, draining ──taken over──▶ closing
//	any ──the connection ends──▶ closed
//
// A close starts with Session.Close, the peer's Goodbye, the end of its
// input, a protocol error or the watchdog; it queues this side's Goodbye
// behind what is queued. A connection whose session is taken over writes
// its Error and Goodbye at once and goes to closing. An abort (a forced
// close, a failed write, a timeout) changes no state until the connection
// has ended.
type State string

// States of a session's connection.
const (
	// StateActive: the handshake is done; no close has started. A
	// connection in its handshake has no session yet, and so no state.
	StateActive State = "active"
	// StateDraining: a close has started; new sends are refused and the
	// queue is being written, up to this side's Goodbye.
	StateDraining State = "draining"
	// StateClosing: this side's Goodbye is written; waiting for the peer's
	// Goodbye or EOF (the linger).
	StateClosing State = "closing"
	// StateClosed: the connection has ended (final).
	StateClosed State = "closed"
	// StateDetached: the session's resumable connection was lost without
	// a Goodbye; the session is kept for a Resume (it has no connection).
	StateDetached State = "detached"
)

// Counters are a connection's traffic counters.
type Counters struct {
	PacketsIn, BytesIn   uint64
	PacketsOut, BytesOut uint64
	// Discarded counts inbound packets read but not processed: after a
	// takeover or a framing error.
	Discarded uint64
	// RepliesDropped counts replies produced after this side's Goodbye.
	RepliesDropped uint64
	// Unwritten counts queued packets never written because the connection ended.
	Unwritten uint64
}

// SessionInfo is a snapshot of a session.
type SessionInfo struct {
	ID                        uint64
	PublicKey                 ed25519.PublicKey
	ConnID                    uint64
	RemoteAddr                string
	TLSVersion                uint16
	Cipher                    uint16
	State                     State
	ConnectedAt, LastActivity time.Time
	Counters
	QueueLen, QueueBytes, QueueLimit int
	// MemoryBytes is the session's share of Config.MaxMemory: QueueBytes,
	// plus UnackedBytes when resumable, plus what Handlers hold for it
	// (Session.ChargeMemory: the control plane's unacked inbound packets).
	MemoryBytes int
	// LastFlushAck is the seq of the last Flush barrier the client acknowledged.
	LastFlushAck uint64
	// Takeovers counts how many times this identity was taken over.
	Takeovers uint64
	// Resumable sessions only (Epoch is empty otherwise), numbers of Data
	// in the epoch: outbound, the last written (SentSeq) and the last the
	// client acked (AckedSeq), with the bytes written and not yet acked,
	// kept for a replay; inbound, the last processed (ReceivedSeq) and the
	// last the server acked (ServerAckedSeq).
	Epoch                       string
	SentSeq, AckedSeq           uint64
	UnackedBytes                int
	ReceivedSeq, ServerAckedSeq uint64
	// DetachedSince is when the session lost its connection, and ExpiresAt
	// when it ends unless a Resume takes it (StateDetached).
	DetachedSince, ExpiresAt time.Time
}

// CloseInfo is a connection's final state.
type CloseInfo struct {
	SessionID uint64
	ConnID    uint64
	// Code and Reason of the close the server started (its Goodbye), empty
	// if it started none (the connection was forced or simply lost).
	Code, Reason string
	// GoodbyeSent: the server's Goodbye was written. A slow consumer or a
	// drain timeout can end the connection before it is.
	GoodbyeSent bool
	// PeerCode is the code of the peer's Goodbye, if one arrived.
	PeerCode string
	Outcome  Outcome
	// TruncatedFrame: the stream ended inside a frame.
	TruncatedFrame bool
	Counters
	// Ended is set, and nothing else but SessionID and Outcome (forced),
	// when Session.Close ended a detached session: it had no connection.
	Ended *Ended
}

package server

import "time"

// EventKind names a session lifecycle event.
type EventKind int

// Lifecycle events, in the order a connection sees them.
const (
	// EventConnected: a connection completed its handshake and holds its session.
	EventConnected EventKind = iota + 1
	// EventTakenOver: a new connection took the session from an old one.
	EventTakenOver
	// EventClosed: a connection has fully ended. Every packet it delivered
	// was processed before this event.
	EventClosed
	// EventDetached: a resumable session lost its connection without a
	// Goodbye and is kept for the resume window (after its EventClosed).
	EventDetached
	// EventResumed: a resumable connection's Resume was answered; Resumed
	// says whether the client's epoch was resumed.
	EventResumed
	// EventExpired: a detached session ended without a Resume; Dropped
	// and DroppedBytes are what it held.
	EventExpired
)

func (k EventKind) String() string {
	switch k {
	case EventConnected:
		return "connected"
	case EventTakenOver:
		return "taken_over"
	case EventClosed:
		return "closed"
	case EventDetached:
		return "detached"
	case EventResumed:
		return "resumed"
	case EventExpired:
		return "expired"
	}
	return "unknown"
}

// Event is a session lifecycle event.
type Event struct {
	Kind      EventKind
	Time      time.Time
	SessionID uint64
	ConnID    uint64
	// OldConnID is the connection that lost the session (EventTakenOver).
	OldConnID uint64
	// Session is the session's state (EventConnected, EventTakenOver).
	Session SessionInfo
	// Close is the connection's final state (EventClosed).
	Close CloseInfo
	// Resumed: the client's epoch was resumed (EventResumed).
	Resumed bool
	// Dropped and DroppedBytes: what an expired session held (EventExpired).
	Dropped, DroppedBytes int
}

func (s *Server) emit(e Event) {
	if s.cfg.OnEvent != nil {
		e.Time = time.Now()
		s.cfg.OnEvent(e)
	}
}

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
)

func (k EventKind) String() string {
	switch k {
	case EventConnected:
		return "connected"
	case EventTakenOver:
		return "taken_over"
	case EventClosed:
		return "closed"
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
}

func (s *Server) emit(e Event) {
	if s.cfg.OnEvent != nil {
		e.Time = time.Now()
		s.cfg.OnEvent(e)
	}
}

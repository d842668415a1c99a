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
	// EventExpired: a detached session ended without a Resume; Ended says
	// why, and what it held and dropped.
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
	// Ended: why an expired session ended, and what it dropped
	// (EventExpired).
	Ended Ended
}

// Why a detached session ended without a Resume (Ended.Reason).
const (
	EndResumeWindow   = "resume_window"   // no Resume within Config.ResumeWindow
	EndDisconnect     = "disconnect"      // Session.Close of the detached session
	EndServerShutdown = "server_shutdown" // the server shut down
)

// Ended is what a detached session held when it ended without a Resume:
// its queued and its written but unacked packets, all dropped.
type Ended struct {
	Reason         string
	Packets, Bytes int
}

func (s *Server) emit(e Event) {
	if s.cfg.OnEvent != nil {
		e.Time = time.Now()
		s.cfg.OnEvent(e)
	}
}

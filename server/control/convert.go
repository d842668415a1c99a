package control

import (
	"bytes"
	"crypto/tls"

	"google.golang.org/protobuf/types/known/timestamppb"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// This file converts the data plane's types to the API's messages.

func encodingToProto(e wire.Encoding) tlsgatev1.Encoding {
	if e == wire.MsgPack {
		return tlsgatev1.Encoding_ENCODING_MSGPACK
	}
	return tlsgatev1.Encoding_ENCODING_JSON
}

func stateToProto(s server.State) tlsgatev1.SessionState {
	// SESSION_STATE_HANDSHAKING is never produced: a connection in its
	// handshake has no session to list.
	switch s {
	case server.StateActive:
		return tlsgatev1.SessionState_SESSION_STATE_ACTIVE
	case server.StateDraining:
		return tlsgatev1.SessionState_SESSION_STATE_DRAINING
	case server.StateClosing:
		return tlsgatev1.SessionState_SESSION_STATE_CLOSING
	case server.StateDetached:
		return tlsgatev1.SessionState_SESSION_STATE_DETACHED
	}
	return tlsgatev1.SessionState_SESSION_STATE_UNSPECIFIED
}

func outcomeToProto(o server.Outcome) tlsgatev1.Outcome {
	switch o {
	case server.OutcomeClean:
		return tlsgatev1.Outcome_OUTCOME_CLEAN
	case server.OutcomePeerClosed:
		return tlsgatev1.Outcome_OUTCOME_PEER_CLOSED
	case server.OutcomeTimeout:
		return tlsgatev1.Outcome_OUTCOME_TIMEOUT
	case server.OutcomeForced:
		return tlsgatev1.Outcome_OUTCOME_FORCED
	}
	return tlsgatev1.Outcome_OUTCOME_UNSPECIFIED
}

func countersToProto(c server.Counters) *tlsgatev1.Counters {
	return &tlsgatev1.Counters{
		PacketsIn: c.PacketsIn, BytesIn: c.BytesIn,
		PacketsOut: c.PacketsOut, BytesOut: c.BytesOut,
		Discarded: c.Discarded, RepliesDropped: c.RepliesDropped, Unwritten: c.Unwritten,
	}
}

func sessionToProto(i server.SessionInfo) *tlsgatev1.Session {
	s := &tlsgatev1.Session{
		SessionId:       i.ID,
		PublicKey:       i.PublicKey,
		ConnectionId:    i.ConnID,
		RemoteAddress:   i.RemoteAddr,
		State:           stateToProto(i.State),
		Counters:        countersToProto(i.Counters),
		QueueLength:     uint32(i.QueueLen),
		QueueBytes:      uint64(i.QueueBytes),
		QueueLimitBytes: uint64(i.QueueLimit),
		LastFlushAckSeq: i.LastFlushAck,
		Takeovers:       i.Takeovers,
		MemoryBytes:     uint64(i.MemoryBytes),
	}
	if i.TLSVersion != 0 {
		s.TlsVersion = tls.VersionName(i.TLSVersion)
		s.TlsCipher = tls.CipherSuiteName(i.Cipher)
	}
	if !i.ConnectedAt.IsZero() {
		s.ConnectedTime = timestamppb.New(i.ConnectedAt)
		s.LastActivityTime = timestamppb.New(i.LastActivity)
	}
	if i.Epoch != "" || i.State == server.StateDetached {
		s.Resume = resumeStateToProto(i)
	}
	return s
}

func resumeStateToProto(i server.SessionInfo) *tlsgatev1.ResumeState {
	r := &tlsgatev1.ResumeState{
		Epoch: i.Epoch, SentSeq: i.SentSeq, ClientAckedSeq: i.AckedSeq, RetainedBytes: uint64(i.UnackedBytes),
		ReceivedSeq: i.ReceivedSeq, ServerAckedSeq: i.ServerAckedSeq,
	}
	if !i.DetachedSince.IsZero() {
		r.DetachedTime = timestamppb.New(i.DetachedSince)
		r.ExpireTime = timestamppb.New(i.ExpiresAt)
	}
	return r
}

func endedToProto(id uint64, e server.Ended) *tlsgatev1.EndedSession {
	return &tlsgatev1.EndedSession{SessionId: id, Reason: e.Reason, DroppedPackets: uint64(e.Packets), DroppedBytes: uint64(e.Bytes)}
}

func closedConnection(c server.CloseInfo) *tlsgatev1.ClosedConnection {
	return &tlsgatev1.ClosedConnection{
		SessionId:       c.SessionID,
		ConnectionId:    c.ConnID,
		GoodbyeCode:     c.Code,
		GoodbyeReason:   c.Reason,
		GoodbyeSent:     c.GoodbyeSent,
		PeerGoodbyeCode: c.PeerCode,
		Outcome:         outcomeToProto(c.Outcome),
		TruncatedFrame:  c.TruncatedFrame,
		Counters:        countersToProto(c.Counters),
	}
}

func inboundPacket(s *server.Session, p server.Packet) *tlsgatev1.InboundPacket {
	typ := tlsgatev1.PacketType_PACKET_TYPE_DATA
	if p.Type == wire.TypeError {
		typ = tlsgatev1.PacketType_PACKET_TYPE_ERROR
	}
	return &tlsgatev1.InboundPacket{
		SessionId:    s.ID(),
		ConnectionId: p.ConnID,
		Seq:          p.Seq,
		Type:         typ,
		Encoding:     encodingToProto(p.Encoding),
		Payload:      bytes.Clone(p.Payload), // borrowed for the Handle call only
		ReceivedTime: timestamppb.New(p.ReceivedAt),
	}
}

func watchEvent(e server.Event) *tlsgatev1.WatchSessionsResponse {
	r := &tlsgatev1.WatchSessionsResponse{Time: timestamppb.New(e.Time)}
	switch e.Kind {
	case server.EventConnected:
		r.Event = &tlsgatev1.WatchSessionsResponse_Connected{Connected: &tlsgatev1.SessionConnected{Session: sessionToProto(e.Session)}}
	case server.EventTakenOver:
		r.Event = &tlsgatev1.WatchSessionsResponse_TakenOver{TakenOver: &tlsgatev1.SessionTakenOver{
			SessionId: e.SessionID, OldConnectionId: e.OldConnID, NewConnectionId: e.ConnID, Session: sessionToProto(e.Session),
		}}
	case server.EventClosed:
		r.Event = &tlsgatev1.WatchSessionsResponse_Closed{Closed: closedConnection(e.Close)}
	case server.EventDetached:
		r.Event = &tlsgatev1.WatchSessionsResponse_Detached{Detached: &tlsgatev1.SessionDetached{Session: sessionToProto(e.Session)}}
	case server.EventResumed:
		r.Event = &tlsgatev1.WatchSessionsResponse_Resumed{Resumed: &tlsgatev1.SessionResumed{Resumed: e.Resumed, Session: sessionToProto(e.Session)}}
	case server.EventExpired:
		r.Event = &tlsgatev1.WatchSessionsResponse_Expired{Expired: &tlsgatev1.SessionExpired{Ended: endedToProto(e.SessionID, e.Ended)}}
	}
	return r
}

// packetOf is the data plane's Packet of an inbound packet.
func packetOf(p *tlsgatev1.InboundPacket) server.Packet {
	typ := wire.TypeData
	if p.GetType() == tlsgatev1.PacketType_PACKET_TYPE_ERROR {
		typ = wire.TypeError
	}
	return server.Packet{
		Seq: p.GetSeq(), ConnID: p.GetConnectionId(), Type: typ, Encoding: encodingFromProto(p.GetEncoding()),
		Payload: p.GetPayload(), ReceivedAt: p.GetReceivedTime().AsTime(),
	}
}

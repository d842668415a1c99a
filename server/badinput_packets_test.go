package server_test

// Bad input in whole frames: packet types protocol v1 does not define,
// and control payloads that do not decode.

import (
	"testing"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestBadInputPackets: a well-framed packet the server cannot use gets an
// Error naming it, or is dropped, and the connection stays open.
func TestBadInputPackets(t *testing.T) {
	runRows(t, []inputRow{
		{"unknown packet type", badInputUnknownType},
		{"control payload that does not decode (JSON and MessagePack)", badInputBadControlPayload},
	})
}

// packet is a frame to write: its type, encoding and payload.
type packet struct {
	typ     wire.Type
	enc     wire.Encoding
	payload string
}

// expectErrorAnswers writes each packet on rc and expects, for each, an
// Error of code naming its type, in its encoding, and then a Ping's Pong:
// the connection stays open. after, when set, runs after each packet.
func expectErrorAnswers(t *testing.T, rc *wiretest.Conn, code string, packets []packet, after func()) {
	t.Helper()
	for i, p := range packets {
		rc.WriteFrame(t, p.typ, p.enc, []byte(p.payload))
		expectError(t, rc, p.enc, code, p.typ)
		expectStillOpen(t, rc, uint64(i+1))
		if after != nil {
			after()
		}
	}
}

// badInputUnknownType: a frame of a type protocol v1 does not define gets
// an Error unknown_type naming it, in the frame's encoding, and the
// connection stays open and working.
func badInputUnknownType(t *testing.T) {
	r := newRow(t, server.Config{})
	rc := wiretest.Connect(t, r.ts.addr, newKey(t))
	var unknown []packet
	for _, typ := range []wire.Type{7, 8, 42, 63} {
		for _, enc := range []wire.Encoding{wire.JSON, wire.MsgPack} {
			unknown = append(unknown, packet{typ, enc, "?"})
		}
	}
	expectErrorAnswers(t, rc, wire.CodeUnknownType, unknown, func() { r.by.waitTrips(t, 1) })
	bystanderEcho(t, rc, "data still flows")
	if sess, ok := r.ts.Session(rc.ID()); !ok || sess.Info().State != server.StateActive {
		t.Fatal("the session is no longer active")
	}
	r.unaffected(t)
}

// badInputBadControlPayload: Flush and Ping payloads that do not decode, in
// JSON and in MessagePack, get an Error bad_payload in the same encoding;
// the connection stays open. FlushAck and Pong are never answered with an
// Error (two peers must not loop): they are logged and dropped.
func badInputBadControlPayload(t *testing.T) {
	r := newRow(t, server.Config{})
	rc := wiretest.Connect(t, r.ts.addr, newKey(t))
	expectErrorAnswers(t, rc, wire.CodeBadPayload, []packet{
		{wire.TypeFlush, wire.JSON, ""},
		{wire.TypeFlush, wire.JSON, "{"},
		{wire.TypeFlush, wire.JSON, `{"seq":"one"}`},
		{wire.TypeFlush, wire.JSON, `{"seq":-1}`},
		{wire.TypeFlush, wire.JSON, "\x81\xa3seq\x01"}, // MessagePack under the JSON bits
		{wire.TypeFlush, wire.MsgPack, ""},
		{wire.TypeFlush, wire.MsgPack, "\xc1"},
		{wire.TypeFlush, wire.MsgPack, `{"seq":1}`}, // JSON under the MessagePack bits
		{wire.TypePing, wire.JSON, "[]"},
		{wire.TypePing, wire.JSON, `{"nonce":1.5}`},
		{wire.TypePing, wire.MsgPack, "\x81\xa5nonce\xa1x"},
		{wire.TypePing, wire.MsgPack, "\x92\x01\x02"},
	}, nil)
	r.by.waitTrips(t, 1)
	for _, enc := range []wire.Encoding{wire.JSON, wire.MsgPack} {
		rc.WriteFrame(t, wire.TypeFlushAck, enc, []byte("\xc1{"))
		rc.WriteFrame(t, wire.TypePong, enc, []byte("\xc1{"))
	}
	expectStillOpen(t, rc, 99) // the next frame is the Pong: no Error came first
	bystanderEcho(t, rc, "data still flows")
	// Logged at warn once, then at debug: a client cannot flood the log.
	r.logs.want(t, 1, "level=WARN", `msg="undecodable control packet"`, "further slips of this connection are logged at debug")
	r.logs.want(t, 3, "level=DEBUG", `msg="undecodable control packet"`)
	r.unaffected(t)
}

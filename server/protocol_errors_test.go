package server_test

import (
	"io"
	"testing"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// bystander is a well-behaved session that must not notice another
// session's protocol errors: an echo round trip proves it.
func bystanderEcho(t *testing.T, rc *wiretest.Conn, msg string) {
	t.Helper()
	rc.WriteFrame(t, wire.TypeData, wire.JSON, []byte(msg))
	if f := rc.Read(t); f.Type != wire.TypeData || string(f.Payload) != msg {
		t.Fatalf("bystander echo: got %s %q, want %q", f.Type, f.Payload, msg)
	}
}

func expectError(t *testing.T, rc *wiretest.Conn, enc wire.Encoding, code string, pktType wire.Type) {
	t.Helper()
	f := rc.Read(t)
	if f.Type != wire.TypeError || f.Encoding != enc {
		t.Fatalf("got %s/%s %q, want %s Error", f.Type, f.Encoding, f.Payload, enc)
	}
	ep, err := wire.DecodeError(f.Encoding, f.Payload)
	if err != nil || ep.Code != code || ep.PktType != int(pktType) || ep.Error == "" {
		t.Fatalf("Error %+v %v, want code %s pkt_type %d and a message", ep, err, code, pktType)
	}
}

// expectStillOpen proves the connection works: Ping gets its Pong next.
func expectStillOpen(t *testing.T, rc *wiretest.Conn, nonce uint64) {
	t.Helper()
	rc.WriteControl(t, wire.TypePing, wire.JSON, wire.PingPayload{Nonce: nonce})
	f := rc.Read(t)
	p, err := wire.DecodePing(f.Encoding, f.Payload)
	if f.Type != wire.TypePong || err != nil || p.Nonce != nonce {
		t.Fatalf("got %s %q, want Pong %d", f.Type, f.Payload, nonce)
	}
}

// expectProtocolClose: Goodbye protocol_error in enc (protocol.md §5: JSON
// after a framing error, the frame's own after an oversized one), then
// close_notify once the client has gone, with nothing processed after the
// bad frame.
func expectProtocolClose(t *testing.T, ts *testServer, rc *wiretest.Conn, enc wire.Encoding) {
	t.Helper()
	f := rc.Read(t)
	gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
	if f.Type != wire.TypeGoodbye || err != nil || gb.Code != wire.GoodbyeProtocolError || f.Encoding != enc {
		t.Fatalf("got %s %+v in %s, want Goodbye protocol_error in %s", f.Type, gb, f.Encoding, enc)
	}
	_ = rc.CloseWrite()
	_, err = io.Copy(io.Discard, rc.Stream())
	if err != nil {
		t.Fatalf("after the Goodbye: %v, want EOF", err)
	}
	ev := ts.waitEvent(t, server.EventClosed, rc.ID())
	if ev.Close.Code != wire.GoodbyeProtocolError {
		t.Fatalf("closed %+v, want code protocol_error", ev.Close)
	}
}

func TestProtocolErrors(t *testing.T) {
	ts := startServer(t, server.Config{MaxPayload: 1000})
	bystander := wiretest.Connect(t, ts.addr, newKey(t))
	bystanderEcho(t, bystander, "before")

	t.Run("bad version", func(t *testing.T) {
		rc := wiretest.Connect(t, ts.addr, newKey(t))
		rc.WriteRaw(t, []byte{0x02, byte(wire.TypeData), 0, 1, 'x'})
		expectError(t, rc, wire.JSON, wire.CodeProtocolError, 0)
		bystanderEcho(t, bystander, "bad version")
		expectProtocolClose(t, ts, rc, wire.JSON)
	})
	t.Run("reserved encoding", func(t *testing.T) {
		rc := wiretest.Connect(t, ts.addr, newKey(t))
		rc.WriteFrame(t, wire.TypeData, wire.MsgPack, []byte("fine"))
		rc.WriteRaw(t, []byte{wire.Version, 2<<6 | byte(wire.TypeData), 0, 1, 'x'})
		rc.WriteFrame(t, wire.TypeData, wire.JSON, []byte("never processed"))
		if f := rc.Read(t); string(f.Payload) != "fine" {
			t.Fatalf("echo before the error: %q", f.Payload)
		}
		expectError(t, rc, wire.JSON, wire.CodeProtocolError, 0)
		bystanderEcho(t, bystander, "reserved encoding")
		expectProtocolClose(t, ts, rc, wire.JSON)
	})
	t.Run("frame too large", func(t *testing.T) {
		rc := wiretest.Connect(t, ts.addr, newKey(t))
		h := wire.Header(wire.TypeData, wire.MsgPack, 1001)
		rc.WriteRaw(t, h[:])
		expectError(t, rc, wire.MsgPack, wire.CodeFrameTooLarge, wire.TypeData)
		bystanderEcho(t, bystander, "too large")
		expectProtocolClose(t, ts, rc, wire.MsgPack)
	})
	t.Run("unknown type", func(t *testing.T) {
		rc := wiretest.Connect(t, ts.addr, newKey(t))
		rc.WriteFrame(t, wire.Type(42), wire.MsgPack, []byte{0x80})
		expectError(t, rc, wire.MsgPack, wire.CodeUnknownType, 42)
		expectStillOpen(t, rc, 1)
		bystanderEcho(t, bystander, "unknown type")
	})
	t.Run("undecodable control payloads", func(t *testing.T) {
		rc := wiretest.Connect(t, ts.addr, newKey(t))
		for i, c := range []struct {
			typ     wire.Type
			enc     wire.Encoding
			payload string
		}{
			{wire.TypeFlush, wire.JSON, ""},
			{wire.TypeFlush, wire.JSON, "{"},
			{wire.TypeFlush, wire.JSON, `{"seq":"one"}`},
			{wire.TypeFlush, wire.JSON, `{}`},
			{wire.TypeFlush, wire.MsgPack, ""},
			{wire.TypeFlush, wire.MsgPack, "\xc1"},
			{wire.TypePing, wire.JSON, "[]"},
			{wire.TypePing, wire.MsgPack, "\x81\xa5nonce\xa1x"},
		} {
			rc.WriteFrame(t, c.typ, c.enc, []byte(c.payload))
			expectError(t, rc, c.enc, wire.CodeBadPayload, c.typ)
			expectStillOpen(t, rc, uint64(i))
		}
		bystanderEcho(t, bystander, "bad payloads")
	})
	t.Run("no error answers", func(t *testing.T) {
		rc := wiretest.Connect(t, ts.addr, newKey(t))
		rc.WriteFrame(t, wire.TypeFlushAck, wire.JSON, []byte("nope"))
		rc.WriteFrame(t, wire.TypePong, wire.MsgPack, nil)
		// An inbound Error is an opaque application message: echoed as is.
		rc.WriteFrame(t, wire.TypeError, wire.JSON, []byte(`{"error":"hi"}`))
		if f := rc.Read(t); f.Type != wire.TypeError || string(f.Payload) != `{"error":"hi"}` {
			t.Fatalf("got %s %q, want the Error echoed", f.Type, f.Payload)
		}
		expectStillOpen(t, rc, 7)
		// An undecodable Goodbye still counts as a Goodbye.
		rc.WriteFrame(t, wire.TypeGoodbye, wire.JSON, []byte("bye?"))
		f := rc.Read(t)
		if gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload); f.Type != wire.TypeGoodbye || err != nil || gb.Code != wire.GoodbyeNormal {
			t.Fatalf("got %s %q, want Goodbye normal", f.Type, f.Payload)
		}
		rc.ExpectEOF(t)
		ev := ts.waitEvent(t, server.EventClosed, rc.ID())
		if ev.Close.Outcome != server.OutcomeClean {
			t.Fatalf("outcome %s, want clean", ev.Close.Outcome)
		}
	})
	t.Run("truncated frame", func(t *testing.T) {
		h := &countingHandler{}
		ts := startServer(t, server.Config{Handler: h})
		rc := wiretest.Connect(t, ts.addr, newKey(t))
		rc.WriteFrame(t, wire.TypeData, wire.JSON, []byte("whole"))
		rc.WriteRaw(t, []byte{wire.Version, byte(wire.TypeData), 0, 10, 'x'})
		_ = rc.Close()
		ev := ts.waitEvent(t, server.EventClosed, rc.ID())
		if got := h.got(rc.ID()); len(got) != 1 || string(got[0]) != "whole" || !ev.Close.TruncatedFrame {
			t.Fatalf("processed %q, truncated %v: want [whole], true", got, ev.Close.TruncatedFrame)
		}
	})
	bystanderEcho(t, bystander, "after")
}

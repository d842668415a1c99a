package server_test

// Bad input in the framing: headers that lose the framing, frames over the
// maximum, and streams that end inside a frame.

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// TestBadInputFraming: a frame the server cannot trust ends the connection
// with Error and Goodbye protocol_error, and a stream cut inside a frame
// ends it; every whole frame before is processed, nothing after.
func TestBadInputFraming(t *testing.T) {
	runRows(t, []inputRow{
		{"frame with bad version or reserved encoding", badInputBadFrameHeader},
		{"frame longer than the configured maximum", badInputFrameTooLong},
		{"truncated frame then EOF", badInputTruncatedFrame},
	})
}

// badInputBadFrameHeader: a frame whose version byte is not 0x01, or whose
// encoding bits are reserved, loses the framing: the server answers an
// Error protocol_error, then closes gracefully with Goodbye protocol_error.
// What came before is processed; nothing after it is.
func badInputBadFrameHeader(t *testing.T) {
	h := &rowHandler{}
	r := newRow(t, server.Config{Handler: h})
	for name, header := range map[string][]byte{
		"version 0x00":        {0x00, byte(wire.TypeData), 0, 1},
		"version 0x02":        {0x02, byte(wire.TypeData), 0, 1},
		"reserved encoding 2": {wire.Version, 2<<6 | byte(wire.TypeData), 0, 1},
		"reserved encoding 3": {wire.Version, 3<<6 | byte(wire.TypeFlush), 0, 1},
	} {
		t.Run(name, func(t *testing.T) {
			rc := wiretest.Connect(t, r.ts.addr, newKey(t))
			rc.WriteFrame(t, wire.TypeData, wire.MsgPack, []byte("before"))
			if f := rc.Read(t); string(f.Payload) != "before" {
				t.Fatalf("echo before the bad frame: %s %q", f.Type, f.Payload)
			}
			frames := append(append([]byte{}, header...), 'x')
			frames = wire.AppendFrame(frames, wire.TypeData, wire.JSON, []byte("after"))
			rc.WriteRaw(t, frames)
			expectError(t, rc, wire.JSON, wire.CodeProtocolError, 0)
			r.by.waitTrips(t, 1)
			expectProtocolClose(t, r.ts, rc, wire.JSON)
			if got := h.got(rc.ID()); len(got) != 1 || string(got[0]) != "before" {
				t.Errorf("processed %q, want [before] alone", got)
			}
		})
	}
	r.logs.want(t, 4, `msg="protocol error, closing"`, "code=protocol_error")
	r.unaffected(t)
}

// badInputFrameTooLong: a frame header announcing more than the configured
// maximum payload gets Error frame_too_large, then the graceful close with
// Goodbye protocol_error; the payload and anything after it are read and
// discarded, never processed. A frame of exactly the maximum is fine.
func badInputFrameTooLong(t *testing.T) {
	const maxPayload = 1000
	h := &rowHandler{}
	r := newRow(t, server.Config{Handler: h, MaxPayload: maxPayload})
	rc := wiretest.Connect(t, r.ts.addr, newKey(t))
	largest := bytes.Repeat([]byte("m"), maxPayload)
	rc.WriteFrame(t, wire.TypeData, wire.JSON, largest)
	if f := rc.Read(t); !bytes.Equal(f.Payload, largest) {
		t.Fatalf("a frame of exactly the maximum: got %s of %d bytes", f.Type, len(f.Payload))
	}
	over := wire.AppendFrame(nil, wire.TypeData, wire.MsgPack, bytes.Repeat([]byte("o"), maxPayload+1))
	over = wire.AppendFrame(over, wire.TypeData, wire.JSON, []byte("after"))
	rc.WriteRaw(t, over)
	expectError(t, rc, wire.MsgPack, wire.CodeFrameTooLarge, wire.TypeData)
	r.by.waitTrips(t, 1)
	expectProtocolClose(t, r.ts, rc, wire.MsgPack)
	if got := h.got(rc.ID()); len(got) != 1 || len(got[0]) != maxPayload {
		t.Errorf("processed %d packets, want the one of the maximum size alone", len(got))
	}
	r.logs.want(t, 1, `msg="protocol error, closing"`, "code=frame_too_large")
	r.unaffected(t)
}

// badInputTruncatedFrame: the stream ends inside a frame (its header or its
// payload). Every whole frame before it is processed, and the truncation
// is recorded in the closed event and the log.
func badInputTruncatedFrame(t *testing.T) {
	h := &rowHandler{}
	r := newRow(t, server.Config{Handler: h})

	t.Run("close_notify inside a payload", func(t *testing.T) {
		rc := wiretest.Connect(t, r.ts.addr, newKey(t))
		for i := range 3 {
			rc.WriteFrame(t, wire.TypeData, wire.JSON, fmt.Appendf(nil, "whole %d", i))
		}
		rc.WriteRaw(t, []byte{wire.Version, byte(wire.TypeData), 0, 10, 'x'})
		_ = rc.CloseWrite()
		// The echoes of the whole frames, then the server's Goodbye.
		for i := range 3 {
			if f := rc.Read(t); string(f.Payload) != fmt.Sprintf("whole %d", i) {
				t.Fatalf("echo %d: %s %q", i, f.Type, f.Payload)
			}
		}
		if f := rc.Read(t); f.Type != wire.TypeGoodbye {
			t.Fatalf("got %s, want Goodbye", f.Type)
		}
		rc.ExpectEOF(t)
		ev := r.ts.waitEvent(t, server.EventClosed, rc.ID())
		if got := h.got(rc.ID()); len(got) != 3 || !ev.Close.TruncatedFrame || ev.Close.PacketsIn != 3 {
			t.Fatalf("processed %q, closed %+v: want the 3 whole frames and the truncation recorded", got, ev.Close)
		}
	})
	t.Run("TCP close inside a header", func(t *testing.T) {
		rc := wiretest.Connect(t, r.ts.addr, newKey(t))
		for i := range 3 {
			rc.WriteFrame(t, wire.TypeData, wire.MsgPack, fmt.Appendf(nil, "noecho %d", i))
		}
		rc.WriteRaw(t, []byte{wire.Version, byte(wire.TypeData)})
		_ = rc.Abort() // no close_notify either
		ev := r.ts.waitEvent(t, server.EventClosed, rc.ID())
		if got := h.got(rc.ID()); len(got) != 3 || string(got[2]) != "noecho 2" || ev.Close.PacketsIn != 3 {
			t.Fatalf("processed %q, closed %+v: want the 3 whole frames", got, ev.Close)
		}
		if ev.Close.Outcome != server.OutcomePeerClosed {
			t.Errorf("outcome %s, want peer_closed", ev.Close.Outcome)
		}
	})
	r.by.waitTrips(t, 1)
	if n := r.logs.count(`msg="stream ended inside a frame"`); n < 1 {
		t.Errorf("the truncation was not logged:\n%s", r.logs)
	}
	r.unaffected(t)
}

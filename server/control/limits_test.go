package control_test

import (
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2conn is a raw HTTP/2 client of the control plane: it sends what a
// hostile client would, bypassing grpc-go's client-side checks.
type h2conn struct {
	nc net.Conn
	fr *http2.Framer
}

func dialH2(t *testing.T, addr string) *h2conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	// Every read below waits for a frame the server must send; the
	// deadline only turns a hang into a failure.
	if err := nc.SetDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	c := &h2conn{nc: nc, fr: http2.NewFramer(nc, nc)}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// call sends a ListSessions call's HEADERS (and CONTINUATIONs) with one
// extra metadata entry of extra bytes, in frames of at most 16 KiB. It
// returns the first write error: a server may close the connection before
// the whole call is written.
func (c *h2conn) call(t *testing.T, extra int) error {
	t.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range []hpack.HeaderField{
		{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/tlsgate.v1.ControlService/ListSessions"}, {Name: ":authority", Value: "tlsgate"},
		{Name: "content-type", Value: "application/grpc"}, {Name: "te", Value: "trailers"},
		{Name: "x-flood", Value: strings.Repeat("a", extra)},
	} {
		if err := enc.WriteField(f); err != nil {
			t.Fatal(err)
		}
	}
	const chunk = 16 << 10
	b := block.Bytes()
	first := b[:min(chunk, len(b))]
	b = b[len(first):]
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(b) == 0}); err != nil {
		return err
	}
	for len(b) > 0 {
		n := min(chunk, len(b))
		if err := c.fr.WriteContinuation(1, n == len(b), b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	// The call's (empty) request message, so that a server that took the
	// headers answers it.
	return c.fr.WriteData(1, true, []byte{0, 0, 0, 0, 0})
}

// answer reads frames until the server answers stream 1 and returns how:
// "headers" (a response, the status in its trailers), "reset" (RST_STREAM),
// "goaway", or "closed" (the connection ended).
func (c *h2conn) answer(t *testing.T) string {
	t.Helper()
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("no answer from the server: %v", err)
			}
			return "closed"
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() && c.fr.WriteSettingsAck() != nil {
				return "closed"
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 {
				return "headers"
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == 1 {
				return "reset"
			}
		case *http2.GoAwayFrame:
			return "goaway"
		}
	}
}

// TestHeaderFloodIsBoundedBeforeAuth: a call whose headers are over
// --control-max-header-bytes is refused at the HTTP/2 layer (its stream
// reset, or the connection closed), before the token check or anything
// else sees them; the same call with small headers gets a gRPC answer
// (UNAUTHENTICATED, here).
func TestHeaderFloodIsBoundedBeforeAuth(t *testing.T) {
	e := start(t, setup{token: "0123456789abcdef-token"})
	small := dialH2(t, e.ctlAddr)
	if err := small.call(t, 100); err != nil {
		t.Fatal(err)
	}
	if got := small.answer(t); got != "headers" {
		t.Fatalf("a call with small headers: %s, want a response", got)
	}
	flood := dialH2(t, e.ctlAddr)
	_ = flood.call(t, 1<<20) // 64 times the default limit; the server may hang up mid-way
	if got := flood.answer(t); got == "headers" {
		t.Fatal("a call with 1 MiB of headers got a gRPC response: the server decoded them")
	}
}

// TestPingFloodGetsGoaway: a client that pings more often than
// --control-keepalive-min-time is sent GOAWAY.
func TestPingFloodGetsGoaway(t *testing.T) {
	e := start(t, setup{})
	c := dialH2(t, e.ctlAddr)
	for i := range 10 {
		if err := c.fr.WritePing(false, [8]byte{byte(i)}); err != nil {
			break // the server may close once it has sent GOAWAY
		}
	}
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY before the connection ended: %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			if g.ErrCode != http2.ErrCodeEnhanceYourCalm || string(g.DebugData()) != "too_many_pings" {
				t.Fatalf("GOAWAY %v %q, want ENHANCE_YOUR_CALM too_many_pings", g.ErrCode, g.DebugData())
			}
			return
		}
	}
}

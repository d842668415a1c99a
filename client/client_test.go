package client_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// dial connects a client to p, pinned by fingerprint, and returns the
// peer's side of the connection too. Cleanup force-closes the client.
func dial(t *testing.T, p *peer, opts ...client.Option) (*client.Conn, ed25519.PrivateKey, *peerConn) {
	t.Helper()
	key := newKey(t)
	c, err := client.Dial(testCtx(t), p.ln.Addr().String(), key, append([]client.Option{client.WithFingerprint(p.fp)}, opts...)...)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = c.Close(ctx)
	})
	select {
	case pc := <-p.conns:
		return c, key, pc
	case <-time.After(waitFor):
		t.Fatal("peer: no connection")
	}
	return nil, nil, nil
}

func recv(t *testing.T, c *client.Conn) client.Packet {
	t.Helper()
	p, err := c.Recv(testCtx(t))
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return p
}

func recvData(t *testing.T, c *client.Conn, want string) {
	t.Helper()
	if p := recv(t, c); p.Type != wire.TypeData || string(p.Payload) != want {
		t.Fatalf("Recv: got %s %q, want data %q", p.Type, p.Payload, want)
	}
}

func waitDone(t *testing.T, c *client.Conn) *client.CloseError {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(waitFor):
		t.Fatal("connection did not end")
	}
	var ce *client.CloseError
	if !errors.As(c.Err(), &ce) {
		t.Fatalf("Err: got %v, want a *CloseError", c.Err())
	}
	return ce
}

func decodeFlush(t *testing.T, f wire.Frame) uint64 {
	t.Helper()
	fp, err := wire.DecodeFlush(f.Encoding, f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return fp.Seq
}

func decodePing(t *testing.T, f wire.Frame) uint64 {
	t.Helper()
	pp, err := wire.DecodePing(f.Encoding, f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return pp.Nonce
}

func decodeGoodbye(t *testing.T, f wire.Frame) wire.GoodbyePayload {
	t.Helper()
	gb, err := wire.DecodeGoodbye(f.Encoding, f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return gb
}

func TestHandshake(t *testing.T) {
	p := newPeer(t)
	c, key, pc := dial(t, p)
	want := wire.SessionID(key.Public().(ed25519.PublicKey))
	if c.ID() != want || pc.id != want {
		t.Fatalf("ID: client %d, peer %d, want %d", c.ID(), pc.id, want)
	}
	if c.ServerFingerprint() != p.fp || client.Fingerprint(p.cert.Raw) != p.fp {
		t.Fatalf("ServerFingerprint %s, Fingerprint %s, want %s", c.ServerFingerprint(), client.Fingerprint(p.cert.Raw), p.fp)
	}
	if c.Err() != nil {
		t.Fatalf("Err before Done: %v", c.Err())
	}
}

func TestFingerprintFormats(t *testing.T) {
	p := newPeer(t)
	var colons []string
	for i := 0; i < len(p.fp); i += 2 {
		colons = append(colons, strings.ToUpper(p.fp[i:i+2]))
	}
	c, _, _ := dial(t, p, client.WithFingerprint(strings.Join(colons, ":")))
	if c.ServerFingerprint() != p.fp {
		t.Fatalf("ServerFingerprint %s, want %s", c.ServerFingerprint(), p.fp)
	}

	// Without a pin, the chain is verified against the given roots.
	roots := x509.NewCertPool()
	roots.AddCert(p.cert)
	c2, err := client.Dial(testCtx(t), p.ln.Addr().String(), newKey(t), client.WithTLSConfig(&tls.Config{RootCAs: roots}), client.WithLingerTimeout(10*time.Millisecond))
	if err != nil {
		t.Fatalf("Dial with roots: %v", err)
	}
	if err := c2.Close(testCtx(t)); err == nil {
		t.Fatal("Close: the peer never answers Goodbye, want an error")
	}
}

func TestFingerprintRefused(t *testing.T) {
	p := newPeer(t)
	addr := p.ln.Addr().String()
	_, err := client.Dial(testCtx(t), addr, newKey(t), client.WithFingerprint(strings.Repeat("00", 32)))
	if !errors.Is(err, client.ErrFingerprintMismatch) {
		t.Fatalf("Dial with a wrong pin: got %v, want ErrFingerprintMismatch", err)
	}
	select {
	case herr := <-p.errs:
		if herr == nil {
			t.Fatal("peer: want a handshake failure")
		}
	case <-time.After(waitFor):
		t.Fatal("peer: the refused connection was not seen")
	}
	var uae x509.UnknownAuthorityError
	if _, err := client.Dial(testCtx(t), addr, newKey(t)); !errors.As(err, &uae) {
		t.Fatalf("Dial without pin or roots: got %v, want an unknown authority error", err)
	}
	if _, err := client.Dial(testCtx(t), addr, newKey(t), client.WithFingerprint("zz")); err == nil {
		t.Fatal("Dial with a malformed pin: want an error")
	}
	select {
	case pc := <-p.conns:
		t.Fatalf("peer: a refused client completed the handshake (session %d)", pc.id)
	default:
	}
}

func TestSendOrder(t *testing.T) {
	p := newPeer(t)
	c, _, pc := dial(t, p)
	ctx := testCtx(t)
	const n = 1000
	var async []<-chan error
	for i := range n {
		pkt := client.Data([]byte(strconv.Itoa(i)))
		if i%3 == 0 {
			pkt.Encoding = wire.MsgPack
		}
		if i%10 == 0 {
			if err := c.Send(ctx, pkt); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
			continue
		}
		async = append(async, c.SendAsync(pkt))
	}
	for i := range n {
		f := pc.nextOf(wire.TypeData)
		wantEnc := wire.JSON
		if i%3 == 0 {
			wantEnc = wire.MsgPack
		}
		if string(f.Payload) != strconv.Itoa(i) || f.Encoding != wantEnc {
			t.Fatalf("peer: packet %d is %q in %s, want %q in %s", i, f.Payload, f.Encoding, strconv.Itoa(i), wantEnc)
		}
	}
	for i, ch := range async {
		select {
		case err := <-ch:
			if err != nil {
				t.Fatalf("SendAsync %d: %v", i, err)
			}
		case <-time.After(waitFor):
			t.Fatalf("SendAsync %d never completed", i)
		}
	}
}

func TestSendRefusesBadPackets(t *testing.T) {
	p := newPeer(t)
	c, _, pc := dial(t, p)
	ctx := testCtx(t)
	bad := []client.Packet{
		{Type: wire.TypeFlush, Encoding: wire.JSON},
		{Type: wire.TypeData, Encoding: 2},
		client.Data(make([]byte, wire.MaxPayload+1)),
	}
	for _, pkt := range bad {
		if err := c.Send(ctx, pkt); !errors.Is(err, client.ErrInvalidPacket) {
			t.Fatalf("Send(%s, %s, %d bytes): got %v, want ErrInvalidPacket", pkt.Type, pkt.Encoding, len(pkt.Payload), err)
		}
	}
	good := []client.Packet{client.Data(nil), client.Data(make([]byte, wire.MaxPayload)), {Type: wire.TypeError, Payload: []byte("opaque")}}
	for _, pkt := range good {
		if err := c.Send(ctx, pkt); err != nil {
			t.Fatalf("Send(%s, %d bytes): %v", pkt.Type, len(pkt.Payload), err)
		}
		if f := pc.next(); f.Type != pkt.Type || !bytes.Equal(f.Payload, pkt.Payload) {
			t.Fatalf("peer: got %s of %d bytes, want %s of %d", f.Type, len(f.Payload), pkt.Type, len(pkt.Payload))
		}
	}
}

func TestFlushRoundTrip(t *testing.T) {
	p := newPeer(t)
	c, _, pc := dial(t, p, client.WithEncoding(wire.MsgPack))
	for i := range 10 {
		c.SendAsync(client.Data([]byte{byte(i)}))
	}
	flushed := make(chan error, 1)
	go func() { flushed <- c.Flush(testCtx(t)) }()
	for i := range 10 {
		if f := pc.nextOf(wire.TypeData); f.Payload[0] != byte(i) {
			t.Fatalf("peer: packet %d before the flush is %v", i, f.Payload)
		}
	}
	f := pc.nextOf(wire.TypeFlush)
	if f.Encoding != wire.MsgPack {
		t.Fatalf("Flush in %s, want msgpack (WithEncoding)", f.Encoding)
	}
	seq := decodeFlush(t, f)
	select {
	case err := <-flushed:
		t.Fatalf("Flush returned (%v) before the FlushAck", err)
	default:
	}
	pc.send(wire.TypeFlushAck, f.Encoding, wire.FlushPayload{Seq: seq})
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatalf("Flush: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Flush did not return after the FlushAck")
	}
}

func TestPingPong(t *testing.T) {
	p := newPeer(t)
	_, _, pc := dial(t, p)
	for _, enc := range []wire.Encoding{wire.JSON, wire.MsgPack} {
		pc.send(wire.TypePing, enc, wire.PingPayload{Nonce: 42 + uint64(enc)})
		f := pc.nextOf(wire.TypePong)
		if f.Encoding != enc || decodePing(t, f) != 42+uint64(enc) {
			t.Fatalf("Pong %q in %s, want nonce %d in %s", f.Payload, f.Encoding, 42+uint64(enc), enc)
		}
	}
	pc.send(wire.TypePing, wire.JSON, []byte{})
	ep, err := wire.DecodeError(wire.JSON, pc.nextOf(wire.TypeError).Payload)
	if err != nil || ep.Code != wire.CodeBadPayload || ep.PktType != int(wire.TypePing) || ep.Error == "" {
		t.Fatalf("answer to an empty Ping: %+v, %v; want bad_payload for pkt_type 5", ep, err)
	}
}

// TestServerFlushWaitsForRecv checks that the FlushAck is sent only once
// Recv has handed over every earlier packet. Each Ping is a barrier: the
// client queues replies in order, so a FlushAck sent too early would
// arrive before the Pong.
func TestServerFlushWaitsForRecv(t *testing.T) {
	p := newPeer(t)
	c, _, pc := dial(t, p)
	pc.send(wire.TypeData, wire.JSON, []byte("a"))
	pc.send(wire.TypeData, wire.JSON, []byte("b"))
	pc.send(wire.TypeFlush, wire.MsgPack, wire.FlushPayload{Seq: 7})
	pc.send(wire.TypePing, wire.JSON, wire.PingPayload{Nonce: 1})
	if n := decodePing(t, pc.nextOf(wire.TypePong)); n != 1 {
		t.Fatalf("Pong %d, want 1", n)
	}
	recvData(t, c, "a")
	pc.send(wire.TypePing, wire.JSON, wire.PingPayload{Nonce: 2})
	if n := decodePing(t, pc.nextOf(wire.TypePong)); n != 2 {
		t.Fatalf("Pong %d, want 2", n)
	}
	recvData(t, c, "b")
	f := pc.nextOf(wire.TypeFlushAck)
	if f.Encoding != wire.MsgPack || decodeFlush(t, f) != 7 {
		t.Fatalf("FlushAck %q in %s, want seq 7 in msgpack", f.Payload, f.Encoding)
	}
	// Everything is consumed: the next Flush is acknowledged at once.
	pc.send(wire.TypeFlush, wire.JSON, wire.FlushPayload{Seq: 8})
	if seq := decodeFlush(t, pc.nextOf(wire.TypeFlushAck)); seq != 8 {
		t.Fatalf("FlushAck seq %d, want 8", seq)
	}
}

func TestHandlerFlush(t *testing.T) {
	p := newPeer(t)
	got := make(chan string, 10)
	c, _, pc := dial(t, p, client.WithHandler(func(pkt client.Packet) { got <- string(pkt.Payload) }))
	if _, err := c.Recv(testCtx(t)); !errors.Is(err, client.ErrHandlerSet) {
		t.Fatalf("Recv with a handler: got %v, want ErrHandlerSet", err)
	}
	pc.send(wire.TypeData, wire.JSON, []byte("a"))
	pc.send(wire.TypeError, wire.JSON, []byte("b"))
	pc.send(wire.TypeFlush, wire.JSON, wire.FlushPayload{Seq: 3})
	if seq := decodeFlush(t, pc.nextOf(wire.TypeFlushAck)); seq != 3 {
		t.Fatalf("FlushAck seq %d, want 3", seq)
	}
	if len(got) != 2 || <-got != "a" || <-got != "b" {
		t.Fatal("FlushAck sent before the handler got every earlier packet")
	}
}

func TestCloseHappyPath(t *testing.T) {
	p := newPeer(t)
	c, _, pc := dial(t, p)
	one, two := c.SendAsync(client.Data([]byte("ONE"))), c.SendAsync(client.Data([]byte("TWO")))
	closed := make(chan error, 1)
	go func() { closed <- c.Close(testCtx(t)) }()
	for _, want := range []string{"ONE", "TWO"} {
		if f := pc.nextOf(wire.TypeData); string(f.Payload) != want {
			t.Fatalf("peer: got %q, want %q", f.Payload, want)
		}
	}
	if gb := decodeGoodbye(t, pc.nextOf(wire.TypeGoodbye)); gb.Code != wire.GoodbyeNormal {
		t.Fatalf("client Goodbye code %q, want normal", gb.Code)
	}
	if err := c.Send(testCtx(t), client.Data([]byte("after"))); !errors.Is(err, client.ErrClosing) {
		t.Fatalf("Send while closing: got %v, want ErrClosing", err)
	}
	pc.send(wire.TypeData, wire.JSON, []byte("late"))
	pc.send(wire.TypeGoodbye, wire.JSON, wire.GoodbyePayload{Code: wire.GoodbyeNormal})
	if err := pc.end(); !errors.Is(err, io.EOF) {
		t.Fatalf("peer: client stream ended with %v, want EOF (close_notify)", err)
	}
	_ = pc.tc.Close()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Close did not return")
	}
	for _, ch := range []<-chan error{one, two} {
		if err := <-ch; err != nil {
			t.Fatalf("SendAsync: %v", err)
		}
	}
	recvData(t, c, "late")
	if _, err := c.Recv(testCtx(t)); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("Recv after the end: got %v, want ErrClosed", err)
	}
	ce := waitDone(t, c)
	if ce.Outcome != client.OutcomeClean || ce.Initiator != client.InitiatorLocal || ce.Code != wire.GoodbyeNormal || errors.Is(ce, client.ErrConnectionLost) {
		t.Fatalf("Err: %v; want clean, local, normal", ce)
	}
	if err := c.Close(testCtx(t)); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestServerGoodbye(t *testing.T) {
	p := newPeer(t)
	c, _, pc := dial(t, p)
	flushed := make(chan error, 1)
	go func() { flushed <- c.Flush(testCtx(t)) }()
	pc.nextOf(wire.TypeFlush)
	pc.send(wire.TypeData, wire.JSON, []byte("x"))
	pc.send(wire.TypeError, wire.JSON, wire.ErrorPayload{Error: wire.TakeoverMessage, Code: wire.CodeSessionTakenOver})
	pc.send(wire.TypeGoodbye, wire.MsgPack, wire.GoodbyePayload{Code: wire.GoodbyeSessionTakenOver, Reason: "elsewhere"})
	f := pc.nextOf(wire.TypeGoodbye)
	if gb := decodeGoodbye(t, f); gb.Code != wire.GoodbyeNormal || f.Encoding != wire.MsgPack {
		t.Fatalf("client Goodbye %q in %s, want normal in msgpack", gb.Code, f.Encoding)
	}
	select {
	case err := <-flushed:
		if !errors.Is(err, client.ErrGoodbyeReceived) {
			t.Fatalf("pending Flush: got %v, want ErrGoodbyeReceived", err)
		}
	case <-time.After(waitFor):
		t.Fatal("pending Flush did not fail on Goodbye")
	}
	if err := c.Send(testCtx(t), client.Data(nil)); !errors.Is(err, client.ErrClosing) {
		t.Fatalf("Send after the server's Goodbye: got %v, want ErrClosing", err)
	}
	if err := c.Flush(testCtx(t)); !errors.Is(err, client.ErrGoodbyeReceived) {
		t.Fatalf("Flush after the server's Goodbye: got %v, want ErrGoodbyeReceived", err)
	}
	if err := pc.end(); !errors.Is(err, io.EOF) {
		t.Fatalf("peer: client stream ended with %v, want EOF", err)
	}
	_ = pc.tc.Close()

	recvData(t, c, "x")
	ep, err := recv(t, c).ErrorPayload()
	if err != nil || ep.Code != wire.CodeSessionTakenOver || ep.Error != wire.TakeoverMessage {
		t.Fatalf("takeover Error: %+v, %v", ep, err)
	}
	_, err = c.Recv(testCtx(t))
	var ce *client.CloseError
	if !errors.Is(err, client.ErrClosed) || !errors.As(err, &ce) {
		t.Fatalf("Recv after the end: got %v, want ErrClosed and a *CloseError", err)
	}
	ce = waitDone(t, c)
	if ce.Code != wire.GoodbyeSessionTakenOver || ce.Reason != "elsewhere" || ce.Reconnect || ce.Initiator != client.InitiatorRemote || ce.Outcome != client.OutcomeClean {
		t.Fatalf("Err: %+v", ce)
	}
	if err := c.Close(testCtx(t)); err != nil {
		t.Fatalf("Close after a clean exchange: %v", err)
	}
}

func TestPeerClosedWithoutGoodbye(t *testing.T) {
	p := newPeer(t)
	c, _, pc := dial(t, p)
	pc.send(wire.TypeData, wire.JSON, []byte("x"))
	_ = pc.tc.Close()
	ce := waitDone(t, c)
	if !errors.Is(ce, client.ErrConnectionLost) || ce.Outcome != client.OutcomePeerClosed || ce.Initiator != client.InitiatorRemote || ce.Code != "" {
		t.Fatalf("Err: %v; want peer_closed, ErrConnectionLost", ce)
	}
	recvData(t, c, "x")
	if _, err := c.Recv(testCtx(t)); !errors.Is(err, client.ErrClosed) || !errors.Is(err, client.ErrConnectionLost) {
		t.Fatalf("Recv: got %v, want ErrClosed and ErrConnectionLost", err)
	}
	if err := <-c.SendAsync(client.Data(nil)); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("SendAsync after the end: got %v, want ErrClosed", err)
	}
	if err := c.Close(testCtx(t)); !errors.Is(err, client.ErrConnectionLost) {
		t.Fatalf("Close: got %v, want ErrConnectionLost", err)
	}
}

func TestCloseHonoursContext(t *testing.T) {
	p := newPeer(t)
	c, _, pc := dial(t, p, client.WithLingerTimeout(time.Hour))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- c.Close(ctx) }()
	pc.nextOf(wire.TypeGoodbye) // and never answer
	var err error
	select {
	case err = <-closed:
	case <-time.After(waitFor):
		t.Fatal("Close ignored its context")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: got %v, want DeadlineExceeded", err)
	}
	if ce := waitDone(t, c); ce.Outcome != client.OutcomeForced || ce.Initiator != client.InitiatorLocal {
		t.Fatalf("Err: %v; want forced, local", ce)
	}
	if err2 := c.Close(testCtx(t)); !errors.Is(err2, err) {
		t.Fatalf("second Close: %v, want %v", err2, err)
	}
	if err := pc.end(); err == nil {
		t.Fatal("peer: the stream did not end")
	}
}

func TestCloseLingerTimeout(t *testing.T) {
	p := newPeer(t)
	c, _, pc := dial(t, p, client.WithLingerTimeout(50*time.Millisecond))
	closed := make(chan error, 1)
	go func() { closed <- c.Close(testCtx(t)) }()
	pc.nextOf(wire.TypeGoodbye) // and never answer
	var ce *client.CloseError
	select {
	case err := <-closed:
		if !errors.As(err, &ce) || ce.Outcome != client.OutcomeTimeout || errors.Is(err, client.ErrConnectionLost) {
			t.Fatalf("Close: got %v, want a timeout *CloseError", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Close did not time out")
	}
	if got := fmt.Sprint(c.Err()); got != ce.Error() {
		t.Fatalf("Err %q, Close %q: want the same", got, ce.Error())
	}
}

// Package wiretest is a raw protocol v1 client for tests that need to
// misbehave on the wire: a naive third-party client with no Goodbye unless
// the test sends one, a handshake stopped half way, bad signatures, bytes
// dribbled one at a time, truncated or malformed frames.
//
// It is deliberately low level. Dial stops after TLS; ReadHello,
// WriteAuth and ReadSessionID are the handshake's three steps, each usable
// alone; Handshake (and Connect, which dials too) runs all three. After the
// handshake, WriteFrame, WriteControl and WriteRaw write what the test
// says, exactly, and Read, ReadFrame and ExpectEOF read what the server
// sends. It never answers anything by itself: no Pong, no FlushAck, no
// Goodbye. Well-behaved clients are the business of package client.
//
// Every wait is bounded by DefaultWait, or the Wait option: the bound
// fails a test whose event does not come, it is never a pause. Helpers that
// take a testing.TB fail the test on error; WriteFrame, WriteControl and
// WriteRaw use Errorf, so they may run on any goroutine. DialTLS and
// Handshake return errors instead, for goroutines of their own.
package wiretest

import (
	"bufio"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// DefaultWait bounds each wait unless Wait says otherwise: the dial, the
// handshake, and each Read and ExpectEOF.
const DefaultWait = 10 * time.Second

// An Option tunes a dial. Without options, any server certificate is
// accepted, the dial is from any local address, and every wait is bounded
// by DefaultWait.
type Option func(*options)

type options struct {
	pin   *[sha256.Size]byte
	local net.Addr
	wait  time.Duration
	alpn  []string
}

// Pin makes the TLS handshake fail unless the server's leaf certificate
// (DER) hashes to certHash (SHA-256). Without it any certificate is
// accepted; the client auth signs over the one presented either way.
func Pin(certHash [sha256.Size]byte) Option {
	return func(o *options) { o.pin = &certHash }
}

// From dials from the local address local (e.g. 127.0.0.2, port 0).
func From(local net.Addr) Option {
	return func(o *options) { o.local = local }
}

// ALPN offers the TLS application protocols protos, such as
// wire.ALPNResume; NegotiatedProtocol on TLS().ConnectionState() says what
// the server chose. Without it no ALPN is offered, as by a v1 client.
func ALPN(protos ...string) Option {
	return func(o *options) { o.alpn = protos }
}

// Wait bounds the dial, the handshake, and each Read and ExpectEOF by d
// instead of DefaultWait.
func Wait(d time.Duration) Option {
	return func(o *options) { o.wait = d }
}

// Conn is one raw connection to a gateway.
type Conn struct {
	tc   *tls.Conn
	br   *bufio.Reader
	fr   *wire.Reader
	wait time.Duration
	wmu  sync.Mutex // one write at a time, from any goroutine

	id  uint64
	pub ed25519.PublicKey
}

// DialTLS dials addr and completes the TLS handshake, nothing more. It
// needs no test, so it may run on any goroutine; the caller closes the
// Conn.
func DialTLS(addr string, opts ...Option) (*Conn, error) {
	o := options{wait: DefaultWait}
	for _, opt := range opts {
		opt(&o)
	}
	// Tests: the certificate is pinned by its hash (Pin), or not verified.
	cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: o.alpn}
	if o.pin != nil {
		pin := *o.pin
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || sha256.Sum256(cs.PeerCertificates[0].Raw) != pin {
				return errors.New("wiretest: the server certificate does not match the pinned hash")
			}
			return nil
		}
	}
	d := &net.Dialer{LocalAddr: o.local, Timeout: o.wait}
	tc, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(tc, 64<<10)
	return &Conn{tc: tc, br: br, fr: wire.NewReader(br, wire.MaxPayload), wait: o.wait}, nil
}

// Dial is DialTLS for a test: it fails the test on error and closes the
// connection at the test's end.
func Dial(t testing.TB, addr string, opts ...Option) *Conn {
	t.Helper()
	c, err := DialTLS(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.tc.Close() })
	return c
}

// Connect dials addr and completes the protocol handshake with key, signing
// over the certificate the server presented. When it returns, the server
// has registered the session. It fails the test on error and closes the
// connection at the test's end.
func Connect(t testing.TB, addr string, key ed25519.PrivateKey, opts ...Option) *Conn {
	t.Helper()
	c := Dial(t, addr, opts...)
	if err := c.Handshake(key); err != nil {
		t.Fatal(err)
	}
	return c
}

// Handshake runs the three steps of the protocol handshake, within the
// wait: it reads the server hello, writes key's signature over the nonce
// and the server's certificate in one write, and reads the session ID. It
// returns the first error, for callers without a test.
func (c *Conn) Handshake(key ed25519.PrivateKey) error {
	_ = c.tc.SetDeadline(time.Now().Add(c.wait))
	hello, err := wire.ReadServerHello(c.tc)
	if err != nil {
		return err
	}
	auth := wire.SignAuth(key, hello.Nonce, c.CertHash())
	if err := c.writeAll(auth.Append(nil)); err != nil {
		return fmt.Errorf("wiretest: writing client auth: %w", err)
	}
	if _, err := c.readSessionID(); err != nil {
		return err
	}
	c.pub = auth.PublicKey
	_ = c.tc.SetDeadline(time.Time{})
	return nil
}

// ReadHello is the handshake's first step: it reads the server hello,
// within the wait.
func (c *Conn) ReadHello(t testing.TB) wire.ServerHello {
	t.Helper()
	_ = c.tc.SetReadDeadline(time.Now().Add(c.wait))
	hello, err := wire.ReadServerHello(c.tc)
	if err != nil {
		t.Fatal(err)
	}
	return hello
}

// WriteAuth is the handshake's second step: it writes the client's
// identity proof in one write. Build it with wire.SignAuth (over
// c.CertHash() for a valid one); to write anything else, bytes cut short
// or altered, use WriteRaw or Dribble.
func (c *Conn) WriteAuth(t testing.TB, auth wire.ClientAuth) {
	t.Helper()
	if err := c.writeAll(auth.Append(nil)); err != nil {
		t.Fatalf("writing client auth: %v", err)
	}
	c.pub = auth.PublicKey
}

// ReadSessionID is the handshake's last step: it reads the session ID the
// server sends once it accepted the client auth, within the wait.
func (c *Conn) ReadSessionID(t testing.TB) uint64 {
	t.Helper()
	_ = c.tc.SetReadDeadline(time.Now().Add(c.wait))
	id, err := c.readSessionID()
	if err != nil {
		t.Fatal(err)
	}
	_ = c.tc.SetReadDeadline(time.Time{})
	return id
}

// readSessionID reads the session ID straight from the TLS connection (no
// frame has been read yet, so nothing is buffered), and records it.
func (c *Conn) readSessionID() (uint64, error) {
	id, err := wire.ReadSessionID(c.tc)
	if err != nil {
		return 0, err
	}
	c.id = id
	return id, nil
}

// CertHash is the SHA-256 of the server's leaf certificate (DER), what a
// client auth signs over.
func (c *Conn) CertHash() [sha256.Size]byte {
	return sha256.Sum256(c.tc.ConnectionState().PeerCertificates[0].Raw)
}

// ID is the session ID the server sent (0 before the handshake's last step).
func (c *Conn) ID() uint64 { return c.id }

// PublicKey is the identity the Conn proved (nil before WriteAuth or
// Handshake).
func (c *Conn) PublicKey() ed25519.PublicKey { return c.pub }

// TLS is the underlying connection, for deadlines, addresses and the
// connection state. Read through Stream, not through it, once frames have
// been read: the Conn buffers what it reads.
func (c *Conn) TLS() *tls.Conn { return c.tc }

// Stream is what the server sends from here on, with nothing the Conn has
// buffered skipped, for reading to the end (io.ReadAll, io.Copy). It sets
// no deadline.
func (c *Conn) Stream() io.Reader { return c.br }

func (c *Conn) writeAll(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.tc.Write(b)
	return err
}

// WriteFrame writes one frame in one write. It is safe from several
// goroutines; an error fails the test with Errorf.
func (c *Conn) WriteFrame(t testing.TB, typ wire.Type, enc wire.Encoding, payload []byte) {
	t.Helper()
	if err := c.writeAll(wire.AppendFrame(nil, typ, enc, payload)); err != nil {
		t.Errorf("writing a %s frame: %v", typ, err)
	}
}

// WriteControl writes a control packet: v marshaled in enc (wire.Marshal).
func (c *Conn) WriteControl(t testing.TB, typ wire.Type, enc wire.Encoding, v any) {
	t.Helper()
	b, err := wire.Marshal(enc, v)
	if err != nil {
		t.Errorf("marshaling a %s payload: %v", typ, err)
		return
	}
	c.WriteFrame(t, typ, enc, b)
}

// WriteRaw writes b as it is, in one write: a bad header, a truncated
// frame, several frames at once. An error fails the test with Errorf.
func (c *Conn) WriteRaw(t testing.TB, b []byte) {
	t.Helper()
	if err := c.writeAll(b); err != nil {
		t.Errorf("writing %d raw bytes: %v", len(b), err)
	}
}

// Dribble writes b one byte per receive from tick, each byte in a write
// (a TLS record) of its own. It stops before the next byte once stop is
// ready (closed), or at the first write error. It returns how many bytes
// were written and the write error, if any.
func (c *Conn) Dribble(b []byte, tick <-chan time.Time, stop <-chan struct{}) (int, error) {
	for i := range b {
		select {
		case <-stop:
			return i, nil
		case <-tick:
		}
		if err := c.writeAll(b[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(b), nil
}

// Read returns the next frame, failing the test unless it arrives within
// the wait.
func (c *Conn) Read(t testing.TB) wire.Frame {
	t.Helper()
	_ = c.tc.SetReadDeadline(time.Now().Add(c.wait))
	f, err := c.fr.ReadFrame()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return f
}

// ReadFrame returns the next frame or the error, with whatever read
// deadline the caller set on TLS(): for loops that read until an error,
// and for goroutines without a test.
func (c *Conn) ReadFrame() (wire.Frame, error) { return c.fr.ReadFrame() }

// ExpectEOF fails the test unless the stream ends cleanly at a frame
// boundary (the server's close_notify) within the wait.
func (c *Conn) ExpectEOF(t testing.TB) {
	t.Helper()
	_ = c.tc.SetReadDeadline(time.Now().Add(c.wait))
	if f, err := c.fr.ReadFrame(); !errors.Is(err, io.EOF) {
		t.Fatalf("got %s frame %q, error %v; want EOF", f.Type, f.Payload, err)
	}
}

// CloseWrite sends close_notify: the end of the client's stream, the
// connection still open for reading.
func (c *Conn) CloseWrite() error { return c.tc.CloseWrite() }

// Close sends close_notify and closes the connection, as a naive client's
// tls.Conn.Close does.
func (c *Conn) Close() error { return c.tc.Close() }

// Abort closes the TCP connection without close_notify.
func (c *Conn) Abort() error { return c.tc.NetConn().Close() }

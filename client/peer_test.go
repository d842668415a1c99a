package client_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// waitFor bounds every wait in the tests.
const waitFor = 10 * time.Second

// peer is a minimal test server: the server side of the handshake and the
// framing over real TLS on loopback. Tests drive each connection by hand.
type peer struct {
	ln    net.Listener
	cert  *x509.Certificate
	fp    string
	conns chan *peerConn
	errs  chan error // handshake failures
	quit  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	all   []*peerConn
}

type peerConn struct {
	t      *testing.T
	tc     *tls.Conn
	id     uint64
	frames chan frameResult
}

type frameResult struct {
	f   wire.Frame
	err error
}

func newPeer(t *testing.T) *peer {
	t.Helper()
	return newPeerALPN(t)
}

// newPeerALPN is newPeer with the TLS application protocols it selects
// from, by its own order of preference (for the resume extension).
func newPeerALPN(t *testing.T, protos ...string) *peer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(der)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates:           []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: true,
		NextProtos:             protos,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{ln: ln, cert: cert, fp: hex.EncodeToString(sum[:]),
		conns: make(chan *peerConn, 4), errs: make(chan error, 4), quit: make(chan struct{})}
	p.wg.Add(1)
	go p.accept(t, sum)
	t.Cleanup(func() {
		close(p.quit)
		_ = ln.Close()
		p.mu.Lock()
		for _, pc := range p.all {
			_ = pc.tc.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *peer) accept(t *testing.T, certHash [sha256.Size]byte) {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			return
		}
		tc := nc.(*tls.Conn)
		pc, br, err := handshake(tc, certHash)
		if err != nil {
			_ = tc.Close()
			select {
			case p.errs <- err:
			case <-p.quit:
				return
			}
			continue
		}
		pc.t, pc.frames = t, make(chan frameResult, 2048)
		p.mu.Lock()
		select {
		case <-p.quit:
			p.mu.Unlock()
			_ = tc.Close()
			return
		default:
		}
		p.all = append(p.all, pc)
		p.wg.Add(1)
		p.mu.Unlock()
		go pc.readLoop(wire.NewReader(br, 0), p.quit, &p.wg)
		select {
		case p.conns <- pc:
		case <-p.quit:
			return
		}
	}
}

// handshake is the server side of the protocol v1 handshake.
func handshake(tc *tls.Conn, certHash [sha256.Size]byte) (*peerConn, *bufio.Reader, error) {
	_ = tc.SetDeadline(time.Now().Add(waitFor))
	if err := tc.Handshake(); err != nil {
		return nil, nil, err
	}
	var hello wire.ServerHello
	_, _ = rand.Read(hello.Nonce[:])
	if _, err := tc.Write(hello.Append(nil)); err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(tc)
	auth, err := wire.ReadClientAuth(br)
	if err != nil {
		return nil, nil, err
	}
	if err := auth.Verify(hello.Nonce, certHash); err != nil {
		return nil, nil, err
	}
	id := wire.SessionID(auth.PublicKey)
	if _, err := tc.Write(wire.AppendSessionID(nil, id)); err != nil {
		return nil, nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	return &peerConn{tc: tc, id: id}, br, nil
}

func (pc *peerConn) readLoop(fr *wire.Reader, quit <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	for {
		f, err := fr.ReadFrame()
		select {
		case pc.frames <- frameResult{f, err}:
		case <-quit:
			return
		}
		if err != nil {
			return
		}
	}
}

// next returns the next frame the client sent.
func (pc *peerConn) next() wire.Frame {
	pc.t.Helper()
	select {
	case r := <-pc.frames:
		if r.err != nil {
			pc.t.Fatalf("peer: reading frame: %v", r.err)
		}
		return r.f
	case <-time.After(waitFor):
		pc.t.Fatal("peer: no frame from the client")
	}
	return wire.Frame{}
}

// nextOf returns the next frame and checks its type.
func (pc *peerConn) nextOf(typ wire.Type) wire.Frame {
	pc.t.Helper()
	f := pc.next()
	if f.Type != typ {
		pc.t.Fatalf("peer: got %s frame %q, want %s", f.Type, f.Payload, typ)
	}
	return f
}

// end waits for the end of the client's stream and returns its error.
func (pc *peerConn) end() error {
	pc.t.Helper()
	select {
	case r := <-pc.frames:
		if r.err == nil {
			pc.t.Fatalf("peer: got %s frame %q, want the end of the stream", r.f.Type, r.f.Payload)
		}
		return r.err
	case <-time.After(waitFor):
		pc.t.Fatal("peer: the client's stream did not end")
	}
	return nil
}

// send writes one frame; v is a []byte payload or a control payload.
func (pc *peerConn) send(typ wire.Type, enc wire.Encoding, v any) {
	pc.t.Helper()
	payload, ok := v.([]byte)
	if !ok {
		var err error
		if payload, err = wire.Marshal(enc, v); err != nil {
			pc.t.Fatal(err)
		}
	}
	if _, err := pc.tc.Write(wire.AppendFrame(nil, typ, enc, payload)); err != nil && !errors.Is(err, net.ErrClosed) {
		pc.t.Fatalf("peer: write: %v", err)
	}
}

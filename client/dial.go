package client

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// Dial connects to the gateway at addr over TLS and authenticates with key.
// ctx bounds the TCP dial, the TLS handshake and the protocol handshake.
func Dial(ctx context.Context, addr string, key ed25519.PrivateKey, opts ...Option) (*Conn, error) {
	cfg, tlsCfg, err := prepareDial(key, opts)
	if err != nil {
		return nil, err
	}
	d := tls.Dialer{Config: tlsCfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", addr, err)
	}
	tc := nc.(*tls.Conn)
	c, err := handshake(ctx, tc, key, cfg)
	if err != nil {
		_ = tc.NetConn().Close()
		return nil, err
	}
	c.log.Debug("connected", "addr", addr, "session", c.id, "server_fingerprint", c.fingerprint)
	go c.readLoop()
	go c.writeLoop()
	return c, nil
}

// handshake runs the protocol v1 handshake on an established TLS conn.
func handshake(ctx context.Context, tc *tls.Conn, key ed25519.PrivateKey, cfg config) (*Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(dl)
	}
	// A deadline in the past unblocks any read or write when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = tc.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*Conn, error) {
		stop()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("client: handshake: %w (%v)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("client: handshake: %w", err)
	}

	id, br, leaf, err := authenticate(tc, key)
	if err != nil {
		return fail(err)
	}
	if !stop() {
		return nil, fmt.Errorf("client: handshake: %w", ctx.Err())
	}
	if err := tc.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("client: handshake: %w", err)
	}
	return newConn(tc, br, id, Fingerprint(leaf), cfg), nil
}

// authenticate runs the raw v1 exchange (ServerHello, ClientAuth,
// SessionID) on an established TLS conn, under whatever deadline the
// caller set. It returns the session ID, the buffered reader frames are
// read from next, and the server's leaf certificate (DER).
func authenticate(tc *tls.Conn, key ed25519.PrivateKey) (uint64, *bufio.Reader, []byte, error) {
	state := tc.ConnectionState()
	if len(state.PeerCertificates) == 0 {
		return 0, nil, nil, errors.New("server sent no certificate")
	}
	leaf := state.PeerCertificates[0].Raw
	br := bufio.NewReaderSize(tc, bufSize)
	hello, err := wire.ReadServerHello(br)
	if err != nil {
		return 0, nil, nil, err
	}
	auth := wire.SignAuth(key, hello.Nonce, sha256.Sum256(leaf))
	if _, err := tc.Write(auth.Append(make([]byte, 0, wire.ClientAuthLen))); err != nil {
		return 0, nil, nil, fmt.Errorf("writing client auth: %w", err)
	}
	id, err := wire.ReadSessionID(br)
	if err != nil {
		return 0, nil, nil, err
	}
	if want := wire.SessionID(auth.PublicKey); id != want {
		return 0, nil, nil, fmt.Errorf("server sent session id %d, want %d", id, want)
	}
	return id, br, leaf, nil
}

// prepareDial applies opts to the defaults and checks them and key: what
// Dial and DialResumable share before their first connection.
func prepareDial(key ed25519.PrivateKey, opts []Option) (config, *tls.Config, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return cfg, nil, err
	}
	if len(key) != ed25519.PrivateKeySize {
		return cfg, nil, fmt.Errorf("client: ed25519 private key has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	tlsCfg, err := cfg.buildTLS()
	return cfg, tlsCfg, err
}

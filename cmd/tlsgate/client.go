package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/internal/keyfile"
	"github.com/tlsgate/tlsgate/wire"
)

const defaultDialAddr = "localhost:7223"

// sendWindow bounds the sends in flight (queued, not yet written).
const sendWindow = 1024

// exitInterrupted is the exit status of a client stopped by a signal.
const exitInterrupted = 130

// clientCmd is `tlsgate client`.
type clientCmd struct {
	Addr         string        `env:"TLSGATE_CLIENT_ADDR" default:"${dialaddr}" placeholder:"HOST:PORT" help:"Gateway to connect to (default: ${default})."`
	Key          string        `env:"TLSGATE_CLIENT_KEY" type:"path" placeholder:"FILE" help:"Ed25519 client key, PEM PKCS#8; created if missing (default: <dev-dir>/client.key)."`
	Fingerprint  string        `env:"TLSGATE_FINGERPRINT" xor:"trust" placeholder:"HEX" help:"Pin the server certificate by its SHA-256 fingerprint, as printed by serve (default: pin the dev certificate in --dev-dir)."`
	CA           string        `name:"ca" env:"TLSGATE_CA" xor:"trust" type:"path" placeholder:"FILE" help:"Verify the server certificate against this CA (PEM) instead of pinning it."`
	Encoding     string        `env:"TLSGATE_CLIENT_ENCODING" enum:"json,msgpack" default:"json" help:"Encoding bits of the Data packets sent: ${enum}; the payload is the line as is (default: ${default})."`
	DialTimeout  time.Duration `env:"TLSGATE_DIAL_TIMEOUT" default:"10s" help:"Bound of the connection and handshake (default: ${default})."`
	CloseTimeout time.Duration `env:"TLSGATE_CLOSE_TIMEOUT" default:"30s" help:"Bound of the graceful close after end of input (default: ${default})."`
	Resume       bool          `env:"TLSGATE_CLIENT_RESUME" help:"Use a resumable session (docs/protocol.md §15): after a lost connection, reconnect and resume it, so that every line and every packet from the server arrives exactly once, in order; each reconnect and each gap is reported on stderr (default: off)."`
}

// Validate checks the values kong cannot, naming the flag at fault.
func (c *clientCmd) Validate() error {
	if c.Fingerprint != "" {
		b, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(c.Fingerprint), ":", ""))
		if err != nil || len(b) != 32 {
			return fmt.Errorf("--fingerprint must be a hex SHA-256 (64 hex digits, colons allowed), got %q", c.Fingerprint)
		}
	}
	if c.DialTimeout <= 0 {
		return fmt.Errorf("--dial-timeout must be positive, got %s", c.DialTimeout)
	}
	if c.CloseTimeout <= 0 {
		return fmt.Errorf("--close-timeout must be positive, got %s", c.CloseTimeout)
	}
	return nil
}

// Run connects, pumps stdin lines out and received payloads to stdout,
// closes gracefully at the end of input and reports how the connection
// ended.
func (c *clientCmd) Run(rt *runtime) error {
	log, err := rt.globals.logger(rt.stderr)
	if err != nil {
		return err
	}
	keyPath, err := clientKeyPath(rt.globals, c.Key)
	if err != nil {
		return err
	}
	key, created, err := keyfile.LoadOrCreate(keyPath)
	if err != nil {
		return fmt.Errorf("--key %s: %w", keyPath, err)
	}
	if created {
		fmt.Fprintf(rt.stderr, "created client key %s\n", keyPath)
	}
	opts, err := c.trust(rt.globals, log)
	if err != nil {
		return err
	}
	libLog := log
	if c.Resume && rt.globals.LogLevel == "info" {
		// The resumable mode logs each loss, reconnect and resume at info:
		// the lines of resumeReporter say the same, once.
		g := *rt.globals
		g.LogLevel = "warn"
		if libLog, err = g.logger(rt.stderr); err != nil {
			return err
		}
	}
	opts = append(opts, client.WithLogger(libLog))

	s := &clientSession{stdout: rt.stdout, stderr: rt.stderr}
	var conn interface {
		clientConn
		ID() uint64
		ServerFingerprint() string
	}
	dctx, cancel := context.WithTimeout(rt.ctx, c.DialTimeout)
	if c.Resume {
		s.events = &resumeReporter{w: rt.stderr}
		var res *client.Resumable
		res, err = client.DialResumable(dctx, c.Addr, key, append(opts, client.WithResumeEvents(s.events.event))...)
		conn, s.res = res, res
	} else {
		conn, err = client.Dial(dctx, c.Addr, key, opts...)
	}
	cancel()
	if err != nil {
		switch {
		case errors.Is(err, client.ErrFingerprintMismatch):
			return fmt.Errorf("%w\n(the server is not the one pinned: check --fingerprint, or that serve and client use the same --dev-dir)", err)
		case errors.Is(err, client.ErrResumeUnsupported):
			return fmt.Errorf("%w\n(the server cannot resume sessions: run without --resume)", err)
		}
		return err
	}
	s.conn = conn
	connected := fmt.Sprintf("connected: session %d server fingerprint %s\n", conn.ID(), conn.ServerFingerprint())
	if s.events != nil {
		s.events.start(connected)
	} else {
		fmt.Fprint(rt.stderr, connected)
	}
	enc := wire.JSON
	if c.Encoding == "msgpack" {
		enc = wire.MsgPack
	}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		s.receive()
	}()
	// The line reader may stay blocked reading stdin after the connection
	// has ended; the process exits without it. The pump, which owns every
	// send, stops when told and counts what it had in flight first.
	stop := make(chan struct{})
	lines, inputErr := readLines(rt.stdin, stop)
	pumped := make(chan error, 1)
	go func() { pumped <- s.pump(lines, inputErr, enc, stop) }()

	var pumpErr error
	pumpDone, interrupted := false, false
	select {
	case pumpErr = <-pumped:
		pumpDone = true
	case <-conn.Done(): // the server ended it first, or it was lost
	case <-rt.ctx.Done():
		interrupted = true
		fmt.Fprintln(rt.stderr, "interrupted: closing gracefully; signal again to force")
	}
	cctx, cancel := context.WithTimeout(context.Background(), c.CloseTimeout)
	closeErr := conn.Close(cctx) // the outcome is read from conn.Err below
	cancel()
	if !pumpDone {
		close(stop)
		pumpErr = <-pumped
	}
	<-recvDone

	var ce *client.CloseError
	if !errors.As(conn.Err(), &ce) { // Done is closed, so Err is set; stay safe anyway
		ce = &client.CloseError{Outcome: client.OutcomeLost, Cause: conn.Err()}
	}
	if pumpErr != nil && !errors.Is(pumpErr, client.ErrClosing) && !errors.Is(pumpErr, client.ErrClosed) {
		fmt.Fprintf(rt.stderr, "stopped sending: %v\n", pumpErr)
	}
	unacked := errors.Is(closeErr, client.ErrUnacknowledged) // --resume only
	if unacked {
		fmt.Fprintf(rt.stderr, "tlsgate: %v\n", closeErr)
	}
	s.report(ce)
	switch {
	case interrupted:
		return exitError(exitInterrupted)
	case pumpErr != nil || ce.Outcome != client.OutcomeClean || ce.Initiator != client.InitiatorLocal:
		return exitError(1)
	case unacked, s.res != nil && s.res.Stats().Gaps > 0: // lines may be missing or repeated
		return exitError(1)
	}
	return nil
}

// trust returns the options that make Dial trust the server: a pin, a CA,
// or by default a pin of the dev certificate in --dev-dir.
func (c *clientCmd) trust(g *globals, log *slog.Logger) ([]client.Option, error) {
	switch {
	case c.Fingerprint != "":
		return []client.Option{client.WithFingerprint(c.Fingerprint)}, nil
	case c.CA != "":
		pemBytes, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("--ca %s holds no PEM certificate", c.CA)
		}
		return []client.Option{client.WithTLSConfig(&tls.Config{RootCAs: pool})}, nil
	}
	dir, err := g.devDir()
	if err != nil {
		return nil, fmt.Errorf("no --fingerprint or --ca given, and %w", err)
	}
	der, err := devcert.ReadCertificate(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no --fingerprint or --ca given, and no dev certificate to pin in %s: "+
			"start `tlsgate serve` in dev mode on this machine first (same --dev-dir), "+
			"or pass --fingerprint HEX (printed by serve) or --ca FILE", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("--dev-dir: %w", err)
	}
	fp := client.Fingerprint(der)
	log.Debug("pinning the dev certificate", "dir", dir, "fingerprint", fp)
	return []client.Option{client.WithFingerprint(fp)}, nil
}

// clientConn is what a clientSession uses of a *client.Conn or, with
// --resume, a *client.Resumable.
type clientConn interface {
	SendAsync(p client.Packet) <-chan error
	Recv(ctx context.Context) (client.Packet, error)
	Done() <-chan struct{}
	Err() error
	Close(ctx context.Context) error
}

// clientSession is one connection's input and output.
type clientSession struct {
	conn           clientConn
	res            *client.Resumable // with --resume: conn
	events         *resumeReporter   // with --resume
	stdout, stderr io.Writer
	sent           int // packets written (acknowledged, with --resume); owned by pump until it returns
	received       int // owned by receive until it returns
}

// readLines reads the lines of in on a goroutine of its own, which may
// stay blocked reading in: it sends a copy of each on lines until stop is
// closed, sets *err (nil at the end of input) and closes lines.
func readLines(in io.Reader, stop <-chan struct{}) (lines <-chan []byte, err *error) {
	ch := make(chan []byte)
	err = new(error)
	go func() {
		defer close(ch)
		sc := newLineScanner(in, wire.MaxPayload)
		n := 0
		for sc.Scan() {
			n++
			select {
			case ch <- bytes.Clone(sc.Bytes()):
			case <-stop:
				return
			}
		}
		if e := sc.Err(); e != nil {
			*err = lineError(e, n+1)
		}
	}()
	return ch, err
}

// pump sends each line as a Data packet, keeping at most sendWindow sends
// in flight, and counts each in s.sent as soon as it is written, not when
// the input next moves (a person typing, or a pipe that stays open). It
// returns once all are written: nil at the end of input, else why it
// stopped. When stop is closed (the connection has ended) it counts what
// it had in flight, each of which then completes at once, and returns nil.
//
// With --resume a send completes when the server acknowledges it, which
// it may do only when asked: a full window asks with Sync. A send
// acknowledged after a gap counts as sent (the gap is reported, and fails
// the run, on its own).
func (s *clientSession) pump(lines <-chan []byte, inputErr *error, enc wire.Encoding, stop <-chan struct{}) error {
	var inflight []<-chan error
	pop := func(err error) {
		inflight[0] = nil
		inflight = inflight[1:]
		if err == nil || errors.Is(err, client.ErrGap) {
			s.sent++
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var syncing chan struct{} // closed when the Sync in flight returns
	askAcks := func() {
		if s.res == nil || syncing != nil {
			return
		}
		done := make(chan struct{})
		syncing = done
		go func() {
			defer close(done)
			_ = s.res.Sync(ctx) // the sends' channels carry the outcome
		}()
	}
	defer func() {
		if syncing != nil {
			cancel()
			<-syncing
		}
	}()
	for lines != nil || len(inflight) > 0 {
		var oldest <-chan error
		if len(inflight) > 0 {
			oldest = inflight[0]
		}
		next := lines
		if len(inflight) == sendWindow {
			next = nil
			askAcks()
		}
		select {
		case <-syncing: // nil, blocking, when none is in flight
			syncing = nil
		case line, ok := <-next:
			if !ok {
				lines = nil
				continue
			}
			inflight = append(inflight, s.conn.SendAsync(client.Packet{Type: wire.TypeData, Encoding: enc, Payload: line}))
		case err := <-oldest:
			pop(err)
			if err != nil && !errors.Is(err, client.ErrGap) {
				return err
			}
		case <-stop:
			for len(inflight) > 0 {
				pop(<-inflight[0])
			}
			return nil
		}
	}
	return *inputErr
}

// receive prints each received Data payload on its own line to stdout and
// each Error packet to stderr, until the connection has ended.
func (s *clientSession) receive() {
	var buf []byte
	for {
		p, err := s.conn.Recv(context.Background())
		if err != nil {
			return // the connection ended; report tells why
		}
		s.received++
		switch p.Type {
		case wire.TypeData:
			buf = append(append(buf[:0], p.Payload...), '\n')
			if _, err := s.stdout.Write(buf); err != nil {
				fmt.Fprintf(s.stderr, "writing stdout: %v\n", err)
			}
		default:
			if ep, err := p.ErrorPayload(); err == nil {
				fmt.Fprintf(s.stderr, "error packet: code=%s pkt_type=%d error=%s\n", ep.Code, ep.PktType, strconv.Quote(ep.Error))
			} else {
				fmt.Fprintf(s.stderr, "error packet (%s, undecodable): %s\n", p.Encoding, strconv.Quote(string(p.Payload)))
			}
		}
	}
}

// report prints why the connection ended, on stderr.
func (s *clientSession) report(ce *client.CloseError) {
	if ce.Initiator == client.InitiatorRemote && ce.Code != "" {
		advice := ""
		if ce.Reconnect {
			advice = " (reconnect advised)"
		}
		fmt.Fprintf(s.stderr, "the server ended the connection: %s: %s%s\n", ce.Code, ce.Reason, advice)
	}
	code := ce.Code
	if code == "" {
		code = "none"
	}
	line := fmt.Sprintf("closed: outcome=%s initiator=%s goodbye=%s reason=%s reconnect=%t sent=%d received=%d",
		ce.Outcome, ce.Initiator, code, strconv.Quote(ce.Reason), ce.Reconnect, s.sent, s.received)
	if s.res != nil {
		st := s.res.Stats()
		line += fmt.Sprintf(" reconnects=%d resent=%d duplicates=%d gaps=%d", st.Reconnects, st.Resent, st.DuplicatesDropped, st.Gaps)
	}
	if ce.Cause != nil {
		line += " cause=" + strconv.Quote(ce.Cause.Error())
	}
	fmt.Fprintln(s.stderr, line)
}

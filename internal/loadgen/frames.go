package loadgen

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// bufSize is the size of every read and write buffer of the load clients
// and the raw baseline: 64 KiB, as the gateway's.
const bufSize = 64 << 10

// peer is a load client: raw TLS, the tlsgate handshake done by hand, and
// a 64 KiB batched writer. Its writes are serialised by wmu.
type peer struct {
	tc  *tls.Conn
	br  *bufio.Reader
	fr  *wire.Reader
	id  uint64
	wmu sync.Mutex
	bw  *bufio.Writer
	hdr [wire.HeaderLen]byte
	// goodbyeSent: our Goodbye is written; guarded by wmu.
	goodbyeSent bool
}

// dialPeer connects to addr. With a key it runs the tlsgate handshake;
// without, it is a raw baseline client and reads the raw server's one-byte
// ready mark. ctx bounds the dial and the handshakes.
func dialPeer(ctx context.Context, addr string, tlsCfg *tls.Config, key ed25519.PrivateKey, rbuf, wbuf int) (*peer, error) {
	d := tls.Dialer{Config: tlsCfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := nc.(*tls.Conn)
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(dl)
	}
	p := &peer{tc: tc, br: bufio.NewReaderSize(tc, rbuf)}
	p.fr = wire.NewReader(p.br, wire.MaxPayload)
	if key == nil {
		if _, err := p.br.ReadByte(); err != nil {
			_ = tc.Close()
			return nil, fmt.Errorf("raw ready mark: %w", err)
		}
	} else {
		hello, err := wire.ReadServerHello(p.br)
		if err != nil {
			_ = tc.Close()
			return nil, err
		}
		auth := wire.SignAuth(key, hello.Nonce, sha256.Sum256(tc.ConnectionState().PeerCertificates[0].Raw))
		if _, err := tc.Write(auth.Append(make([]byte, 0, wire.ClientAuthLen))); err != nil {
			_ = tc.Close()
			return nil, err
		}
		if p.id, err = wire.ReadSessionID(p.br); err != nil {
			_ = tc.Close()
			return nil, err
		}
	}
	_ = tc.SetDeadline(time.Time{})
	p.bw = bufio.NewWriterSize(tc, wbuf)
	return p, nil
}

// writeFrameLocked buffers one frame. Call with wmu held.
func (p *peer) writeFrameLocked(typ wire.Type, enc wire.Encoding, payload []byte) error {
	p.hdr = wire.Header(typ, enc, len(payload))
	if _, err := p.bw.Write(p.hdr[:]); err != nil {
		return err
	}
	_, err := p.bw.Write(payload)
	return err
}

// send writes one frame and flushes.
func (p *peer) send(typ wire.Type, enc wire.Encoding, payload []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.writeFrameLocked(typ, enc, payload); err != nil {
		return err
	}
	return p.bw.Flush()
}

// sendControl marshals v and sends it as a frame.
func (p *peer) sendControl(typ wire.Type, v any) error {
	b, err := wire.Marshal(wire.JSON, v)
	if err != nil {
		return err
	}
	return p.send(typ, wire.JSON, b)
}

// sayGoodbye sends our Goodbye once.
func (p *peer) sayGoodbye() error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.goodbyeSent {
		return nil
	}
	p.goodbyeSent = true
	b, _ := wire.Marshal(wire.JSON, wire.GoodbyePayload{Code: wire.GoodbyeNormal, Reason: "bench done"})
	if err := p.writeFrameLocked(wire.TypeGoodbye, wire.JSON, b); err != nil {
		return err
	}
	return p.bw.Flush()
}

// readResult is what a peer's reader saw.
type readResult struct {
	data        uint64 // Data and Error frames
	gotGoodbye  bool   // the server's Goodbye arrived
	sentGoodbye bool   // ours was written
	err         error  // why reading ended, nil on a clean EOF
}

// clean reports a lossless close: both Goodbyes and the EOF.
func (r readResult) clean() bool { return r.gotGoodbye && r.sentGoodbye && r.err == nil }

// handlers are what readLoop calls; any may be nil.
type handlers struct {
	onData  func([]byte)
	onFlush func(seq uint64) // before the FlushAck is written
	acks    chan<- uint64    // FlushAcks' seqs
}

// readLoop reads until EOF or an error. It counts Data frames, answers
// Flush with FlushAck, and answers the server's Goodbye with ours, then
// close_notify, and reads on to EOF. It closes the socket when it returns.
func (p *peer) readLoop(h handlers) readResult {
	var res readResult
	defer func() { _ = p.tc.Close() }()
	for {
		f, err := p.fr.ReadFrameBorrowed()
		typ, payload := f.Type, f.Payload
		if err != nil {
			if !errors.Is(err, io.EOF) {
				res.err = err
			}
			p.wmu.Lock()
			res.sentGoodbye = p.goodbyeSent
			p.wmu.Unlock()
			return res
		}
		switch typ {
		case wire.TypeData, wire.TypeError:
			res.data++
			if h.onData != nil {
				h.onData(payload)
			}
		case wire.TypeFlush:
			fp, err := wire.DecodeFlush(wire.JSON, payload)
			if err != nil {
				fp, err = wire.DecodeFlush(wire.MsgPack, payload)
			}
			if err == nil && h.onFlush != nil {
				h.onFlush(fp.Seq)
			}
			if err == nil {
				err = p.sendControl(wire.TypeFlushAck, fp)
			}
			if err != nil {
				res.err = err
				return res
			}
		case wire.TypeFlushAck:
			fp, err := wire.DecodeFlush(wire.JSON, payload)
			if err == nil && h.acks != nil {
				h.acks <- fp.Seq
			}
		case wire.TypeGoodbye:
			res.gotGoodbye = true
			if err := p.sayGoodbye(); err != nil {
				res.err = err
				return res
			}
			_ = p.tc.CloseWrite()
		}
	}
}

// client is a peer with its reader running.
type client struct {
	*peer
	data atomic.Uint64 // Data frames received so far
	acks chan uint64
	// burstSeq numbers the Flushes of the connections scenario's bursts.
	burstSeq uint64
	flush    chan uint64 // the server's Flush seqs (when watched)
	done     chan struct{}
	res      readResult // valid once done is closed
	// lat are the latencies of stamped payloads (see stamp), at most
	// maxSamples; valid once done is closed.
	lat []time.Duration
}

// maxSamples bounds a client's latency samples.
const maxSamples = 1 << 16

// startClient starts p's reader. With watchFlush, the server's Flush seqs
// are handed to c.flush.
func startClient(p *peer, watchFlush bool) *client {
	c := &client{peer: p, acks: make(chan uint64, 16), done: make(chan struct{})}
	h := handlers{onData: func(p []byte) {
		c.data.Add(1)
		if lat, ok := stamped(p); ok && len(c.lat) < maxSamples {
			c.lat = append(c.lat, lat)
		}
	}, acks: c.acks}
	if watchFlush {
		c.flush = make(chan uint64, 16)
		h.onFlush = func(seq uint64) { c.flush <- seq }
	}
	go func() {
		defer close(c.done)
		c.res = p.readLoop(h)
	}()
	return c
}

// errReaderEnded: the connection ended while a client waited on it.
var errReaderEnded = errors.New("loadgen: connection ended")

// waitAck waits for the FlushAck of seq.
func (c *client) waitAck(ctx context.Context, seq uint64) error {
	for {
		select {
		case got := <-c.acks:
			if got == seq {
				return nil
			}
		case <-c.done:
			return fmt.Errorf("%w before FlushAck %d: %v", errReaderEnded, seq, c.res.err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitFlush waits for the server's next Flush and returns its seq.
func (c *client) waitFlush(ctx context.Context) (uint64, error) {
	select {
	case seq := <-c.flush:
		return seq, nil
	case <-c.done:
		return 0, fmt.Errorf("%w before the server's Flush: %v", errReaderEnded, c.res.err)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// close sends our Goodbye (unless already sent) and waits for the reader
// to see the server's Goodbye and EOF; when ctx ends first the socket is
// closed at once.
func (c *client) close(ctx context.Context) readResult {
	_ = c.sayGoodbye()
	return c.wait(ctx)
}

// wait waits for the reader to end.
func (c *client) wait(ctx context.Context) readResult {
	select {
	case <-c.done:
	case <-ctx.Done():
		_ = c.tc.Close()
		<-c.done
	}
	return c.res
}

// dialClients connects n clients to addr, conc at a time; with gateway
// keys (run, i) they run the tlsgate handshake.
func (e *env) dialClients(ctx context.Context, addr string, n int, run int, gatewayPeers, watchFlush bool) ([]*client, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out := make([]*client, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var k ed25519.PrivateKey
			if gatewayPeers {
				k = key(run, i)
			}
			p, err := dialPeer(ctx, addr, e.cliTLS, k, bufSize, bufSize)
			if err != nil {
				errs[i] = err
				return
			}
			out[i] = startClient(p, watchFlush)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, c := range out {
			if c != nil {
				_ = c.tc.Close()
				<-c.done
			}
		}
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return out, nil
}

// closeAll closes every client gracefully, in parallel, and returns how
// many closes were clean (both Goodbyes and the EOF).
func closeAll(ctx context.Context, cs []*client) (clean int) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	results := make([]readResult, len(cs))
	for i, c := range cs {
		wg.Go(func() { results[i] = c.close(ctx) })
	}
	wg.Wait()
	for _, r := range results {
		if r.clean() {
			clean++
		}
	}
	return clean
}

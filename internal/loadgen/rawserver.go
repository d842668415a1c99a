package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"github.com/tlsgate/tlsgate/wire"
)

// rawMode is what the raw baseline server does with a connection.
type rawMode int

const (
	// rawSink counts Data frames (inbound baseline).
	rawSink rawMode = iota
	// rawEcho writes every Data frame back, flushing when no more input is
	// buffered (echo baseline).
	rawEcho
	// rawSource writes Data frames for a duration, then a Flush whose seq
	// is how many (outbound baseline).
	rawSource
	// rawIdle holds the connection with the raw loop's state: 64 KiB read
	// and write buffers (memory baseline).
	rawIdle
	// rawIdleBare holds the connection with no buffers at all.
	rawIdleBare
)

// rawServer is the baseline: crypto/tls on loopback, the same frame format,
// 64 KiB buffers, one goroutine per connection. After the TLS handshake it
// writes a one-byte ready mark (so that a client knows the server finished
// its side of the handshake), then serves the mode. Flush is answered with
// FlushAck and Goodbye with Goodbye, as the gateway does.
type rawServer struct {
	ln      net.Listener
	cfg     *tls.Config
	mode    rawMode
	payload int
	dur     time.Duration
	log     *slog.Logger

	count counter // Data frames received (sink, echo) or sent (source)

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startRaw(ctx context.Context, cfg *tls.Config, mode rawMode, payload int, dur time.Duration, log *slog.Logger) (*rawServer, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &rawServer{ln: ln, cfg: cfg, mode: mode, payload: payload, dur: dur, log: log, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func (s *rawServer) addr() string { return s.ln.Addr().String() }

func (s *rawServer) accept() {
	defer s.wg.Done()
	for key := uint64(0); ; key++ { // key: the connection's count shard
		nc, err := s.ln.Accept()
		if err != nil {
			return // closed
		}
		s.mu.Lock()
		s.conns[nc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, nc)
				s.mu.Unlock()
				_ = nc.Close()
			}()
			if err := s.serve(nc, key); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("raw connection ended", "err", err)
			}
		}()
	}
}

// close stops accepting, closes every connection and waits for them.
func (s *rawServer) close() {
	_ = s.ln.Close()
	s.mu.Lock()
	for nc := range s.conns {
		_ = nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *rawServer) serve(nc net.Conn, key uint64) error {
	tc := tls.Server(nc, s.cfg)
	_ = tc.SetDeadline(time.Now().Add(30 * time.Second))
	if err := tc.Handshake(); err != nil {
		return err
	}
	_ = tc.SetDeadline(time.Time{})
	if s.mode == rawIdleBare {
		if _, err := tc.Write([]byte{1}); err != nil {
			return err
		}
		var b [1]byte
		_, err := tc.Read(b[:])
		return err
	}
	br := bufio.NewReaderSize(tc, bufSize)
	bw := bufio.NewWriterSize(tc, bufSize)
	if _, err := tc.Write([]byte{1}); err != nil {
		return err
	}
	fr := wire.NewReader(br, wire.MaxPayload)
	var hdr [wire.HeaderLen]byte
	if s.mode == rawSource {
		payload := make([]byte, s.payload)
		deadline := time.Now().Add(s.dur)
		var n uint64
		for {
			for range 256 {
				hdr = wire.Header(wire.TypeData, wire.JSON, len(payload))
				_, _ = bw.Write(hdr[:])
				if _, err := bw.Write(payload); err != nil {
					return err
				}
			}
			n += 256
			if time.Now().After(deadline) {
				break
			}
		}
		s.count.add(key, n)
		b, _ := wire.Marshal(wire.JSON, wire.FlushPayload{Seq: n})
		hdr = wire.Header(wire.TypeFlush, wire.JSON, len(b))
		_, _ = bw.Write(hdr[:])
		_, _ = bw.Write(b)
		if err := bw.Flush(); err != nil {
			return err
		}
	}
	goodbye := false
	for {
		f, err := fr.ReadFrameBorrowed()
		typ, enc, payload := f.Type, f.Encoding, f.Payload
		if err != nil {
			runtime.KeepAlive(bw)
			return err
		}
		switch {
		case typ == wire.TypeData && s.mode == rawEcho:
			s.count.add(key, 1)
			hdr = wire.Header(typ, enc, len(payload))
			_, _ = bw.Write(hdr[:])
			_, _ = bw.Write(payload)
		case typ == wire.TypeData:
			s.count.add(key, 1)
		case typ == wire.TypeFlush:
			hdr = wire.Header(wire.TypeFlushAck, enc, len(payload))
			_, _ = bw.Write(hdr[:])
			_, _ = bw.Write(payload)
		case typ == wire.TypeGoodbye && !goodbye:
			goodbye = true
			b, _ := wire.Marshal(enc, wire.GoodbyePayload{Code: wire.GoodbyeNormal, Reason: "reply to goodbye"})
			hdr = wire.Header(wire.TypeGoodbye, enc, len(b))
			_, _ = bw.Write(hdr[:])
			_, _ = bw.Write(b)
		}
		if br.Buffered() == 0 && bw.Buffered() > 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
			if goodbye {
				_ = tc.CloseWrite()
			}
		}
	}
}

package server_test

// Faults that need the gateway in-process: the server closing a session
// while its client sends at full speed, and a handler busy past the idle
// timeouts. The faults of the real binary (server killed or frozen, client
// killed, shutdown under load) are in cmd/tlsgate.

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// resetFree fails if err is, or wraps, a connection reset or a broken pipe:
// what a client sees when the server closes a socket it is still writing to
// instead of lingering.
func resetFree(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "connection reset by peer") || strings.Contains(err.Error(), "broken pipe") {
		t.Errorf("%s: %v", what, err)
	}
}

// TestServerDisconnectWhileClientSends: the server closes a session while
// its client is still sending at full speed. This is the lingering close:
// the server reads (and processes) until the client's Goodbye, then EOF,
// so the client receives the Goodbye admin and none of its writes meets a
// connection reset. Everything the client wrote is processed. 20 times.
func TestServerDisconnectWhileClientSends(t *testing.T) {
	const reps, window, warmup = 20, 256, 2000
	ts := startServer(t, server.Config{Handler: server.Discard{}})
	payload := bytes.Repeat([]byte("p"), 1000)
	for rep := range reps {
		c := ts.dialClient(t, newKey(t))
		ts.waitEvent(t, server.EventConnected, c.ID())
		sess, ok := ts.Session(c.ID())
		if !ok {
			t.Fatal("no session")
		}
		streaming := make(chan struct{})
		type sent struct {
			written int
			errs    []error
		}
		done := make(chan sent, 1)
		go func() { // SendAsync at full speed, at most window in flight
			var s sent
			var inflight []<-chan error
			wait := func() {
				if err := <-inflight[0]; err != nil {
					s.errs = append(s.errs, err)
				} else if s.written++; s.written == warmup {
					close(streaming)
				}
				inflight = inflight[1:]
			}
			for len(s.errs) == 0 {
				inflight = append(inflight, c.SendAsync(client.Data(payload)))
				if len(inflight) == window {
					wait()
				}
			}
			for len(inflight) > 0 {
				wait()
			}
			done <- s
		}()
		select {
		case <-streaming:
		case s := <-done:
			t.Fatalf("rep %d: sending stopped after %d packets: %v", rep, s.written, s.errs)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		info, err := sess.Close(ctx, server.CloseOptions{Reason: "disconnected while sending"})
		cancel()
		if err != nil {
			t.Fatalf("rep %d: Close: %v", rep, err)
		}
		s := <-done
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("rep %d: the client did not finish within 10s of the close", rep)
		}
		var ce *client.CloseError
		if !errors.As(c.Err(), &ce) || ce.Code != wire.GoodbyeAdmin || ce.Reason != "disconnected while sending" ||
			ce.Initiator != client.InitiatorRemote || ce.Outcome != client.OutcomeClean {
			t.Fatalf("rep %d: client ended with %v, want a clean Goodbye admin from the server", rep, c.Err())
		}
		resetFree(t, "client end", c.Err())
		for _, err := range s.errs {
			resetFree(t, "a send", err)
			if !errors.Is(err, client.ErrGoodbyeReceived) && !errors.Is(err, client.ErrClosed) {
				t.Errorf("rep %d: a send failed with %v, want it refused after the Goodbye", rep, err)
			}
		}
		// Every packet the client wrote was read and processed: the
		// server read until the client's Goodbye.
		if info.Outcome != server.OutcomeClean || info.PeerCode != wire.GoodbyeNormal || info.PacketsIn != uint64(s.written)+1 || info.Discarded != 0 {
			t.Fatalf("rep %d: server close %+v: want clean, the client's Goodbye, %d packets in (%d data + Goodbye)",
				rep, info, s.written+1, s.written)
		}
	}
}

// TestBusyHandlerIsNotIdle: while the handler holds a packet, the server
// does not read, so a client pushing against that back-pressure is not
// idle, however long the handler takes: it must not be closed with
// idle_timeout (which would lose what it sent). Once the handler is done,
// everything is processed.
func TestBusyHandlerIsNotIdle(t *testing.T) {
	const idle, pong = 50 * time.Millisecond, 50 * time.Millisecond
	release := make(chan struct{})
	h := &countingHandler{}
	ts := startServer(t, server.Config{IdleInterval: idle, PongTimeout: pong, Handler: server.HandlerFunc(func(ctx context.Context, s *server.Session, p server.Packet) {
		if string(p.Payload) == "block" {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		h.Handle(ctx, s, p)
	})})
	rc := wiretest.Connect(t, ts.addr, newKey(t))
	rc.WriteFrame(t, wire.TypeData, wire.JSON, []byte("block"))
	for i := range 10 {
		rc.WriteFrame(t, wire.TypeData, wire.JSON, []byte{'0' + byte(i)})
	}
	// Wait 10 idle intervals and pong timeouts, answering every Ping; a Goodbye is the bug.
	start := time.Now()
	_ = rc.TLS().SetReadDeadline(start.Add(10 * (idle + pong)))
	for {
		f, err := rc.ReadFrame()
		if err != nil {
			break // the deadline: nothing but Pings came
		}
		if f.Type == wire.TypeGoodbye {
			close(release)
			t.Fatalf("closed with %q while the handler held a packet for %s", f.Payload, time.Since(start).Round(time.Millisecond))
		}
		if f.Type == wire.TypePing {
			p, _ := wire.DecodePing(f.Encoding, f.Payload)
			rc.WriteControl(t, wire.TypePong, f.Encoding, p)
		}
	}
	close(release)
	rc.WriteControl(t, wire.TypeGoodbye, wire.JSON, wire.GoodbyePayload{Code: wire.GoodbyeNormal})
	_ = rc.Close()
	ev := ts.waitEvent(t, server.EventClosed, rc.ID())
	if got := h.got(rc.ID()); len(got) != 11 || ev.Close.Code == wire.GoodbyeIdleTimeout {
		t.Fatalf("processed %d of 11, closed %+v", len(got), ev.Close)
	}
}

package client_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/internal/gatewaytest"
	"github.com/tlsgate/tlsgate/wire"
)

// resumeEcho is a scripted server of the resume extension on top of a
// peer: one session, echoing every client Data and application Error,
// keeping its echoes until the client acks them and acking the client's
// packets only in answer to a Flush, as a server whose backends are in
// other processes does. It records what it processed, in order.
type resumeEcho struct {
	t    *testing.T
	p    *peer
	done chan struct{}

	mu        sync.Mutex
	processed []string // client packets processed, in order
	epochs    int
}

func newResumeEcho(t *testing.T, p *peer) *resumeEcho {
	e := &resumeEcho{t: t, p: p, done: make(chan struct{})}
	go e.run()
	t.Cleanup(func() {
		select {
		case <-e.done:
		case <-time.After(waitFor):
			t.Error("resume echo server did not stop")
		}
	})
	return e
}

func (e *resumeEcho) run() {
	defer close(e.done)
	var (
		epoch   string
		recvd   uint64   // client Data accepted, this epoch
		out     [][]byte // echo frames not acked by the client
		outBase uint64   // number of the last echo acked
	)
	for {
		var pc *peerConn
		select {
		case pc = <-e.p.conns:
		case <-e.p.quit:
			return
		}
		write := func(typ wire.Type, enc wire.Encoding, v any) {
			payload, ok := v.([]byte)
			if !ok {
				payload, _ = wire.Marshal(enc, v)
			}
			_, _ = pc.tc.Write(wire.AppendFrame(nil, typ, enc, payload))
		}
		// The first frame is the Resume.
		r, ok := e.frame(pc)
		if !ok {
			continue
		}
		rp, err := wire.DecodeResume(r.Encoding, r.Payload)
		if r.Type != wire.TypeResume || err != nil {
			e.t.Errorf("first frame %s (%v), want resume", r.Type, err)
			return
		}
		if rp.Epoch != "" && rp.Epoch == epoch {
			if rp.Seq < outBase || rp.Seq > outBase+uint64(len(out)) {
				e.t.Errorf("resume at %d, outside %d..%d", rp.Seq, outBase, outBase+uint64(len(out)))
				return
			}
			out, outBase = out[rp.Seq-outBase:], rp.Seq
			write(wire.TypeResumed, r.Encoding, wire.ResumedPayload{Epoch: epoch, Seq: recvd, Resumed: true})
			for _, f := range out {
				_, _ = pc.tc.Write(f)
			}
		} else {
			e.mu.Lock()
			e.epochs++
			epoch = fmt.Sprintf("epoch-%d", e.epochs)
			e.mu.Unlock()
			recvd, out, outBase = 0, nil, 0
			write(wire.TypeResumed, r.Encoding, wire.ResumedPayload{Epoch: epoch})
		}
		next := recvd + 1
		for {
			f, ok := e.frame(pc)
			if !ok {
				break
			}
			switch f.Type {
			case wire.TypeData, wire.TypeError:
				num := next
				next++
				if num <= recvd {
					continue // already processed
				}
				recvd = num
				e.mu.Lock()
				e.processed = append(e.processed, string(f.Payload))
				e.mu.Unlock()
				fr := wire.AppendFrame(nil, f.Type, f.Encoding, f.Payload)
				out = append(out, fr)
				_, _ = pc.tc.Write(fr)
			case wire.TypeAck:
				ap, err := wire.DecodeAck(f.Encoding, f.Payload)
				if err != nil || ap.Seq > outBase+uint64(len(out)) {
					e.t.Errorf("bad ack %+v (%v), %d sent", ap, err, outBase+uint64(len(out)))
					return
				}
				if ap.Seq > outBase {
					out, outBase = out[ap.Seq-outBase:], ap.Seq
				}
			case wire.TypeFlush:
				write(wire.TypeAck, f.Encoding, wire.AckPayload{Seq: recvd})
				write(wire.TypeFlushAck, f.Encoding, f.Payload)
			case wire.TypePing:
				write(wire.TypePong, f.Encoding, f.Payload)
			case wire.TypeGoodbye:
				write(wire.TypeGoodbye, f.Encoding, wire.GoodbyePayload{Code: wire.GoodbyeNormal})
				_ = pc.tc.CloseWrite()
				for {
					if _, ok := e.frame(pc); !ok {
						break
					}
				}
				_ = pc.tc.Close()
				return
			}
		}
		_ = pc.tc.Close()
	}
}

// frame returns the next frame of pc, false at its end.
func (e *resumeEcho) frame(pc *peerConn) (wire.Frame, bool) {
	select {
	case r := <-pc.frames:
		return r.f, r.err == nil
	case <-e.p.quit:
		return wire.Frame{}, false
	}
}

// TestResumableThroughCuts: 2,000 packets each way through a proxy that
// cuts the connection several times: each is processed exactly once and
// in order in both directions, and the client reports every reconnect.
func TestResumableThroughCuts(t *testing.T) {
	p := newPeerALPN(t, wire.ALPNResume)
	srv := newResumeEcho(t, p)
	proxy := gatewaytest.NewProxy(t, p.ln.Addr().String())
	runThroughCuts(t, proxy, p.fp, func() []string {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return append([]string(nil), srv.processed...)
	})
}

// runThroughCuts is runThroughFaults with 2,000 packets each way and 5
// cuts.
func runThroughCuts(t *testing.T, proxy *gatewaytest.Proxy, fingerprint string, processed func() []string, opts ...client.Option) {
	faults := make([]func(), 5)
	for i := range faults {
		faults[i] = proxy.Cut
	}
	runThroughFaults(t, proxy, fingerprint, faultRun{n: 2000, faults: faults, processed: processed}, opts...)
}

// faultRun is what runThroughFaults does: n packets each way, with the
// faults spread evenly over the echoes, each on a connection that is up.
// processed, if set, returns what the server processed, in order, once the
// client has closed; without it, the echoes alone show it. after, if set,
// runs once every echo has arrived, before the close.
type faultRun struct {
	n         int
	faults    []func()
	processed func() []string
	after     func(context.Context, *client.Resumable)
}

// runThroughFaults is the body of the fault tests: every packet is
// processed once, in order, both ways, and every fault is a reported loss
// followed by a resume, never a gap.
func runThroughFaults(t *testing.T, proxy *gatewaytest.Proxy, fingerprint string, run faultRun, opts ...client.Option) {
	n, cuts, processed := run.n, len(run.faults), run.processed
	var lost, reconnected atomic.Int64
	var conns connState
	opts = append([]client.Option{
		client.WithFingerprint(fingerprint),
		client.WithBackoff(time.Millisecond, 50*time.Millisecond),
		client.WithResumeBuffer(8 << 10), // past 4 KiB the client asks for acks
		client.WithResumeEvents(func(ev client.ResumeEvent) {
			switch ev.Kind {
			case client.EventLost:
				lost.Add(1)
				conns.set(false)
			case client.EventResumed:
				if ev.Attempt > 0 {
					reconnected.Add(1)
				}
				if !ev.Resumed && ev.PrevEpoch != "" {
					t.Errorf("gap: %+v", ev)
				}
				conns.set(true)
			case client.EventGap:
				t.Errorf("gap: %+v", ev)
			}
		}),
	}, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	r, err := client.DialResumable(ctx, proxy.Addr(), newKey(t), opts...)
	if err != nil {
		t.Fatalf("DialResumable: %v", err)
	}
	closeAtEnd(t, r)
	// Faults happen as echoes arrive, fault k on connection k+1 or a later
	// one, while it is up.
	received := make(chan error, 1)
	go func() {
		for i := range n {
			if k := i / (n / (cuts + 1)); i > 0 && i%(n/(cuts+1)) == 0 && k <= cuts {
				if err := conns.waitUp(ctx, k); err != nil {
					received <- fmt.Errorf("before fault %d: %w", k, err)
					return
				}
				run.faults[k-1]()
			}
			p, err := r.Recv(ctx)
			if err != nil {
				received <- fmt.Errorf("Recv %d: %w", i, err)
				return
			}
			if got, want := string(p.Payload), strconv.Itoa(i); got != want || p.Type != wire.TypeData {
				received <- fmt.Errorf("echo %d: got %s %q, want %q", i, p.Type, got, want)
				return
			}
		}
		received <- nil
	}()
	start := time.Now()
	for i := range n {
		if err := r.Send(ctx, client.Data([]byte(strconv.Itoa(i)))); err != nil {
			t.Fatalf("Send %d: %v (stats %+v, %d losses)", i, err, r.Stats(), lost.Load())
		}
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v (stats %+v, %d losses)", err, r.Stats(), lost.Load())
	}
	if err := <-received; err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if run.after != nil {
		run.after(ctx, r)
	}
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if processed == nil {
		t.Logf("%d packets each way in %v through %d faults: %+v", n, elapsed, cuts, r.Stats())
		return
	}
	got := processed()
	if len(got) != n {
		t.Fatalf("the server processed %d packets, want %d", len(got), n)
	}
	for i, s := range got {
		if s != strconv.Itoa(i) {
			t.Fatalf("the server's packet %d is %q", i, s)
		}
	}
	st := r.Stats()
	if lost.Load() < int64(cuts) || reconnected.Load() != lost.Load() || st.Reconnects != uint64(lost.Load()) {
		t.Fatalf("%d losses, %d reconnects reported, %d counted; want at least %d, all reported", lost.Load(), reconnected.Load(), st.Reconnects, cuts)
	}
	t.Logf("%d packets each way in %v through %d faults: %d reconnects, %d resent, %d duplicates dropped", n, elapsed, cuts, st.Reconnects, st.Resent, st.DuplicatesDropped)
}

// connState follows a Resumable's connection through its events: whether
// one is up, and how many have come up.
type connState struct {
	mu      sync.Mutex
	up      bool
	ups     int
	changed chan struct{} // closed and replaced on every change
}

func (s *connState) set(up bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.up = up
	if up {
		s.ups++
	}
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// waitUp waits until at least k connections have come up and one is up.
func (s *connState) waitUp(ctx context.Context, k int) error {
	for {
		s.mu.Lock()
		if s.up && s.ups >= k {
			s.mu.Unlock()
			return nil
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		ch, ups := s.changed, s.ups
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%d connections up, waiting for connection %d: %w", ups, k, ctx.Err())
		}
	}
}

// TestResumableCloseWhileDisconnected: Close on a lost connection
// reconnects, resends, and only then exchanges Goodbyes.
func TestResumableCloseWhileDisconnected(t *testing.T) {
	p := newPeerALPN(t, wire.ALPNResume)
	srv := newResumeEcho(t, p)
	proxy := gatewaytest.NewProxy(t, p.ln.Addr().String())
	lost := make(chan struct{}, 10)
	var handled []string
	var hmu sync.Mutex
	ctx := testCtx(t)
	r, err := client.DialResumable(ctx, proxy.Addr(), newKey(t),
		client.WithFingerprint(p.fp),
		client.WithBackoff(10*time.Millisecond, 50*time.Millisecond),
		client.WithHandler(func(p client.Packet) {
			hmu.Lock()
			handled = append(handled, string(p.Payload))
			hmu.Unlock()
		}),
		client.WithResumeEvents(func(ev client.ResumeEvent) {
			if ev.Kind == client.EventLost {
				lost <- struct{}{}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, r)
	if _, err := r.Recv(ctx); !errors.Is(err, client.ErrHandlerSet) {
		t.Fatalf("Recv with a handler: %v", err)
	}
	for i := range 10 {
		if err := r.Send(ctx, client.Data([]byte(strconv.Itoa(i)))); err != nil {
			t.Fatal(err)
		}
	}
	proxy.Cut()
	select {
	case <-lost:
	case <-time.After(waitFor):
		t.Fatal("the cut was not noticed")
	}
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	srv.mu.Lock()
	got := len(srv.processed)
	srv.mu.Unlock()
	if got != 10 {
		t.Fatalf("the server processed %d packets, want 10", got)
	}
	hmu.Lock()
	defer hmu.Unlock()
	for i, s := range handled {
		if s != strconv.Itoa(i) {
			t.Fatalf("handled %v, want 0.. in order", handled)
		}
	}
	if len(handled) != 10 {
		t.Fatalf("handled %d echoes, want 10", len(handled))
	}
}

// closeAtEnd closes r when the test ends without waiting for anything (a
// cancelled context): whatever the test left unsent is not its concern.
func closeAtEnd(t *testing.T, r *client.Resumable) {
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = r.Close(ctx)
	})
}

package client_test

import (
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/client"
	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/internal/gatewaytest"
	"github.com/tlsgate/tlsgate/server"
)

// startEchoServer runs the real server with the echo handler on loopback
// and returns its address and certificate fingerprint.
func startEchoServer(t *testing.T, cfg server.Config) (addr, fingerprint string) {
	t.Helper()
	cert, _, _, err := devcert.Generate()
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	if cfg.Handler == nil {
		cfg.Handler = server.Echo{}
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("server shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String(), client.Fingerprint(cert.Certificate[0])
}

// TestResumableServerThroughCuts: the required test against the real
// server: 2,000 packets each way through a proxy that cuts the connection
// 5 times; the echoes prove the server processed each packet once, in
// order, and the client received each echo once, in order.
func TestResumableServerThroughCuts(t *testing.T) {
	addr, fp := startEchoServer(t, server.Config{})
	probe, err := client.DialResumable(testCtx(t), addr, newKey(t), client.WithFingerprint(fp))
	if errors.Is(err, client.ErrResumeUnsupported) {
		t.Skip("the server does not support resume yet")
	} else if err != nil {
		t.Fatal(err)
	}
	if err := probe.Close(testCtx(t)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	proxy := gatewaytest.NewProxy(t, addr)
	runThroughCuts(t, proxy, fp, nil)
}

// TestResumableIdentityAndReconnectTimeout: a Resumable has the session ID
// and server fingerprint a v1 Conn with the same key has, and a reconnect
// attempt to a peer that accepts TCP and then says nothing fails after
// WithReconnectTimeout, not after the 10 s default.
func TestResumableIdentityAndReconnectTimeout(t *testing.T) {
	addr, fp := startEchoServer(t, server.Config{})
	key := newKey(t)
	v1, err := client.Dial(testCtx(t), addr, key, client.WithFingerprint(fp))
	if err != nil {
		t.Fatal(err)
	}
	if err := v1.Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	proxy := gatewaytest.NewProxy(t, addr)
	const timeout = 100 * time.Millisecond
	failed := make(chan client.ResumeEvent, 16)
	r, err := client.DialResumable(testCtx(t), proxy.Addr(), key,
		client.WithFingerprint(fp),
		client.WithReconnectTimeout(timeout),
		client.WithBackoff(time.Millisecond, time.Millisecond),
		client.WithResumeEvents(func(ev client.ResumeEvent) {
			if ev.Kind == client.EventReconnectFailed {
				select {
				case failed <- ev:
				default:
				}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, r)
	if r.ID() != v1.ID() || r.ServerFingerprint() != v1.ServerFingerprint() || r.ServerFingerprint() != fp {
		t.Fatalf("resumable ID %d, fingerprint %s; v1 conn %d, %s", r.ID(), r.ServerFingerprint(), v1.ID(), v1.ServerFingerprint())
	}
	proxy.Blackhole()
	proxy.Cut()
	cut := time.Now()
	// Half the 10 s default: far beyond 100 ms however busy the machine,
	// and short of what an attempt without the option would take.
	select {
	case ev := <-failed:
		t.Logf("the first attempt failed %v after the cut: %v", time.Since(cut), ev.Cause)
	case <-time.After(client.DefaultReconnectTimeout / 2):
		t.Fatalf("no reconnect attempt failed within %v of the cut, with a reconnect timeout of %v", client.DefaultReconnectTimeout/2, timeout)
	}
}

// recordingEcho is the server's echo, recording what it processed, in
// order. A Data "check" is not echoed: it records the session's state at
// that moment instead.
type recordingEcho struct {
	mu        sync.Mutex
	processed []string
	checked   []server.SessionInfo
}

func (h *recordingEcho) Handle(ctx context.Context, s *server.Session, p server.Packet) {
	h.mu.Lock()
	if string(p.Payload) == "check" {
		h.checked = append(h.checked, s.Info())
		h.mu.Unlock()
		return
	}
	h.processed = append(h.processed, string(p.Payload))
	h.mu.Unlock()
	server.Echo{}.Handle(ctx, s, p)
}

// TestResumableServerThroughFaults: the fault test. 10,000 packets
// each way between the resumable client and the real server, through a
// proxy with latency and a bandwidth limit that injects 20 faults, each
// kind at least three times: a cut, a reset, a silent stall (half-open:
// the client's keepalive notices, and its Resume takes the session from
// the server's still-open connection), a cut inside a frame either way, and
// bytes the server wrote that the client never read. Every packet is
// processed exactly once and in order, both ways; once the client has
// acked everything, the server retains nothing for it.
func TestResumableServerThroughFaults(t *testing.T) {
	h := &recordingEcho{}
	addr, fp := startEchoServer(t, server.Config{Handler: h})
	proxy := gatewaytest.NewProxy(t, addr)
	proxy.SetLatency(time.Millisecond)
	proxy.SetBandwidth(4 << 20)

	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	kinds := []struct {
		name  string
		fault func()
	}{
		{"cut", proxy.Cut},
		{"reset", proxy.Reset},
		{"stall", proxy.Stall},
		{"cut inside a frame to the client", func() { proxy.CutAfter(gatewaytest.ToClient, 1+rng.IntN(20)) }},
		{"cut inside a frame to the server", func() { proxy.CutAfter(gatewaytest.ToServer, 1+rng.IntN(20)) }},
		{"written, never read", func() { proxy.DropAndCut(gatewaytest.ToClient) }},
	}
	order := make([]int, 0, 20)
	for len(order) < 18 {
		order = append(order, len(order)%len(kinds))
	}
	order = append(order, rng.IntN(len(kinds)), rng.IntN(len(kinds)))
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	names := make([]string, len(order))
	faults := make([]func(), len(order))
	for i, k := range order {
		names[i], faults[i] = kinds[k].name, kinds[k].fault
	}
	t.Logf("seed %d, faults: %q", seed, names)

	runThroughFaults(t, proxy, fp, faultRun{
		n:      10000,
		faults: faults,
		processed: func() []string {
			h.mu.Lock()
			defer h.mu.Unlock()
			return append([]string(nil), h.processed...)
		},
		// Every echo was received, so its Ack is queued before "check":
		// the server sees the Ack first.
		after: func(ctx context.Context, r *client.Resumable) {
			if err := r.Send(ctx, client.Data([]byte("check"))); err != nil {
				t.Fatal(err)
			}
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if len(h.checked) != 1 {
				t.Fatalf("%d checks processed, want 1", len(h.checked))
			}
			if c := h.checked[0]; c.AckedSeq != c.SentSeq || c.UnackedBytes != 0 || c.Epoch == "" {
				t.Fatalf("the server at the end: epoch %q, %d sent, %d acked, %d bytes retained; want all acked, none retained", c.Epoch, c.SentSeq, c.AckedSeq, c.UnackedBytes)
			}
		},
	}, client.WithKeepalive(100*time.Millisecond, 400*time.Millisecond))
}

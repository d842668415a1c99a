package metrics

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/internal/wiretest"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
	"github.com/tlsgate/tlsgate/wire"
)

// TestResumeMetrics: a resumable session lost twice, resumed once with a
// replay, then ended while detached, as the resume metrics count it.
func TestResumeMetrics(t *testing.T) {
	cert, _, _, err := devcert.Generate()
	if err != nil {
		t.Fatal(err)
	}
	m := New("v1.2.3")
	detached := make(chan uint64, 10)
	srv, err := server.New(server.Config{
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, Observer: m, Handler: server.Echo{},
		OnEvent: func(e server.Event) {
			if e.Kind == server.EventDetached {
				detached <- e.SessionID
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(srv, control.NewHub(control.HubConfig{Fallback: server.Discard{}}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-served; !errors.Is(err, server.ErrServerClosed) {
			t.Error(err)
		}
	})
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	resume := func(epoch string) (*wiretest.Conn, wire.ResumedPayload) {
		c := wiretest.Connect(t, ln.Addr().String(), key, wiretest.ALPN(wire.ALPNResume))
		c.WriteControl(t, wire.TypeResume, wire.JSON, wire.ResumePayload{Epoch: epoch})
		f := c.Read(t)
		p, err := wire.DecodeResumed(f.Encoding, f.Payload)
		if f.Type != wire.TypeResumed || err != nil {
			t.Fatalf("got %s %q (%v), want Resumed", f.Type, f.Payload, err)
		}
		return c, p
	}
	lose := func(c *wiretest.Conn) {
		_ = c.Abort()
		select {
		case <-detached:
		case <-time.After(10 * time.Second):
			t.Fatal("the session was not detached")
		}
	}
	readData := func(c *wiretest.Conn) {
		if f := c.Read(t); f.Type != wire.TypeData {
			t.Fatalf("got %s, want Data", f.Type)
		}
	}

	c1, r1 := resume("")
	sess, _ := srv.Session(c1.ID())
	a := []byte("a")
	if _, err := sess.SendAsync(wire.JSON, a); err != nil {
		t.Fatal(err)
	}
	readData(c1)
	lose(c1)
	c2, _ := resume(r1.Epoch)
	readData(c2) // the replay
	lose(c2)
	if info, err := sess.Close(context.Background(), server.CloseOptions{}); err != nil || info.Ended == nil {
		t.Fatalf("Close of the detached session: %+v, %v", info, err)
	}

	want := fmt.Sprintf(`
# HELP tlsgate_sessions_detached Resumable sessions whose connection was lost, kept for a Resume (counted in sessions_active too).
# TYPE tlsgate_sessions_detached gauge
tlsgate_sessions_detached 0
# HELP tlsgate_resumes_total Resume requests answered: resumed="true" (the client's epoch went on) or "false" (a new epoch: a gap is possible).
# TYPE tlsgate_resumes_total counter
tlsgate_resumes_total{resumed="false"} 1
tlsgate_resumes_total{resumed="true"} 1
# HELP tlsgate_replayed_packets_total Data packets written again after a Resume: written before, never acked.
# TYPE tlsgate_replayed_packets_total counter
tlsgate_replayed_packets_total 1
# HELP tlsgate_detached_sessions_ended_total Detached sessions that ended without a Resume: the resume window passed, a Disconnect or a shutdown.
# TYPE tlsgate_detached_sessions_ended_total counter
tlsgate_detached_sessions_ended_total 1
# HELP tlsgate_detached_dropped_bytes_total Memory (as the queue bounds count it) that detached sessions held, queued or unacked, when they ended without a Resume.
# TYPE tlsgate_detached_dropped_bytes_total counter
tlsgate_detached_dropped_bytes_total %d
`, server.EntryOverhead+cap(a))
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"tlsgate_sessions_detached", "tlsgate_resumes_total", "tlsgate_replayed_packets_total",
		"tlsgate_detached_sessions_ended_total", "tlsgate_detached_dropped_bytes_total"); err != nil {
		t.Error(err)
	}
}

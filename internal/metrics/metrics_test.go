package metrics

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tlsgate/tlsgate/internal/devcert"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
)

func newMetrics(t *testing.T) *Metrics {
	t.Helper()
	cert, _, _, err := devcert.Generate()
	if err != nil {
		t.Fatal(err)
	}
	m := New("v1.2.3")
	srv, err := server.New(server.Config{TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, Observer: m})
	if err != nil {
		t.Fatal(err)
	}
	m.Attach(srv, control.NewHub(control.HubConfig{Fallback: server.Discard{}}))
	return m
}

// TestLint runs Prometheus's own linter (promlint) over every metric:
// names, units, _total on counters, help texts.
func TestLint(t *testing.T) {
	m := newMetrics(t)
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// TestLabelsBounded: codes and outcomes outside the known sets collapse
// into "other", and no close creates a series of its own.
func TestLabelsBounded(t *testing.T) {
	m := newMetrics(t)
	before := testutil.CollectAndCount(m.closes)
	for _, code := range []string{"", "admin", "maintenance_window_42", "x"} {
		m.Event(server.Event{Kind: server.EventClosed, SessionID: 1, ConnID: 2, Close: server.CloseInfo{Code: code, Outcome: server.OutcomeClean}})
	}
	m.Event(server.Event{Kind: server.EventClosed, Close: server.CloseInfo{Code: "admin", Outcome: "weird"}})
	for labels, want := range map[[2]string]float64{
		{"none", "clean"}:  1,
		{"admin", "clean"}: 1,
		{"other", "clean"}: 2,
		{"admin", "other"}: 1,
	} {
		if got := testutil.ToFloat64(m.closes.WithLabelValues(labels[0], labels[1])); got != want {
			t.Errorf("closes_total{code=%q,outcome=%q} = %v, want %v", labels[0], labels[1], got, want)
		}
	}
	if after := testutil.CollectAndCount(m.closes); after != before+2 { // other/clean and admin/other
		t.Errorf("%d closes series, want %d", after, before+2)
	}
}

func TestObserver(t *testing.T) {
	m := newMetrics(t)
	m.Handshake(3 * time.Millisecond)
	m.Drain(time.Second, true, nil)
	m.Drain(time.Second, false, errors.New("deadline"))
	m.Close(20*time.Millisecond, server.OutcomeTimeout)
	m.Event(server.Event{Kind: server.EventConnected})
	m.Event(server.Event{Kind: server.EventTakenOver})
	want := `
# HELP tlsgate_takeovers_total Sessions taken over by a new connection with the same key.
# TYPE tlsgate_takeovers_total counter
tlsgate_takeovers_total 1
# HELP tlsgate_sessions_connected_total Sessions started: a handshake completed for an identity with no live session.
# TYPE tlsgate_sessions_connected_total counter
tlsgate_sessions_connected_total 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "tlsgate_takeovers_total", "tlsgate_sessions_connected_total"); err != nil {
		t.Error(err)
	}
	for _, c := range []struct {
		got  int
		want int
		what string
	}{
		{testutil.CollectAndCount(m.handshake), 1, "handshake series"},
		{testutil.CollectAndCount(m.drain), 2, "drain series (ack, result)"},
		{testutil.CollectAndCount(m.disconnect), 1, "disconnect series"},
	} {
		if c.got != c.want {
			t.Errorf("%d %s, want %d", c.got, c.what, c.want)
		}
	}
}

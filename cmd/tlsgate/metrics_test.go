package main

// End-to-end test of the admin listener: the real binary, sessions of the Go
// client library through connect, traffic, takeover and disconnect, a Go
// gRPC client of the control plane, and /metrics parsed with Prometheus's
// own text parser.

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/tlsgate/tlsgate/client"
	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/wire"
)

// controlClient is a Go gRPC client of serve's control plane; with a
// token, every call carries it.
func controlClient(t *testing.T, addr, token string) tlsgatev1.ControlServiceClient {
	t.Helper()
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if token != "" {
		opts = append(opts,
			grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
				return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), method, req, reply, cc, opts...)
			}),
			grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
				return streamer(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), desc, cc, method, opts...)
			}))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return tlsgatev1.NewControlServiceClient(cc)
}

// dial connects a client of the Go library to serve, pinning its dev
// certificate; the connection is closed at the end of the test.
func dial(t *testing.T, srv *serveProc, key ed25519.PrivateKey) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	conn, err := client.Dial(ctx, srv.addr, key, client.WithFingerprint(srv.fingerprint))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// echo sends n Data packets and reads their n echoes.
func echo(t *testing.T, conn *client.Conn, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	for i := range n {
		if err := conn.Send(ctx, client.Data(fmt.Appendf(nil, `"packet %d"`, i))); err != nil {
			t.Fatal(err)
		}
	}
	recv(t, conn, n)
}

// recv reads n Data packets.
func recv(t *testing.T, conn *client.Conn, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	for range n {
		p, err := conn.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p.Type != wire.TypeData {
			t.Fatalf("received a %s packet, want data", p.Type)
		}
	}
}

// scrape fetches url (/metrics) and parses it with Prometheus's text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4") // the classic text format
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	return families
}

// metricValue returns the value of the series of family name whose labels
// include want ("k=v" pairs): a counter, gauge or untyped value, or a
// histogram's sample count. It fails the test when there is no such
// series, or more than one.
func metricValue(t *testing.T, families map[string]*dto.MetricFamily, name string, want ...string) float64 {
	t.Helper()
	mf, ok := families[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	var found []float64
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			found = append(found, m.GetCounter().GetValue())
		case m.GetGauge() != nil:
			found = append(found, m.GetGauge().GetValue())
		case m.GetHistogram() != nil:
			found = append(found, float64(m.GetHistogram().GetSampleCount()))
		case m.GetUntyped() != nil:
			found = append(found, m.GetUntyped().GetValue())
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s{%s}: %d series, want 1", name, strings.Join(want, ","), len(found))
	}
	return found[0]
}

// sumMetric sums every series of a counter or gauge family.
func sumMetric(families map[string]*dto.MetricFamily, name string) float64 {
	var sum float64
	for _, m := range families[name].GetMetric() {
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// TestMetricsEndToEnd drives sessions through every lifecycle step and
// checks that each counter moved by exactly what happened:
//
//	A1: 3 echoes, then taken over by A2 (same key);
//	B:  2 echoes, then closes itself (Goodbye normal);
//	A2: 1 echo, 2 packets sent with SendAsync, Drain, stays connected;
//	C:  disconnected by the control plane (Goodbye admin).
func TestMetricsEndToEnd(t *testing.T) {
	t.Parallel()
	srv := startServe(t, "--dev-dir", t.TempDir())
	base := "http://" + srv.adminAddr
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body := httpGet(t, base+path); code != http.StatusOK || body != "SERVING\n" {
			t.Errorf("GET %s = %d %q, want 200 SERVING", path, code, body)
		}
	}
	if code, _ := httpGet(t, base+"/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ without --pprof = %d, want 404", code)
	}
	ctl := controlClient(t, srv.controlAddr, "")
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()

	// A watcher, to know when the server has finished with a connection.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch, err := ctl.WatchSessions(wctx, &tlsgatev1.WatchSessionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Header(); err != nil { // subscribed
		t.Fatal(err)
	}
	waitClosed := func(connID uint64) {
		t.Helper()
		for {
			ev, err := watch.Recv()
			if err != nil {
				t.Fatalf("waiting for connection %d to close: %v", connID, err)
			}
			if c := ev.GetClosed(); c != nil && c.GetConnectionId() == connID {
				return
			}
		}
	}
	connOf := func(sid uint64) uint64 {
		t.Helper()
		r, err := ctl.GetSession(ctx, &tlsgatev1.GetSessionRequest{SessionId: sid})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetSession().GetConnectionId()
	}

	keyA := newKey(t)
	a1 := dial(t, srv, keyA)
	echo(t, a1, 3)
	a1Conn := connOf(a1.ID())
	b := dial(t, srv, newKey(t))
	echo(t, b, 2)

	a2 := dial(t, srv, keyA) // takes the session over
	waitClosed(a1Conn)
	<-a1.Done()
	echo(t, a2, 1)
	for i := range 2 {
		if _, err := ctl.SendAsync(ctx, &tlsgatev1.SendAsyncRequest{SessionId: a2.ID(), Payload: fmt.Appendf(nil, `"async %d"`, i)}); err != nil {
			t.Fatal(err)
		}
	}
	recv(t, a2, 2)
	// Written and counted before Drain answers.
	if _, err := ctl.Drain(ctx, &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_SessionId{SessionId: a2.ID()}}); err != nil {
		t.Fatal(err)
	}

	c := dial(t, srv, newKey(t))
	d, err := ctl.Disconnect(ctx, &tlsgatev1.DisconnectRequest{SessionId: c.ID(), Reason: "metrics test"})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.GetConnection().GetOutcome(); got != tlsgatev1.Outcome_OUTCOME_CLEAN {
		t.Fatalf("Disconnect outcome %s, want clean", got)
	}

	bConn := connOf(b.ID())
	if err := b.Close(ctx); err != nil {
		t.Fatal(err)
	}
	waitClosed(bConn)

	m := scrape(t, base+"/metrics")
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tlsgate_sessions_active", nil, 1},
		{"tlsgate_sessions_connected_total", nil, 3},
		{"tlsgate_takeovers_total", nil, 1},
		{"tlsgate_connections_accepted_total", nil, 4},
		{"tlsgate_handshake_duration_seconds", nil, 4},
		{"tlsgate_closes_total", []string{"code=session_taken_over", "outcome=clean"}, 1},
		{"tlsgate_closes_total", []string{"code=admin", "outcome=clean"}, 1},
		{"tlsgate_closes_total", []string{"code=normal", "outcome=clean"}, 1},
		{"tlsgate_disconnect_duration_seconds", []string{"outcome=clean"}, 1},
		{"tlsgate_drain_duration_seconds", []string{"ack=false", "result=ok"}, 1},
		{"tlsgate_received_packets_total", []string{"type=data"}, 3 + 2 + 1},
		{"tlsgate_received_packets_total", []string{"type=goodbye"}, 3}, // A1's, C's and B's
		{"tlsgate_sent_packets_total", []string{"type=data"}, 3 + 2 + 1 + 2},
		{"tlsgate_sent_packets_total", []string{"type=error"}, 1}, // A1's takeover notice
		{"tlsgate_sent_packets_total", []string{"type=goodbye"}, 3},
		{"tlsgate_queued_bytes", nil, 0},
		{"tlsgate_send_rejected_total", nil, 0},
		{"tlsgate_slow_consumer_disconnects_total", nil, 0},
		{"tlsgate_watch_streams_active", nil, 1},
		{"tlsgate_receive_streams_active", nil, 0},
		{"tlsgate_build_info", nil, 1},
		{"grpc_server_handled_total", []string{"grpc_method=Disconnect", "grpc_code=OK"}, 1},
		{"grpc_server_handled_total", []string{"grpc_method=Drain", "grpc_code=OK"}, 1},
		{"grpc_server_handled_total", []string{"grpc_method=SendAsync", "grpc_code=OK"}, 2},
		{"grpc_server_handled_total", []string{"grpc_method=GetSession", "grpc_code=OK"}, 2},
		{"grpc_server_started_total", []string{"grpc_method=WatchSessions"}, 1},
		{"grpc_server_handling_seconds", []string{"grpc_method=Disconnect"}, 1},
	} {
		if got := metricValue(t, m, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s{%s} = %v, want %v", tc.name, strings.Join(tc.labels, ","), got, tc.want)
		}
	}
	// Nothing else moved.
	for name, want := range map[string]float64{
		"tlsgate_closes_total":                   3,
		"tlsgate_received_packets_total":         6 + 3,
		"tlsgate_sent_packets_total":             8 + 1 + 3,
		"tlsgate_handshakes_failed_total":        0,
		"tlsgate_connections_refused_total":      0,
		"tlsgate_idle_timeout_disconnects_total": 0,
		"tlsgate_control_streams_cut_off_total":  0,
	} {
		if got := sumMetric(m, name); got != want {
			t.Errorf("sum of %s = %v, want %v", name, got, want)
		}
	}
	// Bytes: a frame is the header and the payload; echo's payloads are
	// `"packet N"` (10 bytes), SendAsync's `"async N"` (9).
	echoed := float64(6 * (wire.HeaderLen + len(`"packet 0"`)))
	if got := metricValue(t, m, "tlsgate_received_bytes_total", "type=data"); got != echoed {
		t.Errorf("tlsgate_received_bytes_total{type=data} = %v, want %v", got, echoed)
	}
	if got, want := metricValue(t, m, "tlsgate_sent_bytes_total", "type=data"), echoed+float64(2*(wire.HeaderLen+len(`"async 0"`))); got != want {
		t.Errorf("tlsgate_sent_bytes_total{type=data} = %v, want %v", got, want)
	}
	if v := m["tlsgate_build_info"].GetMetric()[0]; !strings.HasPrefix(labelOf(v, "goversion"), "go") || labelOf(v, "version") == "" {
		t.Errorf("tlsgate_build_info labels %v", v.GetLabel())
	}

	stopWatch()
	srv.stop()
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

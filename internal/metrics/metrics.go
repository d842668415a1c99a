// Package metrics exports tlsgate's data plane and control plane to
// Prometheus.
//
// The data plane has no Prometheus dependency: it counts with atomics
// (server.Server.Stats, Traffic, Sessions; control.Hub.Stats) and this
// package reads those at scrape time. What the data plane only reports as
// it happens comes in through two hooks: Metrics is a server.Observer
// (handshake, drain and disconnect durations, for histograms), and
// Metrics.Event takes the lifecycle events (takeovers, closes by Goodbye
// code and outcome). The control plane's gRPC metrics come from
// go-grpc-middleware's providers/prometheus, through GRPCUnary and
// GRPCStream.
//
// Every metric is named tlsgate_*, except the gRPC server's (grpc_server_*),
// the Go runtime's (go_*) and the process's (process_*), which keep the
// names their dashboards expect. Labels have a small fixed set of values:
// no session ID, connection ID or address is ever a label.
package metrics

import (
	"net/http"
	"runtime"
	"sync"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"

	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
	"github.com/tlsgate/tlsgate/wire"
)

// Namespace prefixes every tlsgate metric.
const Namespace = "tlsgate"

// DurationBuckets are the buckets, in seconds, of the handshake, drain
// and disconnect histograms: 1 ms to 60 s.
var DurationBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// GRPCBuckets are the buckets, in seconds, of grpc_server_handling_seconds.
// Drain and Disconnect wait for clients, and streams last long, so they
// reach further than the library's default.
var GRPCBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}

// Metrics holds the registry and the metrics fed as things happen. Create
// it with New, pass it as server.Config.Observer, call Event from
// server.Config.OnEvent, and Attach the gateway once it exists.
type Metrics struct {
	reg *prometheus.Registry

	handshake  prometheus.Histogram
	drain      *prometheus.HistogramVec // ack, result
	disconnect *prometheus.HistogramVec // outcome
	connected  prometheus.Counter
	takeovers  prometheus.Counter
	closes     *prometheus.CounterVec // code, outcome
	grpc       *grpcprom.ServerMetrics

	attachOnce sync.Once
}

var _ server.Observer = (*Metrics)(nil)

// New builds the metrics and registers them, with the Go runtime and
// process collectors and tlsgate_build_info{version, goversion}, in a new
// registry (not the global one).
func New(version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		handshake: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "handshake_duration_seconds",
			Help:    "Duration of successful handshakes, TLS included, from accept until the session is registered.",
			Buckets: DurationBuckets,
		}),
		drain: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "drain_duration_seconds",
			Help:    "Duration of session drains (control-plane Drain): until what was queued is written (ack=\"false\") or acknowledged by the client (ack=\"true\"); result is ok or error.",
			Buckets: DurationBuckets,
		}, []string{"ack", "result"}),
		disconnect: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "disconnect_duration_seconds",
			Help:    "Duration of server-initiated session closes (control-plane Disconnect, shutdown), until the connection ended, by outcome.",
			Buckets: DurationBuckets,
		}, []string{"outcome"}),
		connected: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "sessions_connected_total",
			Help: "Sessions started: a handshake completed for an identity with no live session.",
		}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "takeovers_total",
			Help: "Sessions taken over by a new connection with the same key.",
		}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "closes_total",
			Help: "Connections of sessions that ended, by the code of the server's Goodbye (\"none\" if it sent none, \"other\" for a code outside protocol v1's) and outcome (clean, peer_closed, timeout, forced).",
		}, []string{"code", "outcome"}),
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramBuckets(GRPCBuckets))),
	}
	m.reg.MustRegister(
		m.handshake, m.drain, m.disconnect, m.connected, m.takeovers, m.closes, m.grpc,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "build_info",
			Help:        "Always 1; the labels say which build runs.",
			ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
	)
	// Every code and outcome a healthy gateway produces, at zero from the
	// start, so that rate() sees the first increment.
	for _, code := range goodbyeCodes {
		for _, o := range outcomes {
			m.closes.WithLabelValues(code, string(o))
		}
	}
	return m
}

// Registry is where every metric is registered; serve it with Handler.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Attach adds the metrics read at scrape time from the gateway and the
// hub (nil when the control plane is off). Call it once.
func (m *Metrics) Attach(gw *server.Server, hub *control.Hub) {
	m.attachOnce.Do(func() {
		m.reg.MustRegister(&scrape{gw: gw, hub: hub})
	})
}

// GRPCUnary and GRPCStream are the control plane's metrics interceptors
// (control.Config.UnaryInterceptors and StreamInterceptors).
func (m *Metrics) GRPCUnary() grpc.UnaryServerInterceptor { return m.grpc.UnaryServerInterceptor() }

// GRPCStream: see GRPCUnary.
func (m *Metrics) GRPCStream() grpc.StreamServerInterceptor { return m.grpc.StreamServerInterceptor() }

// InitializeGRPC creates the gRPC metrics of every method the server has,
// at zero, so that they exist before the first call.
func (m *Metrics) InitializeGRPC(s interface {
	GetServiceInfo() map[string]grpc.ServiceInfo
},
) {
	m.grpc.InitializeMetrics(s)
}

// Handshake implements server.Observer.
func (m *Metrics) Handshake(d time.Duration) { m.handshake.Observe(d.Seconds()) }

// Drain implements server.Observer.
func (m *Metrics) Drain(d time.Duration, ack bool, err error) {
	ackLabel, result := "false", "ok"
	if ack {
		ackLabel = "true"
	}
	if err != nil {
		result = "error"
	}
	m.drain.WithLabelValues(ackLabel, result).Observe(d.Seconds())
}

// Close implements server.Observer.
func (m *Metrics) Close(d time.Duration, o server.Outcome) {
	m.disconnect.WithLabelValues(outcomeLabel(o)).Observe(d.Seconds())
}

// Event counts a lifecycle event: compose it with the hub's Publish in
// server.Config.OnEvent. It never blocks.
func (m *Metrics) Event(e server.Event) {
	switch e.Kind {
	case server.EventConnected:
		m.connected.Inc()
	case server.EventTakenOver:
		m.takeovers.Inc()
	case server.EventClosed:
		m.closes.WithLabelValues(codeLabel(e.Close.Code), outcomeLabel(e.Close.Outcome)).Inc()
	}
}

// goodbyeCodes are the Goodbye codes of protocol v1, "none" and "other":
// the values of the code label.
var goodbyeCodes = []string{
	"none", wire.GoodbyeNormal, wire.GoodbyeSessionTakenOver, wire.GoodbyeServerShutdown,
	wire.GoodbyeSlowConsumer, wire.GoodbyeProtocolError, wire.GoodbyeIdleTimeout, wire.GoodbyeAdmin,
}

var outcomes = []server.Outcome{server.OutcomeClean, server.OutcomePeerClosed, server.OutcomeTimeout, server.OutcomeForced}

// codeLabel bounds the code label: Disconnect accepts any code of the
// right shape, and a label must not take arbitrary values.
func codeLabel(code string) string {
	if code == "" {
		return "none"
	}
	for _, c := range goodbyeCodes[1:] {
		if c == code {
			return code
		}
	}
	return "other"
}

func outcomeLabel(o server.Outcome) string {
	for _, k := range outcomes {
		if k == o {
			return string(o)
		}
	}
	return "other"
}

package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/server/control"
	"github.com/tlsgate/tlsgate/wire"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
}

// The metrics read at scrape time.
var (
	descAccepted     = desc("connections_accepted_total", "TCP connections accepted and admitted (before their handshake).")
	descRefused      = desc("connections_refused_total", "TCP connections refused at accept by a limit: reason max_conns (--max-conns), max_conns_per_ip (--max-conns-per-ip), or after its handshake max_memory (a new session while the sessions hold --max-memory).", "reason")
	descHandshakeErr = desc("handshakes_failed_total", "Failed handshakes by reason: "+handshakeFailureList()+".", "reason")
	descActive       = desc("sessions_active", "Live sessions.")
	descQueued       = desc("queued_bytes", "Memory the outbound queues of every live session hold, as their bounds count it: per packet queued or being written, its payload allocation plus 64 bytes.")
	descMemoryHeld   = desc("memory_held_bytes", "What every session together holds for its clients, as --max-memory counts it: queued packets, batches being written, resume buffers (payload allocations plus 64 bytes a packet) and inbound packets consumer groups hold unacked (plus 224 bytes a packet).")
	descMemoryPeak   = desc("memory_high_water_bytes", "The most memory_held_bytes has been since start.")
	descMemoryLimit  = desc("memory_limit_bytes", "The --max-memory bound; 0: no bound.")
	descHighWater    = desc("queue_high_water_bytes", "The most bytes any session's outbound queue has held since start.")
	descSlow         = desc("slow_consumer_disconnects_total", "Sessions closed with Goodbye slow_consumer: the client did not read for --slow-consumer-timeout.")
	descIdle         = desc("idle_timeout_disconnects_total", "Sessions closed with Goodbye idle_timeout: no packet and no Pong after a Ping.")
	descRejected     = desc("send_rejected_total", "SendAsync calls rejected because the session's queue was full (RESOURCE_EXHAUSTED).")
	descDetached     = desc("sessions_detached", "Resumable sessions whose connection was lost, kept for a Resume (counted in sessions_active too).")
	descResumes      = desc("resumes_total", "Resume requests answered: resumed=\"true\" (the client's epoch went on) or \"false\" (a new epoch: a gap is possible).", "resumed")
	descReplayed     = desc("replayed_packets_total", "Data packets written again after a Resume: written before, never acked.")
	descExpired      = desc("detached_sessions_ended_total", "Detached sessions that ended without a Resume: the resume window passed, a Disconnect or a shutdown.")
	descExpiredBytes = desc("detached_dropped_bytes_total", "Memory (as the queue bounds count it) that detached sessions held, queued or unacked, when they ended without a Resume.")
	descPacketsIn    = desc("received_packets_total", "Packets received from clients, by packet type.", "type")
	descBytesIn      = desc("received_bytes_total", "Bytes received from clients in frames (headers included), by packet type.", "type")
	descPacketsOut   = desc("sent_packets_total", "Packets written to clients, by packet type.", "type")
	descBytesOut     = desc("sent_bytes_total", "Bytes written to clients in frames (headers included), by packet type.", "type")
	descReceivers    = desc("receive_streams_active", "Open control-plane Receive streams.")
	descWatchers     = desc("watch_streams_active", "Open control-plane WatchSessions streams.")
	descDelivered    = desc("receive_delivered_packets_total", "Inbound packets handed to Receive streams (once per stream).")
	descCutOff       = desc("control_streams_cut_off_total", "Receive and WatchSessions streams ended with RESOURCE_EXHAUSTED because they fell behind.")
	descGroups       = desc("consume_groups", "Consumer groups (of Consume streams), with or without members.")
	descMembers      = desc("consume_members", "Open Consume streams.")
	descUnacked      = desc("consume_unacked_packets", "Packets the consumer groups hold, delivered or not, and not yet acked.")
	descUnackedBytes = desc("consume_unacked_bytes", "Payload bytes of the packets the consumer groups hold unacked.")
	descPaused       = desc("consume_paused_sessions", "Connections whose reads a consumer group holds back now: the session's unacked packets are at the member's limits, or its Flush waits for acks.")
	descStalled      = desc("consume_stalled_disconnects_total", "Sessions closed with Goodbye backend_stalled: paused for --consume-pause-timeout.")
)

// handshakeFailureList is the values of the handshake failure reason label,
// comma-separated.
func handshakeFailureList() string {
	l := server.HandshakeFailures()
	s := make([]string, len(l))
	for i, r := range l {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

// typeLabels are the values of the type label, by traffic slot.
var typeLabels = func() [server.TypeSlots]string {
	var l [server.TypeSlots]string
	for i := range server.TypeSlots - 1 {
		l[i] = wire.Type(i).String()
	}
	l[server.TypeSlots-1] = "unknown"
	return l
}()

// scrape reads the gateway's and the hub's counters when Prometheus asks.
type scrape struct {
	gw  *server.Server
	hub *control.Hub // nil without a control plane
}

func (s *scrape) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		descAccepted, descRefused, descHandshakeErr, descActive, descQueued, descHighWater,
		descSlow, descIdle, descRejected, descPacketsIn, descBytesIn, descPacketsOut, descBytesOut,
		descDetached, descResumes, descReplayed, descExpired, descExpiredBytes,
		descMemoryHeld, descMemoryPeak, descMemoryLimit,
	} {
		ch <- d
	}
	if s.hub != nil {
		ch <- descReceivers
		ch <- descWatchers
		ch <- descDelivered
		ch <- descCutOff
		for _, d := range []*prometheus.Desc{descGroups, descMembers, descUnacked, descUnackedBytes, descPaused, descStalled} {
			ch <- d
		}
	}
}

func (s *scrape) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	st := s.gw.Stats()
	counter(descAccepted, st.Accepted)
	counter(descRefused, st.RefusedTotal, "max_conns")
	counter(descRefused, st.RefusedPerIP, "max_conns_per_ip")
	counter(descRefused, st.RefusedMemory, "max_memory")
	gauge(descMemoryHeld, float64(st.MemoryHeld))
	gauge(descMemoryPeak, float64(st.MemoryHighWater))
	gauge(descMemoryLimit, float64(st.MemoryLimit))
	for reason, n := range st.HandshakeFailed {
		counter(descHandshakeErr, n, reason)
	}
	counter(descSlow, st.SlowConsumers)
	counter(descIdle, st.IdleTimeouts)
	counter(descRejected, st.SendRejected)
	gauge(descHighWater, float64(st.QueueHighWater))
	gauge(descDetached, float64(st.Detached))
	counter(descResumes, st.ResumesResumed, "true")
	counter(descResumes, st.ResumesFresh, "false")
	counter(descReplayed, st.Replayed)
	counter(descExpired, st.Expired)
	counter(descExpiredBytes, st.ExpiredBytes)

	sessions := s.gw.Sessions()
	queued := 0
	for _, sess := range sessions {
		_, b := sess.QueueDepth()
		queued += b
	}
	gauge(descActive, float64(len(sessions)))
	gauge(descQueued, float64(queued))

	in, out := s.gw.Traffic()
	for i, typ := range typeLabels {
		counter(descPacketsIn, in.Packets[i], typ)
		counter(descBytesIn, in.Bytes[i], typ)
		counter(descPacketsOut, out.Packets[i], typ)
		counter(descBytesOut, out.Bytes[i], typ)
	}

	if s.hub != nil {
		hs := s.hub.Stats()
		gauge(descReceivers, float64(hs.Receivers))
		gauge(descWatchers, float64(hs.Watchers))
		counter(descDelivered, hs.Delivered)
		counter(descCutOff, hs.CutOff)
		gauge(descGroups, float64(hs.Groups))
		gauge(descMembers, float64(hs.Members))
		gauge(descUnacked, float64(hs.UnackedPackets))
		gauge(descUnackedBytes, float64(hs.UnackedBytes))
		gauge(descPaused, float64(hs.Paused))
		counter(descStalled, hs.Stalled)
	}
}

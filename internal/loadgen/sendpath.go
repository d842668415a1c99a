package loadgen

import (
	"context"
	"fmt"
	"time"

	"github.com/tlsgate/tlsgate/server"
)

// The send-stream and send-batch scenarios: a backend in another process
// (the backend process, see backend.go) sends 64 B and 1 KiB packets to
// SendSessions sessions through the control plane, with the
// FULL_QUEUE_POLICY_WAIT policy; the clients, in this process, read
// everything. The rate is what the clients counted over the time from the
// first send to the end of a Drain with ack. The baseline, in interleaved
// rounds, is the in-process Go API (Session.SendAsync, as outbound) to as
// many sessions. send-stream also measures SendAsync from the backend
// process, RPCConcurrency calls in flight, against the same baseline, so
// that the gain is visible.

func (e *env) sendStreamScenario(ctx context.Context) error {
	if err := e.sendPath(ctx, "send-stream", "stream", "SendStream", e.opts.Payloads, "≥ 1,000,000 packets/s", 1e6); err != nil {
		return err
	}
	return e.sendPath(ctx, "send-stream", "async", "SendAsync", e.opts.Payloads[:1], "", 0)
}

func (e *env) sendBatchScenario(ctx context.Context) error {
	return e.sendPath(ctx, "send-batch", "batch", "SendBatch", e.opts.Payloads, "≥ 500,000 packets/s", 5e5)
}

// sendPath measures one method at each payload size. target and goal
// apply to the first size (64 B by default); goal 0: none.
func (e *env) sendPath(ctx context.Context, scenario, method, rpc string, sizes []int, target string, goal float64) error {
	if e.opts.Addr != "" {
		e.log.Warn(scenario + ": its baseline needs the in-process gateway; not measured")
		for range 2 * e.opts.Rounds * len(sizes) {
			e.prog.stepDone()
		}
		return nil
	}
	stepBase := fmt.Sprintf("%s: in-process Go API", scenario)
	label(stepBase)
	gw, err := startGateway(ctx, e.cert, server.Discard{}, e.log)
	if err != nil {
		return err
	}
	defer func() { _ = gw.stop() }()
	be, err := e.startBackend(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = be.stop() }()
	n := e.opts.SendSessions
	batch, inFlight := e.opts.SendItems, e.opts.SendInFlight
	if batch == 0 {
		batch = map[string]int{"stream": 1024, "batch": 256}[method]
	}
	how := fmt.Sprintf("%d items a request, %d in flight", batch, inFlight)
	if method == "async" {
		batch, inFlight = 1, e.opts.RPCConcurrency
		how = fmt.Sprintf("one packet a call, %d in flight", inFlight)
	}
	for i, size := range sizes {
		stepGW := fmt.Sprintf("%s %d B: backend process %s", scenario, size, rpc)
		var baseSent, baseGot, sent, got, rejected uint64
		var lat []time.Duration
		refusal := ""
		r, err := e.interleave(ctx, stepBase, stepGW,
			func(ctx context.Context, d time.Duration) (float64, error) {
				s, g, elapsed, err := e.outboundGoAPI(ctx, gw, n, size, d)
				baseSent, baseGot = baseSent+s, baseGot+g
				return float64(g) / elapsed.Seconds(), err
			},
			func(ctx context.Context, d time.Duration) (float64, error) {
				cs, err := e.dialClients(ctx, gw.addr, n, nextRun(), true, false)
				if err != nil {
					return 0, err
				}
				ids := make([]uint64, len(cs))
				for k, c := range cs {
					ids[k] = c.id
				}
				rep, err := be.run(backendJob{
					Kind: "send", ControlAddr: gw.ctlAddr, Method: method, Sessions: ids,
					Payload: size, DurationNS: int64(d), Batch: batch, InFlight: inFlight,
				})
				clean := closeAll(ctx, cs)
				var g uint64
				for _, c := range cs {
					g += c.data.Load()
					lat = append(lat, c.lat...)
				}
				sent, got, rejected = sent+rep.Accepted, got+g, rejected+rep.Rejected
				if refusal == "" {
					refusal = rep.Refusal
				}
				if err != nil {
					return 0, err
				}
				if clean != len(cs) {
					return 0, fmt.Errorf("%s: %d of %d closes were not clean", rpc, len(cs)-clean, len(cs))
				}
				return float64(g) / time.Duration(rep.ElapsedNS).Seconds(), nil
			})
		if err != nil {
			return err
		}
		e.loss(Loss{Scenario: scenario, Name: fmt.Sprintf("in-process Go API %d B", size), Sent: baseSent, Processed: baseGot, Detail: "counted by the clients after Drain with ack"})
		detail := "counted by the clients after Drain with ack"
		if rejected > 0 {
			detail += fmt.Sprintf("; %d items refused (%s), not counted as sent", rejected, refusal)
		}
		e.loss(Loss{Scenario: scenario, Name: fmt.Sprintf("backend process %s %d B", rpc, size), Sent: sent, Processed: got, Detail: detail})
		f := r.figure(Figure{
			Scenario: scenario, Name: fmt.Sprintf("%d B %s to %d sessions (%s), delivered packets/s", size, rpc, n, how),
			Unit: "packets/s", Baseline: "in-process Go API",
		}, 1)
		e.figure(f)
		if i == 0 && goal > 0 {
			e.target(target, f.Value >= goal)
		}
		l := summarize(lat)
		e.figure(Figure{Scenario: scenario, Name: fmt.Sprintf("%d B %s send → client read p50 (%d samples)", size, rpc, l.n), Unit: "ms", Value: ms(l.p50)})
		e.figure(Figure{Scenario: scenario, Name: fmt.Sprintf("%d B %s send → client read p99", size, rpc), Unit: "ms", Value: ms(l.p99)})
	}
	if err := be.stop(); err != nil {
		return err
	}
	return gw.stop()
}

package loadgen

import (
	"context"
	"fmt"
	"time"

	"github.com/tlsgate/tlsgate/server"
)

// consume: ConsumeConns clients send Data packets as inbound does, while a
// backend in another process (the backend process, see backend.go)
// consumes them through Consume, acking each batch once handled
// (backend.Consume): one consumer, then a group of 4 (64 B only). The
// rate is what the clients' Flush barriers prove acked (a FlushAck comes
// only once the consumers acked everything before it) over the time until
// the last FlushAck. The baseline, in interleaved rounds, is another
// in-process gateway whose discard handler processes what as many clients
// send, with no consumer: inbound's figure.
func (e *env) consume(ctx context.Context) error {
	if e.opts.Addr != "" {
		e.log.Warn("consume: its baseline needs the in-process gateway; not measured")
		for range e.consumeSteps() {
			e.prog.stepDone()
		}
		return nil
	}
	stepBase := "consume: discard handler"
	label(stepBase)
	base, err := startGateway(ctx, e.cert, server.Discard{}, e.log)
	if err != nil {
		return err
	}
	defer func() { _ = base.stop() }()
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
	for _, members := range []int{1, 4} {
		sizes := e.opts.Payloads
		if members > 1 {
			sizes = sizes[:1]
		}
		for i, size := range sizes {
			if err := e.consumeRounds(ctx, base, gw, be, stepBase, members, size, i == 0 && members == 1); err != nil {
				return err
			}
		}
	}
	if err := be.stop(); err != nil {
		return err
	}
	if err := base.stop(); err != nil {
		return err
	}
	return gw.stop()
}

func (e *env) consumeSteps() int {
	return 2 * e.opts.Rounds * (len(e.opts.Payloads) + 1)
}

// consumeRounds measures one group size at one payload size.
func (e *env) consumeRounds(ctx context.Context, base, gw *target, be *backendChild, stepBase string, members, size int, targets bool) error {
	who := "one consumer"
	if members > 1 {
		who = fmt.Sprintf("a group of %d", members)
	}
	group := fmt.Sprintf("bench-%d-%d", members, size)
	if _, err := be.run(backendJob{Kind: "consume", ControlAddr: gw.ctlAddr, Members: members, Group: group}); err != nil {
		return err
	}
	n := e.opts.ConsumeConns
	stepGW := fmt.Sprintf("consume %d B: %s in the backend process", size, who)
	var baseSent, basePre, sent, acked uint64
	basePre = base.handled.n.load()
	r, err := e.interleave(ctx, stepBase, stepGW,
		func(ctx context.Context, d time.Duration) (float64, error) {
			before := base.handled.n.load()
			p, err := e.pushInboundConns(ctx, base.addr, n, size, d)
			if err != nil {
				return 0, fmt.Errorf("discard handler: %w", err)
			}
			baseSent += p.sent
			return float64(base.handled.n.load()-before) / p.elapsed.Seconds(), nil
		},
		func(ctx context.Context, d time.Duration) (float64, error) {
			p, err := e.pushInboundConns(ctx, gw.addr, n, size, d)
			sent, acked = sent+p.sent, acked+p.acked
			if err != nil {
				return 0, fmt.Errorf("consume: %w", err)
			}
			return float64(p.acked) / p.elapsed.Seconds(), nil
		})
	rep, stopErr := be.run(backendJob{Kind: "stop"})
	if err != nil {
		return err
	}
	if stopErr != nil {
		return stopErr
	}
	e.loss(Loss{Scenario: "consume", Name: fmt.Sprintf("discard handler %d B", size), Sent: baseSent, Processed: base.handled.n.load() - basePre, Detail: "counted by the handler"})
	e.loss(Loss{Scenario: "consume", Name: fmt.Sprintf("Consume %d B, %s", size, who), Sent: sent, Processed: rep.Distinct,
		Detail: fmt.Sprintf("distinct packets the consumers saw (%d delivered, %d redelivered); %d covered by FlushAcks", rep.Delivered, rep.Redelivered, acked)})
	e.loss(Loss{Scenario: "consume", Name: fmt.Sprintf("Consume %d B, %s: order", size, who), Sent: rep.Delivered, Processed: rep.Delivered - rep.OutOfOrder,
		Detail: "deliveries in per-session order (lost: out of order)"})
	f := r.figure(Figure{
		Scenario: "consume", Name: fmt.Sprintf("%d B Consume, %s, %d sessions: acked packets/s", size, who, n),
		Unit: "packets/s", Baseline: "discard handler",
	}, 1)
	e.figure(f)
	if targets {
		e.target("≥ 1,000,000 packets/s and ≥ 0.1 × discard", f.Value >= 1e6 && f.Ratio >= 0.1)
	}
	e.figure(Figure{Scenario: "consume", Name: fmt.Sprintf("%d B Consume, %s: client write → consumer p50 (%d samples)", size, who, rep.Samples), Unit: "ms", Value: ms(time.Duration(rep.P50NS))})
	e.figure(Figure{Scenario: "consume", Name: fmt.Sprintf("%d B Consume, %s: client write → consumer p99", size, who), Unit: "ms", Value: ms(time.Duration(rep.P99NS))})
	return nil
}

package loadgen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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
	if err := e.receiveRounds(ctx, base, be, stepBase, e.opts.Payloads[0]); err != nil {
		return err
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
	return 2 * e.opts.Rounds * (len(e.opts.Payloads) + 2)
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
		e.discardRound(base, n, size, &baseSent),
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

// receiveRounds measures Receive, the unacknowledged tap, for comparison:
// in each round a new gateway (discard handler), a Receive stream of
// every session in the backend process, clients sending as above; then
// the gateway shuts down, which ends the stream after what it buffered.
// The rate is what reached the stream over the time from the first write
// to its last packet. A stream that falls behind is cut off: what it had
// not sent goes to the handler, so that stream plus handler account for
// every packet.
func (e *env) receiveRounds(ctx context.Context, base *target, be *backendChild, stepBase string, size int) error {
	n := e.opts.ConsumeConns
	stepGW := fmt.Sprintf("consume %d B: Receive in the backend process", size)
	var baseSent, basePre, sent, got, handled uint64
	var p50, p99 []float64
	ends := map[string]int{}
	basePre = base.handled.n.load()
	r, err := e.interleave(ctx, stepBase, stepGW,
		e.discardRound(base, n, size, &baseSent),
		func(ctx context.Context, d time.Duration) (float64, error) {
			gw, err := startGateway(ctx, e.cert, server.Discard{}, e.log)
			if err != nil {
				return 0, err
			}
			if _, err := be.run(backendJob{Kind: "receive", ControlAddr: gw.ctlAddr}); err != nil {
				_ = gw.stop()
				return 0, err
			}
			start := time.Now()
			p, err := e.pushInboundConns(ctx, gw.addr, n, size, d)
			serr := gw.stop()
			rep, rerr := be.run(backendJob{Kind: "receive-end"})
			if err = errors.Join(err, serr, rerr); err != nil {
				return 0, fmt.Errorf("receive: %w", err)
			}
			sent, got, handled = sent+p.sent, got+rep.Delivered, handled+gw.handled.n.load()
			ends[rep.Refusal]++
			p50, p99 = append(p50, ms(time.Duration(rep.P50NS))), append(p99, ms(time.Duration(rep.P99NS)))
			if rep.Delivered == 0 {
				return 0, nil
			}
			return float64(rep.Delivered) / time.Duration(rep.LastNS-start.UnixNano()).Seconds(), nil
		})
	if err != nil {
		return err
	}
	var how []string
	for end, k := range ends {
		how = append(how, fmt.Sprintf("%d× %s", k, end))
	}
	slices.Sort(how)
	e.loss(Loss{Scenario: "consume", Name: fmt.Sprintf("discard handler %d B (Receive rounds)", size), Sent: baseSent, Processed: base.handled.n.load() - basePre, Detail: "counted by the handler"})
	e.loss(Loss{Scenario: "consume", Name: fmt.Sprintf("Receive %d B", size), Sent: sent, Processed: got + handled,
		Detail: fmt.Sprintf("%d reached the Receive stream, %d the handler; streams ended: %s", got, handled, strings.Join(how, ", "))})
	e.figure(r.figure(Figure{
		Scenario: "consume", Name: fmt.Sprintf("%d B Receive (unacknowledged tap), %d sessions: packets/s reaching the stream", size, n),
		Unit: "packets/s", Baseline: "discard handler",
	}, 1))
	e.figure(Figure{Scenario: "consume", Name: fmt.Sprintf("%d B Receive: client write → stream p50 (median of rounds)", size), Unit: "ms", Value: median(p50)})
	e.figure(Figure{Scenario: "consume", Name: fmt.Sprintf("%d B Receive: client write → stream p99 (median of rounds)", size), Unit: "ms", Value: median(p99)})
	return nil
}

// discardRound is the consume scenario's baseline: n new sessions of base
// (a discard handler, no consumer) push for a round; what the handler
// processed over the time to the last FlushAck. It adds what they sent to
// *sent.
func (e *env) discardRound(base *target, n, size int, sent *uint64) measure {
	return func(ctx context.Context, d time.Duration) (float64, error) {
		before := base.handled.n.load()
		p, err := e.pushInboundConns(ctx, base.addr, n, size, d)
		if err != nil {
			return 0, fmt.Errorf("discard handler: %w", err)
		}
		*sent += p.sent
		return float64(base.handled.n.load()-before) / p.elapsed.Seconds(), nil
	}
}

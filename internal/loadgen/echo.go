package loadgen

import (
	"context"
	"fmt"
	"time"

	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// echo: one connection sends one Data packet, waits for it to come back,
// and repeats for Duration; p50 and p99 of the round trip, against the raw
// loop echoing the same frames.
func (e *env) echo(ctx context.Context) error {
	size := e.opts.Payloads[0]
	e.prog.step(fmt.Sprintf("echo %d B: raw TLS", size))
	rs, err := startRaw(ctx, e.srvTLS, rawEcho, 0, 0, e.log)
	if err != nil {
		return err
	}
	base, n, err := e.roundTrips(ctx, rs.addr(), 0, false, size)
	rs.close()
	if err != nil {
		return fmt.Errorf("raw: %w", err)
	}
	e.loss(Loss{Scenario: "echo", Name: "raw TLS", Sent: n, Processed: rs.count.load(), Detail: "counted by the raw server"})
	e.prog.stepDone()

	e.prog.step(fmt.Sprintf("echo %d B: gateway", size))
	gw, err := e.gatewayFor(ctx, server.Echo{})
	if err != nil {
		return err
	}
	got, n, err := e.roundTrips(ctx, gw.addr, nextRun(), true, size)
	if serr := gw.stop(); err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	e.loss(Loss{Scenario: "echo", Name: "gateway", Sent: n, Processed: uint64(got.n), Detail: "echoes received"})
	e.prog.stepDone()
	e.figure(Figure{Scenario: "echo", Name: fmt.Sprintf("%d B round trip p50", size), Unit: "ms", Value: ms(got.p50), Baseline: "raw TLS echo", BaselineValue: ms(base.p50)})
	e.figure(Figure{Scenario: "echo", Name: fmt.Sprintf("%d B round trip p99", size), Unit: "ms", Value: ms(got.p99), Baseline: "raw TLS echo", BaselineValue: ms(base.p99)})
	e.figure(Figure{Scenario: "echo", Name: fmt.Sprintf("%d B round trips/s (1 connection)", size), Unit: "round trips/s", Value: float64(got.n) / e.opts.Duration.Seconds(), Baseline: "raw TLS echo", BaselineValue: float64(base.n) / e.opts.Duration.Seconds()})
	return nil
}

// roundTrips times sequential round trips on one connection; it returns
// the latencies (n is how many echoes came back) and how many were sent.
func (e *env) roundTrips(ctx context.Context, addr string, run int, gatewayPeer bool, size int) (latencies, uint64, error) {
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var k []byte
	if gatewayPeer {
		k = key(run, 0)
	}
	p, err := dialPeer(dctx, addr, e.cliTLS, k, bufSize, bufSize)
	if err != nil {
		return latencies{}, 0, err
	}
	payload := make([]byte, size)
	samples := make([]time.Duration, 0, 1<<16)
	var sent uint64
	deadline := time.Now().Add(e.opts.Duration)
	_ = p.tc.SetReadDeadline(deadline.Add(30 * time.Second))
	for time.Now().Before(deadline) && ctx.Err() == nil {
		t := time.Now()
		if err := p.send(wire.TypeData, wire.JSON, payload); err != nil {
			_ = p.tc.Close()
			return latencies{}, sent, err
		}
		sent++
		for {
			f, err := p.fr.ReadFrameBorrowed()
			typ := f.Type
			if err != nil {
				_ = p.tc.Close()
				return latencies{}, sent, err
			}
			if typ == wire.TypeData {
				break
			}
		}
		samples = append(samples, time.Since(t))
	}
	_ = p.tc.SetReadDeadline(time.Time{})
	c := startClient(p, false)
	if r := c.close(dctx); gatewayPeer && !r.clean() {
		return latencies{}, sent, fmt.Errorf("close not clean: %v", r.err)
	}
	return summarize(samples), sent, nil
}

package loadgen

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// inbound: Conns connections each send Data packets as fast as they can
// for a round, through 64 KiB writes of pre-encoded frames, then a Flush
// barrier. The rate is what the handler processed (discard) over the time
// until the last FlushAck, against the raw loop's sink, in interleaved
// rounds.
func (e *env) inbound(ctx context.Context) error {
	for _, size := range e.opts.Payloads {
		stepBase, stepGW := fmt.Sprintf("inbound %d B: raw TLS", size), fmt.Sprintf("inbound %d B: gateway", size)
		label(stepBase)
		rs, err := startRaw(ctx, e.srvTLS, rawSink, 0, 0, e.log)
		if err != nil {
			return err
		}
		label(stepGW)
		gw, err := e.gatewayFor(ctx, server.Discard{})
		if err != nil {
			rs.close()
			return err
		}
		var baseSent, gwSent, gwAcked uint64
		r, err := e.interleave(ctx, stepBase, stepGW,
			func(ctx context.Context, d time.Duration) (float64, error) {
				before := rs.count.load()
				p, err := e.pushInbound(ctx, rs.addr(), e.opts.Conns, 0, false, size, d)
				if err != nil {
					return 0, fmt.Errorf("raw: %w", err)
				}
				baseSent += p.sent
				return float64(rs.count.load()-before) / p.elapsed.Seconds(), nil
			},
			func(ctx context.Context, d time.Duration) (float64, error) {
				var before uint64
				if gw.inProcess() {
					before = gw.handled.n.load()
				}
				p, err := e.pushInbound(ctx, gw.addr, e.opts.Conns, nextRun(), true, size, d)
				if err != nil {
					return 0, fmt.Errorf("gateway: %w", err)
				}
				gwSent, gwAcked = gwSent+p.sent, gwAcked+p.acked
				processed := p.acked
				if gw.inProcess() {
					processed = gw.handled.n.load() - before
				}
				return float64(processed) / p.elapsed.Seconds(), nil
			})
		rs.close()
		if serr := gw.stop(); err == nil {
			err = serr
		}
		if err != nil {
			return err
		}
		e.loss(Loss{Scenario: "inbound", Name: fmt.Sprintf("raw TLS %d B", size), Sent: baseSent, Processed: rs.count.load(), Detail: "counted by the raw server"})
		processed, detail := gwAcked, "proved by each connection's Flush barrier and a clean Goodbye exchange"
		if gw.inProcess() {
			processed, detail = gw.handled.n.load(), "counted by the handler"
		}
		e.loss(Loss{Scenario: "inbound", Name: fmt.Sprintf("gateway %d B", size), Sent: gwSent, Processed: processed, Detail: detail})

		f := r.figure(Figure{Scenario: "inbound", Name: fmt.Sprintf("%d B packets/s", size), Unit: "packets/s", Baseline: "raw TLS loop"}, 1)
		e.figure(f)
		switch size {
		case 64:
			e.target("≥ 0.5 × raw", f.Ratio >= 0.5)
		case 1024:
			e.target("≥ 0.7 × raw", f.Ratio >= 0.7)
		}
		e.figure(r.figure(Figure{Scenario: "inbound", Name: fmt.Sprintf("%d B MB/s (payload)", size), Unit: "MB/s", Baseline: "raw TLS loop"}, float64(size)/1e6))
	}
	return nil
}

// pushed is what pushInbound did.
type pushed struct {
	sent    uint64        // Data frames written
	acked   uint64        // of them, covered by a FlushAck and a clean close
	elapsed time.Duration // from the start to the last FlushAck
}

// pushInboundConns pushes from n new sessions of a gateway.
func (e *env) pushInboundConns(ctx context.Context, addr string, n, size int, d time.Duration) (pushed, error) {
	return e.pushInbound(ctx, addr, n, nextRun(), true, size, d)
}

// pushInbound runs one round of n connections sending Data for d, each
// then a Flush barrier, and closes them.
func (e *env) pushInbound(ctx context.Context, addr string, n, run int, gatewayPeers bool, size int, d time.Duration) (pushed, error) {
	cs, err := e.dialClients(ctx, addr, n, run, gatewayPeers, false)
	if err != nil {
		return pushed{}, err
	}
	frame := wire.AppendFrame(nil, wire.TypeData, wire.JSON, make([]byte, size))
	perChunk := max(1, bufSize/len(frame))
	chunk := make([]byte, 0, perChunk*len(frame))
	for range perChunk {
		chunk = append(chunk, frame...)
	}
	payloadAt := len(frame) - size // of the chunk's first frame, stamped
	wctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	start := time.Now()
	deadline := start.Add(d)
	sent := make([]uint64, len(cs))
	ends := make([]time.Time, len(cs))
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			chunk := slices.Clone(chunk)
			for {
				stamp(chunk[payloadAt:]) // for the consume scenario's latency
				c.wmu.Lock()
				_, err := c.tc.Write(chunk) // the batched writer: one Write per 64 KiB
				c.wmu.Unlock()
				if err != nil {
					errs[i] = err
					return
				}
				sent[i] += uint64(perChunk)
				if time.Now().After(deadline) || wctx.Err() != nil {
					break
				}
			}
			if err := c.sendControl(wire.TypeFlush, wire.FlushPayload{Seq: 1}); err != nil {
				errs[i] = err
				return
			}
			if err := c.waitAck(wctx, 1); err != nil {
				errs[i] = err
				return
			}
			ends[i] = time.Now()
		})
	}
	wg.Wait()
	var res pushed
	var last time.Time
	for i := range cs {
		res.sent += sent[i]
		if ends[i].After(last) {
			last = ends[i]
		}
	}
	res.elapsed = last.Sub(start)
	clean := closeAll(ctx, cs)
	for i, c := range cs {
		if errs[i] == nil && c.res.clean() {
			res.acked += sent[i]
		}
		if errs[i] != nil {
			return res, errs[i]
		}
	}
	if gatewayPeers && clean != len(cs) {
		return res, fmt.Errorf("%d of %d closes were not clean", len(cs)-clean, len(cs))
	}
	return res, nil
}

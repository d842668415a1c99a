package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
	"github.com/tlsgate/tlsgate/server"
	"github.com/tlsgate/tlsgate/wire"
)

// outbound: Data packets pushed through the session queue and written to
// Conns clients, through the Go API (Session.SendAsync, in-process only)
// against the raw loop writing the same frames, and through gRPC SendAsync
// against a bare grpc-go unary echo with as many calls in flight.
func (e *env) outbound(ctx context.Context) error {
	size := e.opts.Payloads[0]
	var basePPS float64
	{
		e.prog.step(fmt.Sprintf("outbound %d B: raw TLS", size))
		rs, err := startRaw(ctx, e.srvTLS, rawSource, size, e.opts.Duration, e.log)
		if err != nil {
			return err
		}
		start := time.Now()
		cs, err := e.dialClients(ctx, rs.addr(), e.opts.Conns, 0, false, true)
		if err != nil {
			rs.close()
			return err
		}
		var claimed uint64
		var last time.Time
		for _, c := range cs {
			seq, err := c.waitFlush(ctx)
			if err != nil {
				rs.close()
				return fmt.Errorf("raw: %w", err)
			}
			claimed += seq
			last = time.Now()
		}
		closeAll(ctx, cs)
		rs.close()
		var got uint64
		for _, c := range cs {
			got += c.data.Load()
		}
		e.loss(Loss{Scenario: "outbound", Name: fmt.Sprintf("raw TLS %d B", size), Sent: claimed, Processed: got, Detail: "counted by the clients"})
		basePPS = float64(got) / last.Sub(start).Seconds()
		e.prog.stepDone()
	}

	e.prog.step(fmt.Sprintf("outbound %d B: gateway Go API", size))
	if e.opts.Addr == "" {
		gw, err := startGateway(ctx, e.cert, server.Discard{}, e.log)
		if err != nil {
			return err
		}
		pps, err := e.outboundGoAPI(ctx, gw, size)
		if serr := gw.stop(); err == nil {
			err = serr
		}
		if err != nil {
			return fmt.Errorf("go API: %w", err)
		}
		e.figure(Figure{Scenario: "outbound", Name: fmt.Sprintf("%d B via session queue (Go API) packets/s", size), Unit: "packets/s", Value: pps, Baseline: "raw TLS loop", BaselineValue: basePPS})
		e.target("≥ 0.5 × raw", pps >= 0.5*basePPS)
	}
	e.prog.stepDone()

	e.prog.step("outbound: bare gRPC echo")
	bare, err := startBareGRPC(ctx, e.log)
	if err != nil {
		return err
	}
	echoRPS, err := e.rpcLoop(ctx, bare.addr, nil)
	bare.stop()
	if err != nil {
		return fmt.Errorf("bare gRPC: %w", err)
	}
	e.prog.stepDone()

	e.prog.step(fmt.Sprintf("outbound %d B: gateway gRPC SendAsync", size))
	defer e.prog.stepDone()
	if e.opts.Addr != "" && e.opts.ControlAddr == "" {
		e.log.Warn("outbound: no --control-addr; SendAsync not measured")
		return nil
	}
	gw, err := e.gatewayFor(ctx, server.Discard{})
	if err != nil {
		return err
	}
	cs, err := e.dialClients(ctx, gw.addr, e.opts.Conns, nextRun(), true, false)
	if err != nil {
		_ = gw.stop()
		return err
	}
	rps, err := e.rpcLoop(ctx, gw.ctlAddr, cs)
	clean := closeAll(ctx, cs)
	if serr := gw.stop(); err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("SendAsync: %w", err)
	}
	if clean != len(cs) {
		return fmt.Errorf("SendAsync: %d of %d closes were not clean", len(cs)-clean, len(cs))
	}
	e.figure(Figure{Scenario: "outbound", Name: fmt.Sprintf("%d B gRPC SendAsync calls/s", size), Unit: "calls/s", Value: rps, Baseline: "bare gRPC unary echo", BaselineValue: echoRPS})
	e.target("≥ 0.8 × bare", rps >= 0.8*echoRPS)
	return nil
}

// outboundGoAPI pushes packets with Session.SendAsync, one producer per
// session, waiting out a full queue with Drain; then Drain with ack proves
// the clients processed everything.
func (e *env) outboundGoAPI(ctx context.Context, gw *gateway, size int) (float64, error) {
	run := nextRun()
	cs, err := e.dialClients(ctx, gw.addr, e.opts.Conns, run, true, false)
	if err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, e.opts.Duration+time.Minute)
	defer cancel()
	payload := make([]byte, size)
	start := time.Now()
	deadline := start.Add(e.opts.Duration)
	sent := make([]uint64, len(cs))
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Go(func() {
			sess, ok := gw.srv.Session(c.id)
			if !ok {
				errs[i] = fmt.Errorf("no session %d", c.id)
				return
			}
			for {
				for range 256 {
					_, err := sess.SendAsync(wire.JSON, payload)
					if errors.Is(err, server.ErrQueueFull) {
						_, err = sess.Drain(wctx, false)
					} else if err == nil {
						sent[i]++
					}
					if err != nil {
						errs[i] = err
						return
					}
				}
				if time.Now().After(deadline) {
					break
				}
			}
			if _, err := sess.Drain(wctx, true); err != nil {
				errs[i] = err
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	clean := closeAll(ctx, cs)
	var total, got uint64
	for i, c := range cs {
		total += sent[i]
		got += c.data.Load()
	}
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	if clean != len(cs) {
		return 0, fmt.Errorf("%d of %d closes were not clean", len(cs)-clean, len(cs))
	}
	e.loss(Loss{Scenario: "outbound", Name: fmt.Sprintf("gateway Go API %d B", size), Sent: total, Processed: got, Detail: "counted by the clients after Drain with ack"})
	return float64(got) / elapsed.Seconds(), nil
}

// rpcLoop runs RPCConcurrency callers for Duration. Without clients it
// calls the bare echo; with clients it calls SendAsync on their sessions
// (round robin), waits out RESOURCE_EXHAUSTED with Drain, and at the end
// drains with ack and checks that the clients received every packet.
func (e *env) rpcLoop(ctx context.Context, addr string, cs []*client) (float64, error) {
	cc, err := dialGRPC(addr)
	if err != nil {
		return 0, err
	}
	defer func() { _ = cc.Close() }()
	api := tlsgatev1.NewControlServiceClient(cc)
	wctx, cancel := context.WithTimeout(ctx, e.opts.Duration+time.Minute)
	defer cancel()
	payload := make([]byte, e.opts.Payloads[0])
	var ok atomic.Uint64
	errs := make([]error, e.opts.RPCConcurrency)
	start := time.Now()
	deadline := start.Add(e.opts.Duration)
	var wg sync.WaitGroup
	for i := range e.opts.RPCConcurrency {
		wg.Go(func() {
			req := &tlsgatev1.SendAsyncRequest{Payload: payload}
			if cs != nil {
				req.SessionId = cs[i%len(cs)].id
			}
			for n := 0; ; n++ {
				if n%16 == 0 && time.Now().After(deadline) {
					return
				}
				var err error
				if cs == nil {
					err = echoCall(wctx, cc, req)
				} else {
					_, err = api.SendAsync(wctx, req)
					if status.Code(err) == codes.ResourceExhausted {
						_, err = api.Drain(wctx, &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_SessionId{SessionId: req.SessionId}})
						if err == nil {
							continue
						}
					}
				}
				if err != nil {
					errs[i] = err
					return
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	if cs != nil {
		if _, err := api.Drain(wctx, &tlsgatev1.DrainRequest{Target: &tlsgatev1.DrainRequest_AllSessions{AllSessions: true}, Ack: true}); err != nil {
			return 0, fmt.Errorf("final drain: %w", err)
		}
		var got uint64
		for _, c := range cs {
			got += c.data.Load()
		}
		e.loss(Loss{Scenario: "outbound", Name: "gateway gRPC SendAsync", Sent: ok.Load(), Processed: got, Detail: "counted by the clients after Drain with ack"})
	}
	return float64(ok.Load()) / elapsed.Seconds(), nil
}
